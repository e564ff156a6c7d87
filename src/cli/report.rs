//! `relvqa eval --variants ... --ood 0,25,50,75,100 --out DIR`: the reliability study.
//!
//! For each variant: its own Selector (trained on its dev answers if the package has none),
//! answers on val (thresholds), on the ID test split and on its OOD counterpart; then every
//! mixture is scored from those two answer sets, so a question is answered once per variant
//! however many mixtures are asked for. Writes `report.json`, `report.md`, the plots and one
//! `predictions/<variant>_ood<p>.jsonl` per variant and mixture.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::scoring::score;
use super::selector::train_and_store;
use super::variants::{parse_list, prepare, Prepared, Variant};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::eval::ood::{id_item, ood_item, EasyVqa};
use crate::eval::predict::{Scored, Selectors};
pub use crate::eval::reliability::{
    apply_selectors, mixed, mixture_result, EstimatorMetrics, MixtureResult, MAXPROB, SELECTOR,
    SELECTOR_F16,
};
use crate::eval::shapes::Split;
use crate::model::generate::Vqa;
use crate::model::loader::load_path;
use crate::selector::mlp::Selector;
use crate::selector::store;
use crate::selector::train::SelectorTrainOptions;

/// Sizes and sources of one report run.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub model: PathBuf,
    pub variants: String,
    pub work: PathBuf,
    pub test_n: usize,
    pub val_n: usize,
    pub dev_n: usize,
    pub ood: Vec<u32>,
    pub out: PathBuf,
    pub easy_vqa: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupScore {
    pub n: usize,
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SelectorInfo {
    pub trained_on: String,
    pub dev_n: usize,
    pub val_n: usize,
    pub best_epoch: usize,
    pub val_auc: f64,
    pub val_auc_maxprob: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    pub variant: String,
    pub path: String,
    pub total_bytes: u64,
    pub lm_bytes: Option<u64>,
    /// Weight bytes over the f16 model's.
    pub bytes_ratio: f64,
    pub selector: SelectorInfo,
    pub val_accuracy: f64,
    pub mixtures: Vec<MixtureResult>,
    /// Accuracy on each OOD kind (from the 100% OOD set) and on the ID test set.
    pub by_kind: BTreeMap<String, GroupScore>,
    /// easy-VQA questions whose answer the model can say at all.
    pub easy_vqa_answerable: GroupScore,
}

#[derive(Debug, Clone, Serialize)]
pub struct EasyVqaInfo {
    pub dir: String,
    pub questions: usize,
    pub answerable: usize,
    pub unmapped_question_words: BTreeMap<String, usize>,
    pub unmappable_answers: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub test_n: usize,
    pub val_n: usize,
    pub dev_n: usize,
    pub ood_percents: Vec<u32>,
    pub easy_vqa: EasyVqaInfo,
    pub variants: Vec<VariantReport>,
}

pub fn parse_ood(s: &str) -> Result<Vec<u32>> {
    let v: Vec<u32> = s
        .split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "--ood `{x}`: expected OOD percentages in 0..=100, e.g. 0,25,50,75,100"
                    ))
                })
        })
        .collect::<Result<_>>()?;
    if v.is_empty() {
        return Err(Error::Invalid("--ood lists no percentage".into()));
    }
    Ok(v)
}

fn write_jsonl(path: &Path, rows: &[Scored]) -> Result<()> {
    let io = |e| Error::io(path.display().to_string(), e);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for r in rows {
        let line = serde_json::to_string(r).map_err(|e| Error::Invalid(e.to_string()))?;
        writeln!(f, "{line}").map_err(io)?;
    }
    f.flush().map_err(io)
}

fn group_scores(rows: &[Scored], key: impl Fn(&Scored) -> String) -> BTreeMap<String, GroupScore> {
    let mut m: BTreeMap<String, GroupScore> = BTreeMap::new();
    for r in rows {
        let g = m.entry(key(r)).or_default();
        g.n += 1;
        g.accuracy += r.acc;
    }
    for g in m.values_mut() {
        g.accuracy /= g.n.max(1) as f64;
    }
    m
}

