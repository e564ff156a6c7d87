//! `relvqa check-reference` on the committed golden fixtures (written by transformers with
//! tools/golden/make_idefics3.py; no torch needed here), on tampered copies that must fail,
//! and on malformed golden files that must fail with a clear message.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::tensor::TensorView;
use safetensors::Dtype;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn check(model: &Path, golden: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .arg("check-reference")
        .arg("--model")
        .arg(model)
        .arg("--golden")
        .arg(golden)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_passes(name: &str, golden: &str) -> String {
    let dir = fixture(name);
    let out = check(&dir, &dir.join(golden));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{name}: {stdout}\n{stderr}");
    assert!(stdout.contains("PASS"), "{stdout}");
    assert!(stdout.contains(": equal"), "{stdout}");
    stdout
}

#[test]
fn committed_single_image_fixture_passes() {
    let out = assert_passes("idefics3-tiny", "golden.safetensors");
    assert!(out.contains("1 image(s)"), "{out}");
}

/// Idefics3Processor's `do_image_splitting`: 2x2 tiles and the global image, five runs of
/// image tokens separated by `<row_r_col_c>` and newline tokens.
#[test]
fn committed_tiled_fixture_passes() {
    let out = assert_passes("idefics3-tiny", "golden-tiled.safetensors");
    assert!(out.contains("5 image(s)"), "{out}");
}

/// `--raw`: the inputs rebuilt from `image.png` and the prompt text by our image processor and
/// prompt builder equal the golden's, and the model run on them passes.
#[test]
fn committed_fixtures_pass_from_raw_image_and_text() {
    for (name, golden, images) in [
        ("idefics3-tiny", "golden.safetensors", "1 image(s)"),
        ("idefics3-tiny", "golden-tiled.safetensors", "5 image(s)"),
        ("idefics3-tiny-bf16", "golden.safetensors", "1 image(s)"),
    ] {
        let dir = fixture(name);
        let out = Command::new(env!("CARGO_BIN_EXE_relvqa"))
            .args(["check-reference", "--raw", "--model"])
            .arg(&dir)
            .arg("--golden")
            .arg(dir.join(golden))
            .output()
            .unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{name}/{golden}: {stdout}\n{stderr}");
        assert!(stdout.contains("prompt ids equal"), "{stdout}");
        assert!(
            stdout.contains(images) && stdout.contains("PASS"),
            "{stdout}"
        );
    }
}

/// Weights stored as bf16 (what real SmolVLM checkpoints ship), decoded to f32 by our loader;
/// transformers computed with the same bf16-rounded values in f32.
#[test]
fn committed_bf16_weights_fixture_passes() {
    let out = assert_passes("idefics3-tiny-bf16", "golden.safetensors");
    assert!(out.contains("weights_dtype=bf16"), "{out}");
}

/// The same fixtures on the GPU backend (lavapipe in CI). Like every GPU test here it fails,
/// never skips, without an adapter.
#[test]
fn committed_fixtures_pass_on_the_gpu() {
    for (name, golden) in [
        ("idefics3-tiny", "golden.safetensors"),
        ("idefics3-tiny", "golden-tiled.safetensors"),
        ("idefics3-tiny", "golden-padded.safetensors"),
        ("idefics3-tiny-bf16", "golden.safetensors"),
    ] {
        let dir = fixture(name);
        let out = Command::new(env!("CARGO_BIN_EXE_relvqa"))
            .args(["check-reference", "--backend", "gpu", "--model"])
            .arg(&dir)
            .arg("--golden")
            .arg(dir.join(golden))
            .output()
            .unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{name}/{golden}: {stdout}\n{stderr}");
        assert!(
            stdout.contains("(wgpu)") && stdout.contains("PASS"),
            "{stdout}"
        );
    }
}

/// The golden tensors as owned (name, dtype, shape, bytes), for rewriting.
type Owned = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn read_golden(name: &str) -> Owned {
    read_golden_file(name, "golden.safetensors")
}

fn read_golden_file(name: &str, file: &str) -> Owned {
    let bytes = fs::read(fixture(name).join(file)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                v.dtype(),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect()
}

/// Write `tensors` as a golden file in a fresh temp dir; returns (dir guard, file path).
fn write_golden(tensors: &Owned) -> (tempfile::TempDir, PathBuf) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("golden.safetensors");
    fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
    (dir, p)
}

fn tensor_mut<'a>(t: &'a mut Owned, name: &str) -> &'a mut (String, Dtype, Vec<usize>, Vec<u8>) {
    t.iter_mut().find(|x| x.0 == name).unwrap()
}

