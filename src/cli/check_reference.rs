//! `relvqa check-reference`: our model against a golden file written by transformers
//! (`tools/golden/`). Exit code 0 only when the prompt's logits agree within the tolerance and
//! the greedy ids are equal, so CI and users can gate on it.

use std::path::PathBuf;

use super::{with_backend, BackendArg};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::arch::Architecture;
use crate::model::golden::{check_reference, Golden, ReferenceReport, DEFAULT_TOLERANCE};
use crate::model::qwen2vl::golden::QwenGolden;
use crate::model::qwen2vl::loader::Qwen2VlModel;

#[derive(clap::Args, Debug)]
pub struct CheckReferenceArgs {
    /// Model directory (config.json, tokenizer.json, model.safetensors), e.g. a fixture
    /// written by tools/golden/make_idefics3.py or make_qwen2vl.py, or a Qwen2-VL package; the
    /// architecture is read from config.json's `model_type` (a package's manifest carries it).
    #[arg(long)]
    model: PathBuf,
    /// golden.safetensors: input_ids, pixel_values, logits, generated, and
    /// pixel_attention_mask (Idefics3) or image_grid_thw (Qwen2-VL).
    #[arg(long)]
    golden: PathBuf,
    #[command(flatten)]
    backend: BackendArg,
    /// Rebuild the inputs from the golden's raw image and prompt (its metadata) with our image
    /// processor (`preprocessor_config.json` in the model directory) and prompt builder; they
    /// must equal the golden's, and the model then runs on ours.
    #[arg(long)]
    raw: bool,
    /// Largest accepted |Δlogit| (the weights are f32 on both sides).
    #[arg(long, default_value_t = DEFAULT_TOLERANCE)]
    tolerance: f32,
}

pub fn run(a: CheckReferenceArgs) -> Result<()> {
    if !(a.tolerance.is_finite() && a.tolerance >= 0.0) {
        return Err(Error::Invalid(format!(
            "--tolerance {} must be a non-negative number",
            a.tolerance
        )));
    }
    with_backend!(a.backend.backend, |b| run_on(b, &a))
}

fn run_on<B: Backend>(backend: B, a: &CheckReferenceArgs) -> Result<()> {
    match crate::model::loader::architecture_of(&a.model)? {
        Architecture::Idefics3 => run_idefics3(backend, a),
        Architecture::Qwen2Vl => run_qwen2vl(backend, a),
    }
}

fn run_idefics3<B: Backend>(backend: B, a: &CheckReferenceArgs) -> Result<()> {
    let vqa = crate::model::loader::load_dir(backend, &a.model)?;
    let file = a.golden.display().to_string();
    let bytes = std::fs::read(&a.golden).map_err(|e| Error::io(file.clone(), e))?;
    let mut golden = Golden::from_bytes(&file, &bytes, &vqa.model.cfg)?;
    if a.raw {
        rebuild_inputs(&vqa, a, &mut golden)?;
    }
    let r = pollster::block_on(check_reference(&vqa, &golden, a.tolerance))?;

    println!("model:  {} ({})", a.model.display(), vqa.backend.name());
    let meta: Vec<String> = golden
        .metadata
        .iter()
        .map(|(k, v)| format!("{k}={}", v.escape_debug()))
        .collect();
    println!("golden: {file} ({})", meta.join(", "));
    let mut padding = String::new();
    if let Some(m) = &golden.patch_mask {
        padding += &format!(", {} with padded patches", m.padded_images());
    }
    if golden.dropped_images > 0 {
        padding += &format!(
            ", {} all-zero padding image(s) dropped",
            golden.dropped_images
        );
    }
    println!(
        "prompt: {} tokens, {} image(s){padding}",
        golden.input_ids.len(),
        golden.pixel_values.shape[0]
    );
    report(&r)
}

