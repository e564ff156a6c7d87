//! Every bad input gets a clear, typed error and nothing panics.

mod common;

use std::fs;

use relvqa::backend::cpu::CpuBackend;
use relvqa::model::image::{decode_image, image_to_pixels};
use relvqa::model::loader::load_dir;
use relvqa::Error;

fn load_err(dir: &std::path::Path) -> Error {
    match load_dir(CpuBackend::new(), dir) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_weights_file_names_the_file() {
    let d = common::tiny_model_dir();
    fs::remove_file(d.path().join("model.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(matches!(e, Error::Model { .. }), "{e:?}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn truncated_weights_are_refused() {
    let d = common::tiny_model_dir();
    let p = d.path().join("model.safetensors");
    let bytes = fs::read(&p).unwrap();
    fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let e = load_err(d.path());
    assert!(matches!(e, Error::WeightsFile { .. }), "{e:?}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn corrupt_weights_header_is_refused() {
    let d = common::tiny_model_dir();
    let p = d.path().join("model.safetensors");
    let mut bytes = fs::read(&p).unwrap();
    for b in bytes.iter_mut().skip(8).take(40) {
        *b = b'#';
    }
    fs::write(&p, &bytes).unwrap();
    assert!(matches!(load_err(d.path()), Error::WeightsFile { .. }));
    fs::write(&p, b"not a safetensors file at all").unwrap();
    assert!(matches!(load_err(d.path()), Error::WeightsFile { .. }));
}

/// Rewrite one tensor of the tiny model with another shape or dtype.
fn rewrite_tensor(dir: &std::path::Path, name: &str, dtype: safetensors::Dtype, shape: Vec<usize>) {
    let p = dir.join("model.safetensors");
    let bytes = fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                v.dtype(),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    for t in owned.iter_mut().filter(|t| t.0 == name) {
        let n: usize = shape.iter().product();
        t.1 = dtype;
        t.3 = vec![0u8; n * dtype.bitsize() / 8];
        t.2 = shape.clone();
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    fs::write(&p, out).unwrap();
}

#[test]
fn wrong_tensor_shape_names_tensor_and_shapes() {
    let d = common::tiny_model_dir();
    rewrite_tensor(
        d.path(),
        "model.text_model.layers.0.self_attn.q_proj.weight",
        safetensors::Dtype::F16,
        vec![16, 15],
    );
    match load_err(d.path()) {
        Error::TensorShape {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "model.text_model.layers.0.self_attn.q_proj.weight");
            assert_eq!(expected, vec![16, 16]);
            assert_eq!(found, vec![16, 15]);
        }
        e => panic!("wrong error {e:?}"),
    }
}

#[test]
fn wrong_tensor_dtype_is_refused() {
    let d = common::tiny_model_dir();
    rewrite_tensor(
        d.path(),
        "lm_head.weight",
        safetensors::Dtype::I32,
        vec![d_vocab(d.path()), 16],
    );
    match load_err(d.path()) {
        Error::TensorDtype { name, dtype } => {
            assert_eq!(name, "lm_head.weight");
            assert!(dtype.contains("I32"));
        }
        e => panic!("wrong error {e:?}"),
    }
}

fn d_vocab(dir: &std::path::Path) -> usize {
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
    cfg["text_config"]["vocab_size"].as_u64().unwrap() as usize
}

#[test]
fn missing_tensor_is_named() {
    let d = common::tiny_model_dir();
    let p = d.path().join("model.safetensors");
    let bytes = fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "model.connector.modality_projection.proj.weight")
        .collect();
    let out = safetensors::serialize(kept, None).unwrap();
    fs::write(&p, out).unwrap();
    match load_err(d.path()) {
        Error::MissingTensor { name } => {
            assert_eq!(name, "model.connector.modality_projection.proj.weight")
        }
        e => panic!("wrong error {e:?}"),
    }
}

#[test]
fn unknown_model_type_is_refused() {
    let d = common::tiny_model_dir();
    let p = d.path().join("config.json");
    let text = fs::read_to_string(&p)
        .unwrap()
        .replace("\"model_type\": \"idefics3\"", "\"model_type\": \"blip\"");
    fs::write(&p, text).unwrap();
    let e = load_err(d.path());
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert!(e.to_string().contains("blip"), "{e}");
}

#[test]
fn invalid_config_json_is_refused() {
    let d = common::tiny_model_dir();
    fs::write(d.path().join("config.json"), "{ nope").unwrap();
    assert!(matches!(load_err(d.path()), Error::Config(_)));
}

#[test]
fn non_image_bytes_are_refused() {
    for bytes in [
        &b"hello, this is a text file"[..],
        &[][..],
        &[0x89, b'P', b'N', b'G', 13, 10, 26, 10, 0, 0][..],
    ] {
        match decode_image(bytes) {
            Err(Error::Image(_)) => {}
            other => panic!("expected an image error, got {other:?}"),
        }
    }
}

/// A PNG whose header declares 20000x20000: refused from the header, before decoding.
#[test]
fn huge_png_is_refused_by_header() {
    let mut png = vec![0x89, b'P', b'N', b'G', 13, 10, 26, 10];
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&20000u32.to_be_bytes());
    ihdr.extend_from_slice(&20000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&(ihdr.len() as u32).to_be_bytes());
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&ihdr);
    png.extend_from_slice(&chunk);
    png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    // A tiny (empty) zlib stream and IEND: a small file that claims a huge image.
    for (kind, data) in [
        (
            &b"IDAT"[..],
            &[0x78u8, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01][..],
        ),
        (&b"IEND"[..], &[][..]),
    ] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    assert!(png.len() < 100);
    match decode_image(&png) {
        Err(Error::Image(m)) => assert!(m.contains("20000x20000"), "{m}"),
        other => panic!("expected a size refusal, got {other:?}"),
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn any_image_size_is_resized_to_the_model_input() {
    let img = image::RgbImage::from_pixel(300, 17, image::Rgb([255, 0, 0]));
    let px = image_to_pixels(&img, 64).unwrap();
    assert_eq!(px.shape, vec![1, 3, 64, 64]);
    assert!((px.data[0] - 1.0).abs() < 1e-3 && (px.data[64 * 64] + 1.0).abs() < 1e-3);
}

#[test]
fn empty_and_oversized_questions_are_refused() {
    let d = common::tiny_model_dir();
    let vqa = load_dir(CpuBackend::new(), d.path()).unwrap();
    let px = image_to_pixels(&image::RgbImage::new(64, 64), 64).unwrap();
    for q in ["", "   \n\t "] {
        match pollster::block_on(vqa.answer(&px, q)) {
            Err(Error::Question(m)) => assert!(m.contains("empty"), "{m}"),
            other => panic!("expected an empty-question error, got {other:?}"),
        }
    }
    // Longer than the context (128 positions) but under the byte cap: refused with the count.
    let long = "is there a red circle ? ".repeat(30);
    match pollster::block_on(vqa.answer(&px, &long)) {
        Err(Error::Question(m)) => assert!(m.contains("context") && m.contains("shorten"), "{m}"),
        other => panic!("expected a context error, got {other:?}"),
    }
    let huge = "a".repeat(1 << 20);
    match pollster::block_on(vqa.answer(&px, &huge)) {
        Err(Error::Question(m)) => assert!(m.contains("limit"), "{m}"),
        other => panic!("expected a size error, got {other:?}"),
    }
}

#[test]
fn tokenizer_without_image_token_is_refused() {
    let d = common::tiny_model_dir();
    let p = d.path().join("tokenizer.json");
    let text = fs::read_to_string(&p).unwrap().replace("<image>", "<img>");
    fs::write(&p, text).unwrap();
    let e = load_err(d.path());
    assert!(matches!(e, Error::Tokenizer(_)), "{e:?}");
    assert!(e.to_string().contains("<image>"), "{e}");
}