/// Run against a rewritten golden file, expecting failure; returns stdout + stderr.
fn fails_with(tensors: &Owned) -> String {
    let (_d, p) = write_golden(tensors);
    let out = check(&fixture("idefics3-tiny"), &p);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "expected failure:\n{all}");
    assert!(!all.contains("panicked"), "{all}");
    all
}

#[test]
fn unchanged_copy_passes() {
    let t = read_golden("idefics3-tiny");
    let (_d, p) = write_golden(&t);
    let out = check(&fixture("idefics3-tiny"), &p);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn logits_perturbed_by_1e_2_fail() {
    let mut t = read_golden("idefics3-tiny");
    let logits = tensor_mut(&mut t, "logits");
    // One entry near the middle, +1e-2: far above the 1e-4 tolerance, far below changing ids.
    let i = (logits.3.len() / 4 / 2) * 4;
    let v = f32::from_le_bytes(logits.3[i..i + 4].try_into().unwrap()) + 1e-2;
    logits.3[i..i + 4].copy_from_slice(&v.to_le_bytes());
    let msg = fails_with(&t);
    assert!(msg.contains("TOO LARGE"), "{msg}");
    assert!(msg.contains("exceeds 1e-4"), "{msg}");
}

#[test]
fn different_greedy_ids_fail() {
    let mut t = read_golden("idefics3-tiny");
    let generated = tensor_mut(&mut t, "generated");
    let n = generated.3.len();
    let last = i64::from_le_bytes(generated.3[n - 8..].try_into().unwrap());
    generated.3[n - 8..].copy_from_slice(&((last + 1) % 100).to_le_bytes());
    let msg = fails_with(&t);
    assert!(msg.contains("DIFFER"), "{msg}");
    assert!(msg.contains("greedy ids differ from step 7"), "{msg}");
}

#[test]
fn missing_logits_is_named() {
    let mut t = read_golden("idefics3-tiny");
    t.retain(|x| x.0 != "logits");
    let msg = fails_with(&t);
    assert!(msg.contains("has no tensor `logits`"), "{msg}");
}

#[test]
fn wrong_shapes_are_named() {
    let mut t = read_golden("idefics3-tiny");
    let ids = tensor_mut(&mut t, "input_ids");
    let s = ids.2[1];
    ids.2 = vec![s];
    let msg = fails_with(&t);
    assert!(msg.contains("`input_ids` has shape"), "{msg}");

    let mut t = read_golden("idefics3-tiny");
    let logits = tensor_mut(&mut t, "logits");
    let (s, v) = (logits.2[1], logits.2[2]);
    logits.2 = vec![1, s - 1, v];
    logits.3.truncate((s - 1) * v * 4);
    let msg = fails_with(&t);
    assert!(msg.contains("`logits` has shape"), "{msg}");

    // Images of the wrong size for the vision tower.
    let mut t = read_golden("idefics3-tiny");
    let px = tensor_mut(&mut t, "pixel_values");
    let (h, w) = (px.2[3], px.2[4]);
    px.2[3] = h / 2;
    px.3.truncate(px.3.len() / 2);
    let msg = fails_with(&t);
    assert!(msg.contains("`pixel_values` has shape"), "{msg}");
    assert!(msg.contains(&format!("{w}")), "{msg}");
}

#[test]
fn wrong_dtypes_and_bad_ids_are_refused() {
    let mut t = read_golden("idefics3-tiny");
    let ids = tensor_mut(&mut t, "input_ids");
    ids.3[..8].copy_from_slice(&(1i64 << 40).to_le_bytes());
    let msg = fails_with(&t);
    assert!(msg.contains("outside the vocabulary"), "{msg}");

    let mut t = read_golden("idefics3-tiny");
    let logits = tensor_mut(&mut t, "logits");
    logits.1 = Dtype::I32;
    let msg = fails_with(&t);
    assert!(msg.contains("expected F32"), "{msg}");
}

#[test]
fn more_image_tokens_than_images_is_refused() {
    // The tiled prompt (5 runs of image tokens) with only the single image's pixels.
    let mut t = read_golden_file("idefics3-tiny", "golden-tiled.safetensors");
    let single = read_golden("idefics3-tiny");
    for name in ["pixel_values", "pixel_attention_mask"] {
        let src = single.iter().find(|x| x.0 == name).unwrap().clone();
        *tensor_mut(&mut t, name) = src;
    }
    let msg = fails_with(&t);
    assert!(msg.contains("image tokens but 1 image(s)"), "{msg}");
}

/// Two images padded bottom-right (37x27 and 20x45 real pixels in 48x48, so 5x4 and 3x6 real
/// patches, the last ones partly real) and one all-zero batch-padding image, fed to
/// transformers with their `pixel_attention_mask`: bucketed position ids, padded patches
/// masked as keys, the zero image dropped.
#[test]
fn committed_padded_fixture_passes() {
    let out = assert_passes("idefics3-tiny", "golden-padded.safetensors");
    assert!(
        out.contains("2 image(s), 2 with padded patches, 1 all-zero padding image(s) dropped"),
        "{out}"
    );
}

/// The padding is what matters: the same golden with every pixel marked real gives other
/// logits (the mask is read, not ignored).
#[test]
fn padded_fixture_with_its_mask_cleared_fails() {
    let mut t = read_golden_file("idefics3-tiny", "golden-padded.safetensors");
    let mask = tensor_mut(&mut t, "pixel_attention_mask");
    mask.3.iter_mut().for_each(|m| *m = 1);
    let msg = fails_with(&t);
    assert!(msg.contains("TOO LARGE"), "{msg}");
}

#[test]
fn bad_pixel_attention_masks_are_refused() {
    // One row short of the images it must describe.
    let mut t = read_golden_file("idefics3-tiny", "golden-padded.safetensors");
    let mask = tensor_mut(&mut t, "pixel_attention_mask");
    let (h, w) = (mask.2[2], mask.2[3]);
    mask.2[2] = h - 1;
    let n = mask.2[1];
    mask.3.truncate(n * (h - 1) * w);
    let msg = fails_with(&t);
    assert!(msg.contains("`pixel_attention_mask` has shape"), "{msg}");

    // A real image whose mask has no real pixel: transformers cannot position it.
    let mut t = read_golden("idefics3-tiny");
    let mask = tensor_mut(&mut t, "pixel_attention_mask");
    mask.3.iter_mut().for_each(|m| *m = 0);
    let msg = fails_with(&t);
    assert!(msg.contains("first row or column"), "{msg}");

    // A float mask (transformers' own is bool or int64 0/1).
    let mut t = read_golden("idefics3-tiny");
    let mask = tensor_mut(&mut t, "pixel_attention_mask");
    mask.1 = Dtype::F32;
    mask.3 = mask
        .3
        .iter()
        .flat_map(|m| f32::from(*m).to_le_bytes())
        .collect();
    let msg = fails_with(&t);
    assert!(msg.contains("expected BOOL"), "{msg}");
}

/// `--raw` rebuilds inputs with the image processor, which never pads one prompt's images: a
/// padded golden is refused with a reason rather than compared against unpadded pixels.
#[test]
fn raw_is_refused_for_a_padded_golden() {
    let dir = fixture("idefics3-tiny");
    let out = Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .args(["check-reference", "--raw", "--model"])
        .arg(&dir)
        .arg("--golden")
        .arg(dir.join("golden-padded.safetensors"))
        .output()
        .unwrap();
    let msg = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{msg}");
    assert!(msg.contains("without --raw"), "{msg}");
}

#[test]
fn not_a_safetensors_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("golden.safetensors");
    fs::write(&p, b"not a golden file").unwrap();
    let out = check(&fixture("idefics3-tiny"), &p);
    let msg = text(&out.stderr);
    assert!(!out.status.success());
    assert!(msg.contains("not a safetensors file"), "{msg}");
    let out = check(
        &fixture("idefics3-tiny"),
        &dir.path().join("absent.safetensors"),
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("absent.safetensors"));
}