/// The Selector stored with `p`, trained first if there is none; with the val answers when
/// training produced them.
fn own_selector<B: Backend>(
    p: &Prepared,
    vqa: &Vqa<B>,
    o: &ReportOptions,
) -> Result<(Selector, Option<Vec<Scored>>)>
where
    Vqa<B>: Sync,
{
    // An existing Selector is used as it is: the report chooses its own thresholds on this
    // run's val answers, so only a missing Selector is trained (and stored with the model).
    if let Some(s) = store::load(&p.path)? {
        s.check_model(vqa.model.cfg.text_config.hidden_size)?;
        return Ok((s, None));
    }
    let (s, val) = train_and_store(
        vqa,
        &p.path,
        &p.variant.name(),
        o.dev_n,
        o.val_n,
        &SelectorTrainOptions::default(),
    )?;
    Ok((s, Some(val)))
}

/// Scored answers of one variant, kept under `out/cache/` so a rerun with the same model,
/// Selectors and sizes (say, after changing a plot) does not answer everything again.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Cached {
    key: String,
    val: Vec<Scored>,
    id: Vec<Scored>,
    ood: Vec<Scored>,
}

fn sha_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// Everything the cached answers depend on: weights, both Selectors, sizes, this build.
fn cache_key(
    p: &Prepared,
    own: &Selector,
    f16: Option<&Selector>,
    o: &ReportOptions,
) -> Result<String> {
    let weights = [
        crate::package::MANIFEST_FILE,
        crate::model::loader::WEIGHTS_FILE,
    ]
    .iter()
    .map(|f| p.path.join(f))
    .find(|f| f.is_file())
    .ok_or_else(|| Error::Model {
        path: p.path.display().to_string(),
        msg: "no manifest.json or model.safetensors".into(),
    })?;
    let w = std::fs::read(&weights).map_err(|e| Error::io(weights.display().to_string(), e))?;
    let f16 = f16.map(store::to_bytes).transpose()?.unwrap_or_default();
    Ok(format!(
        "{}|{}|{}|{}|{}|{}|{}",
        env!("CARGO_PKG_VERSION"),
        sha_hex(&w),
        sha_hex(&store::to_bytes(own)?),
        sha_hex(&f16),
        o.val_n,
        o.test_n,
        o.easy_vqa.display()
    ))
}

fn read_cache(path: &Path, key: &str) -> Option<Cached> {
    let c: Cached = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (c.key == key).then_some(c)
}

fn write_cache(path: &Path, c: &Cached) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    }
    let bytes = serde_json::to_vec(c).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path.display().to_string(), e))
}