/// Print the comparison; an error (non-zero exit) unless it passed.
fn report(r: &ReferenceReport) -> Result<()> {
    println!(
        "logits {:?}: max |Δ| = {:.3e} at position {}, token {} (tolerance {:.0e}): {}",
        r.logits_shape,
        r.max_abs_diff,
        r.max_at.0,
        r.max_at.1,
        r.tolerance,
        if r.logits_ok() { "ok" } else { "TOO LARGE" }
    );
    println!(
        "greedy ids ({} steps): ours {:?}, reference {:?}: {}",
        r.generated_reference.len(),
        r.generated_ours,
        r.generated_reference,
        if r.ids_equal() { "equal" } else { "DIFFER" }
    );
    if r.passed() {
        println!("PASS");
        return Ok(());
    }
    let mut why = Vec::new();
    if !r.logits_ok() {
        why.push(format!(
            "max |Δlogit| {:.3e} exceeds {:.0e}",
            r.max_abs_diff, r.tolerance
        ));
    }
    if let Some(step) = r
        .generated_ours
        .iter()
        .zip(&r.generated_reference)
        .position(|(o, g)| o != g)
    {
        why.push(format!("greedy ids differ from step {step}"));
    }
    println!("FAIL");
    Err(Error::Invalid(format!(
        "reference check failed: {}",
        why.join("; ")
    )))
}

/// Replace the golden's `input_ids` and `pixel_values` by ours, built from its raw image and
/// question; fail unless they are equal (ids) and within float rounding (pixels).
fn rebuild_inputs<B: Backend>(
    vqa: &crate::model::generate::Vqa<B>,
    a: &CheckReferenceArgs,
    golden: &mut Golden,
) -> Result<()> {
    use crate::model::idefics3::processor::{preprocess, ProcessorOptions};
    if golden.patch_mask.is_some() || golden.dropped_images > 0 {
        // Idefics3's processor squares or tiles every image to `max_image_size`, so it pads
        // only across a batch; such a golden was padded by hand (tools/golden/ `--padded`).
        return Err(Error::Invalid(
            "--raw rebuilds inputs with the image processor, which never pads one prompt's images; this golden has padded or all-zero images, so check it without --raw".into(),
        ));
    }
    let pp_path = a.model.join(crate::model::loader::PREPROCESSOR_FILE);
    let pp = std::fs::read_to_string(&pp_path)
        .map_err(|e| Error::io(pp_path.display().to_string(), e))?;
    let mut opts = ProcessorOptions::from_preprocessor_json(&pp)?;
    if let Some(split) = golden.meta("do_image_splitting") {
        opts.split = split == "true";
    }
    let image_name = golden.meta("image").unwrap_or("image.png").to_string();
    let image_path = a
        .golden
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(&image_name);
    let image_bytes =
        std::fs::read(&image_path).map_err(|e| Error::io(image_path.display().to_string(), e))?;
    let img = crate::model::image::decode_image(&image_bytes)?;
    let processed = preprocess(&img, &opts)?;
    let cfg = &vqa.model.cfg;
    let question = golden.question()?.to_string();
    let prompt = crate::model::prompt::build_prompt_tiled(
        &vqa.tokenizer,
        cfg.image_seq_len(),
        (processed.rows, processed.cols),
        &question,
        cfg.text_config.max_position_embeddings,
    )?;
    let ids_equal = prompt.ids == golden.input_ids;
    let same_shape = processed.pixels.shape == golden.pixel_values.shape;
    let max_px = if same_shape {
        processed
            .pixels
            .data
            .iter()
            .zip(&golden.pixel_values.data)
            .map(|(o, r)| (o - r).abs())
            .fold(0f32, f32::max)
    } else {
        f32::INFINITY
    };
    println!(
        "raw inputs: {image_name} ({}x{}) -> {} image(s) ({}x{} tiles + global; 0x0: unsplit); prompt ids {}; pixels {:?} max |Δ| = {max_px:.3e}",
        img.width(),
        img.height(),
        processed.pixels.shape[0],
        processed.rows,
        processed.cols,
        if ids_equal { "equal" } else { "DIFFER" },
        processed.pixels.shape,
    );
    // One 8-bit level is 2/255 after normalisation; anything above float rounding is a bug.
    if !ids_equal || max_px > 1e-5 {
        return Err(Error::Invalid(format!(
            "reference check failed: our inputs from {image_name} and the prompt differ from the golden's (ids {}, pixels max |Δ| {max_px:.3e})",
            if ids_equal { "equal" } else { "differ" }
        )));
    }
    golden.input_ids = prompt.ids;
    golden.pixel_values = processed.pixels;
    Ok(())
}