/// transformers >= 5 writes RoPE's base inside `rope_parameters`; before this was read, the
/// fixture's logits were off by 2.6. Variants we do not implement must be refused, not run.
#[test]
fn rope_parameters_are_read_and_unknown_rope_types_refused() {
    use relvqa::model::idefics3::Idefics3Config;
    let json = fs::read_to_string(fixture("idefics3-tiny").join("config.json")).unwrap();
    let cfg = Idefics3Config::from_json(&json).unwrap();
    assert_eq!(cfg.text_config.rope_theta, 100000.0);

    let llama3 = json.replace("\"rope_type\": \"default\"", "\"rope_type\": \"llama3\"");
    assert_ne!(llama3, json);
    let e = Idefics3Config::from_json(&llama3).unwrap_err().to_string();
    assert!(e.contains("llama3"), "{e}");

    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let tc = v["text_config"].as_object_mut().unwrap();
    tc.remove("rope_parameters");
    tc.insert("rope_theta".into(), 5e5.into());
    tc.insert(
        "rope_scaling".into(),
        serde_json::json!({"type": "linear", "factor": 2.0}),
    );
    let e = Idefics3Config::from_json(&v.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("linear"), "{e}");
    v["text_config"]["rope_scaling"] = serde_json::Value::Null;
    let cfg = Idefics3Config::from_json(&v.to_string()).unwrap();
    assert_eq!(cfg.text_config.rope_theta, 5e5);
}

