//! `relvqa train`: train the default model, save it, evaluate it and write its model card.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::eval::accuracy::EvalReport;
use crate::eval::shapes::{self, Split};
use crate::model::tokenizer::VqaTokenizer;
use crate::train::{self, save, TrainEvent, TrainOptions};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Output model directory.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = TrainOptions::default().steps)]
    steps: usize,
    #[arg(long, default_value_t = TrainOptions::default().batch)]
    batch: usize,
    #[arg(long, default_value_t = TrainOptions::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = TrainOptions::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = TrainOptions::default().warmup)]
    warmup: usize,
    /// Up to this many question/answer turns per training image.
    #[arg(long, default_value_t = TrainOptions::default().turns)]
    turns: usize,
    /// What the turns after the first ask.
    #[arg(long, value_enum, default_value_t = TrainOptions::default().followups)]
    followups: shapes::Followups,
    /// The vision tower's learning rate as a multiple of --lr (5 was tried: worse at 1000 steps).
    #[arg(long, default_value_t = TrainOptions::default().vision_lr_scale)]
    vision_lr_scale: f64,
    /// The first this many steps train on scenes of one object.
    #[arg(long, default_value_t = TrainOptions::default().curriculum_steps)]
    curriculum_steps: usize,
    /// Weight of the auxiliary loss naming the object under each image token (0: off).
    #[arg(long, default_value_t = TrainOptions::default().aux_weight)]
    aux_weight: f64,
    /// Threads computing gradients of batch slices in parallel (default: all cores).
    #[arg(long, default_value_t = TrainOptions::default().workers)]
    workers: usize,
    /// Validate every this many steps.
    #[arg(long, default_value_t = TrainOptions::default().eval_every)]
    eval_every: usize,
    /// Test questions answered greedily for the model card after training.
    #[arg(long, default_value_t = 2000)]
    test_samples: usize,
}

pub fn run(a: TrainArgs) -> Result<()> {
    if a.steps == 0 || a.batch == 0 {
        return Err(Error::Invalid(
            "--steps and --batch must be positive".into(),
        ));
    }
    let tok = VqaTokenizer::build_word_level(&shapes::vocabulary())?;
    let cfg = train::default_config(&tok);
    let o = TrainOptions {
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        warmup: a.warmup,
        turns: a.turns,
        followups: a.followups,
        vision_lr_scale: a.vision_lr_scale,
        curriculum_steps: a.curriculum_steps,
        aux_weight: a.aux_weight,
        workers: a.workers.max(1),
        eval_every: a.eval_every.max(1),
        ..Default::default()
    };
    let pb = ProgressBar::new(o.steps as u64);
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}")
            .map_err(|e| Error::Invalid(e.to_string()))?,
    );
    let mut last_val = f64::NAN;
    let mut ema = f32::NAN;
    let mut loss_curve: Vec<(usize, f32)> = Vec::new();
    let trained = train::train(tok.clone(), cfg.clone(), &o, |ev| match ev {
        TrainEvent::Step { step, loss, lr } => {
            ema = if ema.is_nan() {
                loss
            } else {
                0.98 * ema + 0.02 * loss
            };
            if (step + 1) % 50 == 0 {
                loss_curve.push((step + 1, ema));
            }
            pb.set_message(format!(
                "loss {ema:.3}  lr {lr:.2e}  val acc {:.1}%",
                last_val * 100.0
            ));
            pb.inc(1);
        }
        TrainEvent::Val { step, accuracy } => {
            last_val = accuracy;
            pb.suspend(|| {
                println!(
                    "step {step}: loss {ema:.4}, val accuracy {:.2}%",
                    accuracy * 100.0
                )
            });
        }
    })?;
    pb.finish();
    save::save_model_dir(&a.out, &cfg, &tok, &trained.vars)?;
    println!(
        "trained in {:.0} s; saved to {}",
        trained.wall_s,
        a.out.display()
    );

    // Evaluate what was saved (f16 weights), not the f32 training copy.
    let vqa = crate::model::loader::load_dir(CpuBackend::new(), &a.out)?;
    let t = Instant::now();
    let report = super::eval::evaluate_with_progress(&vqa, Split::Test, a.test_samples)?;
    let eval_s = t.elapsed().as_secs_f64();
    super::eval::print_report(&report);
    let (cal, _) = super::calibrate::calibrate(&vqa, &a.out, a.test_samples)?;
    super::calibrate::print_calibration(&cal);
    let card = model_card(
        &o,
        &cfg,
        &trained.val_history,
        trained.wall_s,
        &report,
        eval_s,
    );
    let p = a.out.join("MODEL_CARD.md");
    std::fs::write(&p, card).map_err(|e| Error::io(p.display().to_string(), e))?;
    let log = serde_json::json!({
        "steps": o.steps, "batch": o.batch, "lr": o.lr, "warmup": o.warmup, "seed": o.seed, "turns": o.turns,
        "followups": format!("{:?}", o.followups).to_lowercase(), "curriculum_steps": o.curriculum_steps, "vision_lr_scale": o.vision_lr_scale, "aux_weight": o.aux_weight,
        "wall_s": trained.wall_s, "val_history": trained.val_history, "loss_curve": loss_curve,
        "test": {"n": report.n, "accuracy": report.accuracy, "per_family": report.per_family},
    });
    let p = a.out.join("train_log.json");
    let text = serde_json::to_string_pretty(&log).map_err(|e| Error::Invalid(e.to_string()))?;
    std::fs::write(&p, text).map_err(|e| Error::io(p.display().to_string(), e))?;
    Ok(())
}

