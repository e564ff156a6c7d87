//! A checkpoint folder whose `model.safetensors` streams in (`StreamedFolder`, the page's path
//! for a folder) must build the model that reading the whole file builds (`AnyVqa::from_files`),
//! whatever the chunking, for both families and every dtype, with HQQ applied as tensors
//! arrive; and a cut, padded or foreign file must fail with a clear error.

mod common;

use std::path::{Path, PathBuf};

use relvqa::backend::cpu::CpuBackend;
use relvqa::model::any_vqa::{AnyVqa, ModelFiles};
use relvqa::model::chat::ChatTemplate;
use relvqa::model::generate::Generation;
use relvqa::model::image::decode_image;
use relvqa::model::streamed_folder::StreamedFolder;
use relvqa::quant::hqq::HqqOptions;
use relvqa::quant::QuantSpec;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden")
        .join(name)
}

fn default_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default")
}

struct Folder {
    config: Vec<u8>,
    tokenizer: Vec<u8>,
    weights: Vec<u8>,
    tokenizer_config: Option<Vec<u8>>,
    chat_template: Option<Vec<u8>>,
    preprocessor: Option<Vec<u8>>,
}

impl Folder {
    fn read(dir: &Path) -> Self {
        let read = |n: &str| std::fs::read(dir.join(n)).expect(n);
        let optional = |n: &str| std::fs::read(dir.join(n)).ok();
        Self {
            config: read("config.json"),
            tokenizer: read("tokenizer.json"),
            weights: read("model.safetensors"),
            tokenizer_config: optional("tokenizer_config.json"),
            chat_template: optional("chat_template.json"),
            preprocessor: optional("preprocessor_config.json"),
        }
    }

    fn files(&self) -> ModelFiles<'_> {
        ModelFiles {
            config: &self.config,
            tokenizer: &self.tokenizer,
            weights: &self.weights,
            tokenizer_config: self.tokenizer_config.as_deref(),
            chat_template: self.chat_template.as_deref(),
            preprocessor: self.preprocessor.as_deref(),
        }
    }

    fn template(&self) -> Option<ChatTemplate> {
        ChatTemplate::from_checkpoint(
            self.tokenizer_config.as_deref(),
            self.chat_template.as_deref(),
        )
        .expect("template")
    }

    /// The weights pushed `chunk` bytes at a time.
    fn streamed(
        &self,
        chunk: usize,
        hqq: Option<(QuantSpec, HqqOptions)>,
    ) -> relvqa::Result<AnyVqa<CpuBackend>> {
        let mut f = StreamedFolder::new(CpuBackend::new(), &self.config, hqq)?;
        for c in self.weights.chunks(chunk) {
            f.push(c)?;
        }
        let p = f.progress();
        let m = f.finish(
            &self.tokenizer,
            self.template().as_ref(),
            self.preprocessor.as_deref(),
        )?;
        assert_eq!(p.bytes_received, p.bytes_total);
        assert!(p.tensors_uploaded > 0);
        Ok(m)
    }
}

fn answer(m: &AnyVqa<CpuBackend>, image: &Path, q: &str) -> Generation {
    let img = decode_image(&std::fs::read(image).expect("image")).expect("decode");
    pollster::block_on(m.answer_image(&img, q)).expect("answer")
}

fn same(a: &Generation, b: &Generation, what: &str) {
    assert_eq!(a.tokens, b.tokens, "{what}");
    assert_eq!(a.token_probs, b.token_probs, "{what}");
    assert_eq!(a.features, b.features, "{what}");
}

#[test]
fn a_streamed_folder_builds_the_model_reading_it_whole_builds() {
    let cases = [
        (golden("qwen2vl-tiny"), "image.png", "what is in the image?"),
        (golden("idefics3-tiny"), "image.png", "what is it ?"),
        (golden("idefics3-tiny-bf16"), "image.png", "what is it ?"),
    ];
    for (dir, image, q) in cases {
        let folder = Folder::read(&dir);
        let whole = AnyVqa::from_files(CpuBackend::new(), &folder.files()).expect("whole");
        let want = answer(&whole, &dir.join(image), q);
        // One byte at a time, odd sizes that cut values and the header, and all at once.
        for chunk in [1, 7, 4093, usize::MAX] {
            let m = folder.streamed(chunk, None).expect("streamed");
            same(
                &answer(&m, &dir.join(image), q),
                &want,
                &format!("{} in chunks of {chunk}", dir.display()),
            );
        }
    }
}

#[test]
fn the_shipped_f16_model_streams_and_quantizes_with_hqq_as_it_arrives() {
    let dir = default_model();
    let folder = Folder::read(&dir);
    let s = relvqa::eval::shapes::sample(relvqa::eval::shapes::Split::Test, 2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = tmp.path().join("q.png");
    s.image.save(&image).expect("png");
    let whole = AnyVqa::from_files(CpuBackend::new(), &folder.files()).expect("whole");
    let streamed = folder.streamed(65_537, None).expect("streamed");
    same(
        &answer(&streamed, &image, &s.question.text),
        &answer(&whole, &image, &s.question.text),
        "f16",
    );
    // HQQ in the stream packs exactly what load-time HQQ of the whole file packs.
    let spec = QuantSpec::new(4, 64).expect("spec");
    let opts = HqqOptions::default();
    let whole4 = AnyVqa::from_files_hqq(CpuBackend::new(), &folder.files(), spec, &opts, |_, _| {})
        .expect("whole hqq");
    let streamed4 = folder
        .streamed(65_537, Some((spec, opts)))
        .expect("streamed hqq");
    same(
        &answer(&streamed4, &image, &s.question.text),
        &answer(&whole4, &image, &s.question.text),
        "hqq4",
    );
}

#[test]
fn bad_files_are_clear_errors() {
    let folder = Folder::read(&golden("qwen2vl-tiny"));
    let err = |weights: Vec<u8>| {
        let f = Folder {
            weights,
            ..Folder::read(&golden("qwen2vl-tiny"))
        };
        match f.streamed(1000, None) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    };
    let w = &folder.weights;
    // Cut inside a tensor, inside the header, and before the header's length.
    let e = err(w[..w.len() - 10].to_vec());
    assert!(
        e.contains("ended after") && e.contains("inside tensor"),
        "{e}"
    );
    assert!(err(w[..20].to_vec()).contains("inside its header"));
    assert!(err(w[..3].to_vec()).contains("inside its header"));
    // More bytes than the header describes.
    let mut long = w.clone();
    long.extend_from_slice(&[0; 8]);
    assert!(err(long).contains("more than the header"));
    // Not a safetensors file at all.
    let e = err(b"\x89PNG\r\n\x1a\n and then some image bytes".to_vec());
    assert!(e.contains("safetensors"), "{e}");
    // A header that does not parse.
    let mut bad = 5u64.to_le_bytes().to_vec();
    bad.extend_from_slice(b"{oops");
    assert!(err(bad).contains("bad header"));
    // A checkpoint without a tensor the model needs names it.
    let st = safetensors::SafeTensors::deserialize(w).expect("fixture");
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("layers.1.mlp.down_proj.weight"))
        .collect();
    let e = err(safetensors::serialize(kept, None).expect("serialize"));
    assert!(e.contains("layers.1.mlp.down_proj.weight"), "{e}");
}