/// A committed `idefics3-tiny` golden's question (inside its SmolVLM-format prompt) and one of
/// its i64 id tensors (`input_ids`, `generated`).
fn golden_question_and_ids(file: &str, tensor: &str) -> (String, Vec<u32>) {
    let bytes = fs::read(fixture("idefics3-tiny").join(file)).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let prompt = meta.metadata().as_ref().unwrap()["prompt"].clone();
    let question = prompt
        .strip_prefix("<|im_start|>User:<image>")
        .and_then(|r| r.strip_suffix("<end_of_utterance>\nAssistant:"))
        .unwrap()
        .to_string();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = st
        .tensor(tensor)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    (question, ids)
}

/// The golden's `input_ids` came from Idefics3Processor; our prompt builder must make the same
/// ids from the same question, unsplit and as 2x2 tiles plus the global image.
#[test]
fn prompt_builder_matches_idefics3_processor() {
    use relvqa::model::prompt::build_prompt_tiled;
    use relvqa::model::tokenizer::VqaTokenizer;
    let dir = fixture("idefics3-tiny");
    let tok = VqaTokenizer::from_bytes(&fs::read(dir.join("tokenizer.json")).unwrap()).unwrap();
    for (file, grid) in [
        ("golden.safetensors", (0, 0)),
        ("golden-tiled.safetensors", (2, 2)),
    ] {
        let (question, want) = golden_question_and_ids(file, "input_ids");
        let p = build_prompt_tiled(&tok, 4, grid, &question, 256).unwrap();
        assert_eq!(p.ids, want, "{file}");
        // The global image's run is the last one, just before its closing fake token.
        let img = tok.special.image;
        assert!(p.ids[p.image.clone()].iter().all(|&t| t == img));
        assert_eq!(p.ids[p.image.end], tok.special.fake_image);
        assert_eq!(p.ids[p.image.start - 1], tok.special.global_img);
    }
    let e = build_prompt_tiled(&tok, 4, (7, 1), "what ?", 256).unwrap_err();
    assert!(e.to_string().contains("7x1"), "{e}");
}