fn model_card(
    o: &TrainOptions,
    cfg: &crate::model::idefics3::Idefics3Config,
    val: &[(usize, f64)],
    wall_s: f64,
    r: &EvalReport,
    eval_s: f64,
) -> String {
    let mut s = String::new();
    s.push_str("# relvqa default model\n\n");
    s.push_str("An Idefics3-architecture (SmolVLM family) vision-language model trained from scratch by `relvqa train` on the procedural *shapes* VQA dataset (`src/eval/shapes/`).\n\n");
    s.push_str("## Architecture\n\n");
    let v = &cfg.vision_config;
    let t = &cfg.text_config;
    s.push_str(&format!(
        "- vision: SigLIP-style ViT, {}x{} images, patch {}, hidden {}, {} layers, {} heads\n- connector: pixel shuffle x{} -> {} image tokens, linear to {}\n- text: Llama, hidden {}, {} layers, {} heads / {} KV heads, SwiGLU {}, vocab {} (word level), context {}\n\n",
        v.image_size, v.image_size, v.patch_size, v.hidden_size, v.num_hidden_layers, v.num_attention_heads,
        cfg.scale_factor, cfg.image_seq_len(), t.hidden_size,
        t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.kv_heads(), t.intermediate_size, t.vocab_size, t.max_position_embeddings
    ));
    s.push_str("## Training\n\n");
    s.push_str(&format!(
        "- data: `train` split of shapes (1 to 6 objects, each in a cell of a {g}x{g} lattice, up to {j} px off its centre; radii {rs} and {rl} px), sample seeds `(split, index)`, {} steps x batch {} = {} images, each seen once, each a chat of 1 to {} question/answer turns (the first turn is exactly the single-question prompt; the others ask {})\n{}- AdamW lr {:.0e} (weight decay {}), {} warm-up steps then cosine to 5%, gradient clip 1.0, loss on answer tokens only{}, seed {}\n- wall time: {:.0} s ({:.1} min) on this machine ({} CPU threads), `relvqa train --out models/default`\n",
        o.steps, o.batch, o.steps * o.batch, o.turns,
        match o.followups {
            shapes::Followups::Random => "random questions",
            shapes::Followups::Shapes => "the shape of each uniquely coloured object, then random questions",
        },
        if o.curriculum_steps > 0 {
            format!("- curriculum: the first {} steps draw scenes of one object\n", o.curriculum_steps)
        } else {
            String::new()
        },
        o.lr, o.weight_decay, o.warmup,
        if o.aux_weight > 0.0 {
            format!(" plus {} x an auxiliary loss: a linear probe on the connector's output names the kind and colour of the object under each image token (training only, not saved; `src/train/aux.rs`)", o.aux_weight)
        } else {
            String::new()
        },
        o.seed, wall_s, wall_s / 60.0,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        g = shapes::render::GRID,
        j = shapes::render::JITTER,
        rs = shapes::render::Size::Small.radius(),
        rl = shapes::render::Size::Large.radius(),
    ));
    if let Some((st, acc)) = val.last() {
        s.push_str(&format!(
            "- final val accuracy (teacher-forced first token, {} samples): {:.2}% at step {st}\n",
            o.val_samples,
            acc * 100.0
        ));
    }
    s.push_str(&format!(
        "\n## Test accuracy (greedy, f16 weights as shipped, first {} of split `test`, {:.0} s)\n\n| family | n | accuracy |\n|---|---:|---:|\n",
        r.n, eval_s
    ));
    for (f, sc) in &r.per_family {
        s.push_str(&format!(
            "| {f} | {} | {:.2}% |\n",
            sc.n,
            sc.accuracy * 100.0
        ));
    }
    s.push_str(&format!(
        "| **all** | {} | **{:.2}%** |\n\nReproduce: `relvqa eval --split test --limit {}`.\n",
        r.n,
        r.accuracy * 100.0,
        r.n
    ));
    s
}