fn run_qwen2vl<B: Backend>(backend: B, a: &CheckReferenceArgs) -> Result<()> {
    // A Qwen2-VL package too: its quantized logits against the float reference (pass a
    // --tolerance that fits the bit width).
    let m = crate::model::qwen2vl::loader::load_path(backend, &a.model, None)?;
    let file = a.golden.display().to_string();
    let bytes = std::fs::read(&a.golden).map_err(|e| Error::io(file.clone(), e))?;
    let mut golden = QwenGolden::from_bytes(&file, &bytes, &m)?;
    if a.raw {
        rebuild_qwen2vl_inputs(&m, a, &mut golden)?;
    }
    let r = pollster::block_on(crate::model::qwen2vl::golden::check_reference(
        &m,
        &golden,
        a.tolerance,
    ))?;
    println!(
        "model:  {} (qwen2_vl, {})",
        a.model.display(),
        m.backend.name()
    );
    let meta: Vec<String> = golden
        .metadata
        .iter()
        .map(|(k, v)| format!("{k}={}", v.escape_debug()))
        .collect();
    println!("golden: {file} ({})", meta.join(", "));
    println!(
        "prompt: {} tokens, {} image(s), grids (t, h, w) {:?}",
        golden.input_ids.len(),
        golden.grids.len(),
        golden.grids
    );
    report(&r)
}

/// Qwen2-VL's `--raw`: ids, pixels and grids from the golden's image and question with our
/// processor and prompt builder; they must equal the golden's (pixels within float rounding).
fn rebuild_qwen2vl_inputs<B: Backend>(
    m: &Qwen2VlModel<B>,
    a: &CheckReferenceArgs,
    golden: &mut QwenGolden,
) -> Result<()> {
    let question = golden
        .meta("question")
        .ok_or_else(|| Error::Golden {
            file: a.golden.display().to_string(),
            msg: "has no `question` in its metadata, so there are no raw inputs to rebuild".into(),
        })?
        .to_string();
    let image_name = golden.meta("image").unwrap_or("image.png").to_string();
    let image_path = a
        .golden
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(&image_name);
    let image_bytes =
        std::fs::read(&image_path).map_err(|e| Error::io(image_path.display().to_string(), e))?;
    let img = crate::model::image::decode_image(&image_bytes)?;
    let ours = m.inputs(&img, &question)?;
    let ids_equal = ours.ids == golden.input_ids;
    let grids_equal = ours.grids == golden.grids;
    let max_px = if ours.pixels.shape == golden.pixel_values.shape {
        ours.pixels
            .data
            .iter()
            .zip(&golden.pixel_values.data)
            .map(|(o, r)| (o - r).abs())
            .fold(0f32, f32::max)
    } else {
        f32::INFINITY
    };
    println!(
        "raw inputs: {image_name} ({}x{}) -> grids {:?}; prompt ids {}; pixels {:?} max |Δ| = {max_px:.3e}",
        img.width(),
        img.height(),
        ours.grids,
        if ids_equal { "equal" } else { "DIFFER" },
        ours.pixels.shape,
    );
    if !ids_equal || !grids_equal || max_px > 1e-5 {
        return Err(Error::Invalid(format!(
            "reference check failed: our inputs from {image_name} and the question differ from the golden's (ids {}, grids {}, pixels max |Δ| {max_px:.3e})",
            if ids_equal { "equal" } else { "differ" },
            if grids_equal { "equal" } else { "differ" },
        )));
    }
    golden.input_ids = ours.ids;
    golden.pixel_values = ours.pixels;
    golden.grids = ours.grids;
    Ok(())
}
