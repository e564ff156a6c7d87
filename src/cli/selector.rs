//! `relvqa selector train`: learn a Selector for one model (or quantized package) from its own
//! answers on `dev`, choose its thresholds on `val`, and store it with the model.

use std::path::Path;

use super::scoring::score;
use super::ModelArg;
use crate::error::{Error, Result};
use crate::eval::ood::id_item;
use crate::eval::predict::{Scored, Selectors};
use crate::eval::shapes::Split;
use crate::model::generate::Vqa;
use crate::package::write_model_file;
use crate::selector::features::FeatureLayout;
use crate::selector::mlp::Selector;
use crate::selector::store;
use crate::selector::threshold::{Calibration, CALIBRATION_FILE};
use crate::selector::train::{train_selector, Example, SelectorTrainOptions};

#[derive(clap::Args, Debug)]
pub struct SelectorArgs {
    #[command(subcommand)]
    cmd: SelectorCmd,
}

#[derive(clap::Subcommand, Debug)]
enum SelectorCmd {
    /// Train the Selector of a model on its dev answers; writes selector.safetensors (and the
    /// MaxProb calibration.json) into the model directory or package.
    Train(TrainArgs),
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Dev questions to train on.
    #[arg(long, default_value_t = 4000)]
    dev: usize,
    /// Val questions for early stopping and thresholds.
    #[arg(long, default_value_t = 2000)]
    val: usize,
    #[arg(long, default_value_t = 150)]
    max_epochs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Hidden layer widths, comma-separated.
    #[arg(long, default_value = "128,64", value_delimiter = ',')]
    hidden: Vec<usize>,
    #[arg(long, default_value_t = 0.3)]
    dropout: f32,
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Keep the untrained network (= MaxProb) unless training lowers val AUC by this fraction.
    #[arg(long, default_value_t = 0.02)]
    min_relative_gain: f64,
}

pub fn run(a: SelectorArgs) -> Result<()> {
    match a.cmd {
        SelectorCmd::Train(t) => {
            let vqa = t.model.load()?;
            let label = t.model.model.display().to_string();
            let o = SelectorTrainOptions {
                max_epochs: t.max_epochs,
                seed: t.seed,
                hidden: t.hidden.clone(),
                dropout: t.dropout,
                weight_decay: t.weight_decay,
                lr: t.lr,
                min_relative_gain: t.min_relative_gain,
                ..Default::default()
            };
            let (sel, _) = train_and_store(&vqa, &t.model.model, &label, t.dev, t.val, &o)?;
            print_selector(&sel);
            Ok(())
        }
    }
}

pub fn examples(scored: &[Scored]) -> Vec<Example> {
    scored
        .iter()
        .map(|s| Example {
            features: s.features.clone(),
            acc: s.acc as f32,
            maxprob: s.maxprob as f32,
        })
        .collect()
}

/// Score dev and val with `vqa`, train its Selector, and store it and the MaxProb calibration
/// in `dir`. Returns the Selector and the val answers (scored by it).
pub fn train_and_store<B: crate::backend::Backend>(
    vqa: &Vqa<B>,
    dir: &Path,
    label: &str,
    dev_n: usize,
    val_n: usize,
    o: &SelectorTrainOptions,
) -> Result<(Selector, Vec<Scored>)>
where
    Vqa<B>: Sync,
{
    if dev_n == 0 || val_n == 0 {
        return Err(Error::Invalid(
            "the Selector needs at least one dev and one val question".into(),
        ));
    }
    let none = Selectors::default();
    let dev = score(
        vqa,
        dev_n,
        |i| Ok(id_item(Split::Dev, i as u64)),
        none,
        "dev answers",
    )?;
    let mut val = score(
        vqa,
        val_n,
        |i| Ok(id_item(Split::Val, i as u64)),
        none,
        "val answers",
    )?;
    let layout = FeatureLayout::new(vqa.model.cfg.text_config.hidden_size);
    let (sel, log) = train_selector(layout, &examples(&dev), &examples(&val), label, o, |_| {})?;
    eprintln!(
        "selector for {label}: val AUC {:.4} at epoch {} of {} (MaxProb {:.4}; best trained \
         epoch {:.4}{})",
        sel.meta.val_auc,
        sel.meta.best_epoch,
        log.len(),
        sel.meta.val_auc_maxprob,
        log.iter().map(|e| e.val_auc).fold(f64::INFINITY, f64::min),
        if sel.meta.best_epoch == 0 {
            ", not enough better: kept the untrained Selector, which ranks as MaxProb"
        } else {
            ""
        }
    );
    for s in val.iter_mut() {
        s.selector = Some(sel.confidence(&s.features)? as f64);
    }
    store::save(dir, &sel)?;
    let conf: Vec<f64> = val.iter().map(|s| s.maxprob).collect();
    let acc: Vec<f64> = val.iter().map(|s| s.acc).collect();
    let cal = Calibration::fit("maxprob", Split::Val.name(), &conf, &acc)?;
    let text = serde_json::to_vec_pretty(&cal).map_err(|e| Error::Invalid(e.to_string()))?;
    write_model_file(dir, CALIBRATION_FILE, &text)?;
    Ok((sel, val))
}

pub fn print_selector(s: &Selector) {
    let m = &s.meta;
    println!(
        "Selector for {}: {} features -> {:?} -> 1; trained on {} dev answers, {} val",
        m.trained_on,
        s.input_dim(),
        m.hidden,
        m.dev_n,
        m.val_n
    );
    println!(
        "  val AUC {:.4} (MaxProb {:.4}), epoch {}",
        m.val_auc, m.val_auc_maxprob, m.best_epoch
    );
    super::calibrate::print_calibration(&m.calibration);
}