pub fn run<B: Backend>(backend: &B, o: &ReportOptions) -> Result<Report>
where
    Vqa<B>: Sync,
{
    let easy = EasyVqa::load(&o.easy_vqa)?;
    let prepared = prepare(&o.model, &parse_list(&o.variants)?, &o.work)?;
    let f16_bytes = super::variants::prepare(&o.model, &[Variant::F16], &o.work)?
        .first()
        .map_or(1, |p| p.total_bytes.max(1));
    std::fs::create_dir_all(o.out.join("predictions"))
        .map_err(|e| Error::io(o.out.display().to_string(), e))?;

    // The f16 Selector is needed by every variant (robustness mode), so it comes first.
    let f16_vqa = load_path(backend.clone(), &o.model)?;
    let f16_prepared = Prepared {
        variant: Variant::F16,
        path: o.model.clone(),
        total_bytes: f16_bytes,
        lm_bytes: None,
    };
    let (f16_sel, _) = own_selector(&f16_prepared, &f16_vqa, o)?;
    drop(f16_vqa);

    let mut variants = Vec::new();
    for p in &prepared {
        let name = p.variant.name();
        eprintln!("== {name}");
        let vqa = load_path(backend.clone(), &p.path)?;
        let (own, val) = own_selector(p, &vqa, o)?;
        let sel = Selectors {
            own: Some(&own),
            f16: (p.variant != Variant::F16).then_some(&f16_sel),
        };
        let key = cache_key(p, &own, sel.f16, o)?;
        let cache = o.out.join("cache").join(format!("{name}.json"));
        let (val, id, ood) = match read_cache(&cache, &key) {
            Some(c) => {
                eprintln!("{name}: answers from {}", cache.display());
                (c.val, c.id, c.ood)
            }
            None => {
                let none = Selectors::default();
                let mut val = match val {
                    Some(v) => v,
                    None => score(
                        &vqa,
                        o.val_n,
                        |i| Ok(id_item(Split::Val, i as u64)),
                        none,
                        "val",
                    )?,
                };
                let mut id = score(
                    &vqa,
                    o.test_n,
                    |i| Ok(id_item(Split::Test, i as u64)),
                    none,
                    "test ID",
                )?;
                let mut ood = score(
                    &vqa,
                    o.test_n,
                    |i| ood_item(Split::Test, i as u64, &easy),
                    none,
                    "test OOD",
                )?;
                for s in [&mut val, &mut id, &mut ood] {
                    apply_selectors(s, sel)?;
                }
                let c = Cached { key, val, id, ood };
                write_cache(&cache, &c)?;
                (c.val, c.id, c.ood)
            }
        };

        // Val answers too: the Phi thresholds are chosen on them, and a reader recomputing
        // the report needs them.
        write_jsonl(&o.out.join(format!("predictions/{name}_val.jsonl")), &val)?;
        let mut mixtures = Vec::new();
        for &pct in &o.ood {
            let (rows, n_ood) = mixed(&id, &ood, pct)?;
            let file = format!("predictions/{name}_ood{pct}.jsonl");
            write_jsonl(&o.out.join(&file), &rows)?;
            let mut m = mixture_result(&val, &rows, pct, n_ood)?;
            m.predictions = file;
            mixtures.push(m);
        }
        let mut by_kind = group_scores(&ood, |r| r.ood.clone());
        by_kind.extend(group_scores(&id, |r| r.ood.clone()));
        let answerable: Vec<Scored> = ood
            .iter()
            .filter(|r| r.ood == "easy_vqa" && r.answerable)
            .cloned()
            .collect();
        let easy_vqa_answerable = group_scores(&answerable, |_| String::new())
            .remove("")
            .unwrap_or_default();
        variants.push(VariantReport {
            variant: name,
            path: p.path.display().to_string(),
            total_bytes: p.total_bytes,
            lm_bytes: p.lm_bytes,
            bytes_ratio: p.total_bytes as f64 / f16_bytes as f64,
            selector: SelectorInfo {
                trained_on: own.meta.trained_on.clone(),
                dev_n: own.meta.dev_n,
                val_n: own.meta.val_n,
                best_epoch: own.meta.best_epoch,
                val_auc: own.meta.val_auc,
                val_auc_maxprob: own.meta.val_auc_maxprob,
            },
            val_accuracy: val.iter().map(|r| r.acc).sum::<f64>() / val.len().max(1) as f64,
            mixtures,
            by_kind,
            easy_vqa_answerable,
        });
    }
    let report = Report {
        model: o.model.display().to_string(),
        test_n: o.test_n,
        val_n: o.val_n,
        dev_n: o.dev_n,
        ood_percents: o.ood.clone(),
        easy_vqa: EasyVqaInfo {
            dir: o.easy_vqa.display().to_string(),
            questions: easy.len(),
            answerable: easy.len() - easy.unanswerable(),
            unmapped_question_words: easy.unmapped_question_words.clone(),
            unmappable_answers: easy.unmappable_answers.clone(),
        },
        variants,
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Invalid(e.to_string()))?;
    let p = o.out.join("report.json");
    std::fs::write(&p, json).map_err(|e| Error::io(p.display().to_string(), e))?;
    let md = super::report_md::render(&report);
    let p = o.out.join("report.md");
    std::fs::write(&p, md).map_err(|e| Error::io(p.display().to_string(), e))?;
    super::report_plots::write_all(&report, &o.out)?;
    println!("wrote {}", o.out.display());
    Ok(report)
}