/// The fixture's goldens start from `image.png`: our image processor (Pillow's LANCZOS in
/// Rust, Idefics3's resize/split rules) must give transformers' `pixel_values`.
#[test]
fn image_processor_matches_idefics3_image_processor() {
    use relvqa::model::idefics3::processor::{preprocess, ProcessorOptions};
    let dir = fixture("idefics3-tiny");
    let img = image::open(dir.join("image.png")).unwrap().to_rgb8();
    for (file, split, grid) in [
        ("golden.safetensors", false, (0, 0)),
        ("golden-tiled.safetensors", true, (2, 2)),
    ] {
        let bytes = fs::read(dir.join(file)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let want = st.tensor("pixel_values").unwrap();
        let want_px: Vec<f32> = want
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let o = ProcessorOptions {
            longest_edge: 96,
            tile: 48,
            split,
        };
        let got = preprocess(&img, &o).unwrap();
        assert_eq!((got.rows, got.cols), grid, "{file}");
        assert_eq!(got.pixels.shape[..], want.shape()[1..], "{file}");
        let max = got
            .pixels
            .data
            .iter()
            .zip(&want_px)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // One 8-bit level is 2/255 = 0.0078 after normalisation; 1e-6 is float rounding only.
        assert!(max <= 1e-6, "{file}: max |Δpixel| {max}");
    }
}

/// `relvqa ask` on a checkpoint whose processor splits images (the tiny fixture, as real
/// SmolVLM checkpoints ship `do_image_splitting`) answers from the tiles and the tiled prompt:
/// its answer tokens are transformers' greedy ids for the same image and question, up to the
/// end of the utterance.
#[test]
fn ask_uses_the_checkpoint_processor_tiles_and_answers_like_transformers() {
    use relvqa::backend::cpu::CpuBackend;
    use relvqa::model::idefics3::processor::{preprocess, ProcessorOptions};
    let dir = fixture("idefics3-tiny");
    let (question, generated) = golden_question_and_ids("golden-tiled.safetensors", "generated");

    let vqa = relvqa::model::loader::load_dir(CpuBackend::new(), &dir).unwrap();
    let eou = vqa.tokenizer.special.end_of_utterance;
    let want: Vec<u32> = generated
        .iter()
        .copied()
        .take_while(|&t| t != eou)
        .collect();
    assert!(!want.is_empty());
    let opts = ProcessorOptions::from_preprocessor_json(
        &fs::read_to_string(dir.join("preprocessor_config.json")).unwrap(),
    )
    .unwrap();
    assert!(opts.split);
    let img = image::open(dir.join("image.png")).unwrap().to_rgb8();
    let processed = preprocess(&img, &opts).unwrap();
    assert_eq!((processed.rows, processed.cols), (2, 2));
    let g = pollster::block_on(vqa.answer_processed(&processed, &question)).unwrap();
    assert_eq!(g.tokens, want[..g.tokens.len().min(want.len())]);
    assert_eq!(g.tokens.len(), want.len().min(vqa.max_new_tokens));

    // The CLI takes the same path and prints the same answer.
    let out = Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .args(["ask", "--json", "--model"])
        .arg(&dir)
        .arg("--image")
        .arg(dir.join("image.png"))
        .args(["--question", &question])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["answer"].as_str(), Some(g.text.as_str()));
    assert_eq!(
        v["token_probs"].as_array().map(Vec::len),
        Some(g.tokens.len())
    );
}

/// The fixture ships SmolVLM's chat template (`chat_template.json`); rendered for one image and
/// the golden's question, it gives transformers' `input_ids` exactly, unsplit and tiled. A
/// template that places no image, or two, is refused by name.
#[test]
fn chat_template_prompt_equals_the_processor_ids() {
    use relvqa::model::chat::ChatTemplate;
    use relvqa::model::prompt::build_prompt_templated;
    use relvqa::model::tokenizer::VqaTokenizer;
    let dir = fixture("idefics3-tiny");
    let tok = VqaTokenizer::from_bytes(&fs::read(dir.join("tokenizer.json")).unwrap()).unwrap();
    let t = ChatTemplate::from_checkpoint(
        None,
        Some(&fs::read(dir.join("chat_template.json")).unwrap()),
    )
    .unwrap()
    .unwrap();
    assert!(t.takes_images());
    for (file, grid) in [
        ("golden.safetensors", (0, 0)),
        ("golden-tiled.safetensors", (2, 2)),
    ] {
        let (question, want) = golden_question_and_ids(file, "input_ids");
        let p = build_prompt_templated(&tok, &t, 4, grid, &question, 256).unwrap();
        assert_eq!(p.ids, want, "{file}");
        assert_eq!(tok.decode(&p.ids[p.question.clone()]).unwrap(), question);
    }
    let text_only =
        br#"{"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}"#;
    let t = ChatTemplate::from_checkpoint(Some(text_only), None)
        .unwrap()
        .unwrap();
    assert!(!t.takes_images());
    let e = build_prompt_templated(&tok, &t, 4, (0, 0), "w59 ?", 256).unwrap_err();
    assert!(e.to_string().contains("no `<image>`"), "{e}");
    let two = br#"{"chat_template": "<image><image>{{ messages[0]['content'][1]['text'] }}"}"#;
    let t = ChatTemplate::from_checkpoint(Some(two), None)
        .unwrap()
        .unwrap();
    let e = build_prompt_templated(&tok, &t, 4, (0, 0), "w59 ?", 256).unwrap_err();
    assert!(e.to_string().contains("more than one `<image>`"), "{e}");
}
