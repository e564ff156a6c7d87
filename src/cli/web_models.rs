//! `relvqa web-models`: the packages the web page offers. Builds (or reuses, from the same
//! cache as `relvqa eval --variants`) each variant's package and its Selector, copies the files
//! a browser fetches into `--out/<variant>/`, and writes `--out/index.json` listing every
//! variant with its bytes, f16 first: the f16 model as a package too (`--out/f16`), so the page
//! streams it tensor by tensor like the others instead of fetching `model.safetensors` whole
//! (the model directory `make web` copies to `--out/default` stays, for the widget).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::selector::train_and_store;
use super::variants::{parse_list, prepare, Variant};
use crate::error::{Error, Result};
use crate::model::loader::{load_path, WEIGHTS_FILE};
use crate::model::params::host_tensor_from_view;
use crate::package::{
    read_model_file, write_model_file, write_package, Manifest, PackageTensor, MANIFEST_FILE,
    MAX_SHARD_BYTES,
};
use crate::selector::store::SELECTOR_FILE;
use crate::selector::train::SelectorTrainOptions;

/// File the page reads to offer the variants.
pub const INDEX_FILE: &str = "index.json";

#[derive(clap::Args, Debug)]
pub struct WebModelsArgs {
    /// The f16 model directory the packages are made from.
    #[arg(long, default_value = super::DEFAULT_MODEL_DIR)]
    model: PathBuf,
    /// Quantized variants to ship, e.g. `hqq4,mbq4`.
    #[arg(long, default_value = "hqq8,hqq4,hqq3,hqq2,mbq8,mbq4,mbq3,mbq2")]
    variants: String,
    /// The package cache shared with `relvqa eval --variants`.
    #[arg(long, default_value = "target/variants")]
    work: PathBuf,
    /// Where the page's `models/` folder is (`dist/web/models`).
    #[arg(long)]
    out: PathBuf,
    /// Dev and val questions for a Selector that the cache does not have yet.
    #[arg(long, default_value_t = 4000)]
    dev: usize,
    #[arg(long, default_value_t = 2000)]
    val: usize,
}

/// One row of `index.json`.
#[derive(Debug, Serialize)]
struct IndexEntry {
    name: String,
    /// Folder under `models/`.
    path: String,
    /// `dir` (Hugging Face layout) or `package` (manifest + shards, streamed).
    kind: &'static str,
    /// Weight bytes: the safetensors file or the sum of the shards.
    bytes: u64,
    /// Everything the page downloads for this variant (tokenizer, Selector, ... included).
    download_bytes: u64,
}

fn copy(from: &Path, to: &Path) -> Result<u64> {
    std::fs::copy(from, to)
        .map_err(|e| Error::io(format!("copying {} to {}", from.display(), to.display()), e))
}

/// Copy what a browser fetches of the package `src` into `dst`; returns the bytes copied.
fn copy_package(src: &Path, dst: &Path) -> Result<(u64, u64)> {
    let mpath = src.join(MANIFEST_FILE);
    let bytes = std::fs::read(&mpath).map_err(|e| Error::io(mpath.display().to_string(), e))?;
    let m = Manifest::from_json(&bytes)?;
    std::fs::create_dir_all(dst).map_err(|e| Error::io(dst.display().to_string(), e))?;
    let mut total = copy(&mpath, &dst.join(MANIFEST_FILE))?;
    let names = std::iter::once(&m.tokenizer.file)
        .chain(m.shards.iter().map(|s| &s.file))
        .chain(m.files.iter().map(|f| &f.file));
    for name in names {
        total += copy(&src.join(name), &dst.join(name))?;
    }
    Ok((m.total_bytes(), total))
}

/// The f16 checkpoint `model` as a package in `dst`, with its Selector and calibration: the
/// same tensors (f16 stays f16, anything else f32), so answers equal the directory's.
fn write_f16_package(model: &Path, dst: &Path) -> Result<(u64, u64)> {
    let read = |name: &str| {
        let p = model.join(name);
        std::fs::read(&p).map_err(|e| Error::io(p.display().to_string(), e))
    };
    let config: serde_json::Value = serde_json::from_slice(&read("config.json")?)
        .map_err(|e| Error::Config(format!("{}/config.json: {e}", model.display())))?;
    let tokenizer = read("tokenizer.json")?;
    let weights = read(WEIGHTS_FILE)?;
    let st = safetensors::SafeTensors::deserialize(&weights).map_err(|e| Error::WeightsFile {
        file: model.join(WEIGHTS_FILE).display().to_string(),
        msg: e.to_string(),
    })?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let t = if view.dtype() == safetensors::Dtype::F16 {
            PackageTensor::Float {
                shape,
                data: view
                    .data()
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            }
        } else {
            let h = host_tensor_from_view(&name, &view, &shape)?;
            PackageTensor::Float32 {
                shape: h.shape,
                data: h.data,
            }
        };
        tensors.push((name, t));
    }
    write_package(dst, &config, &tokenizer, tensors, MAX_SHARD_BYTES)?;
    for extra in [SELECTOR_FILE, crate::selector::threshold::CALIBRATION_FILE] {
        if let Some(bytes) = read_model_file(model, extra)? {
            write_model_file(dst, extra, &bytes)?;
        }
    }
    // `write_model_file` listed the extras in the manifest on disk, not in `m`.
    let mpath = dst.join(MANIFEST_FILE);
    let bytes = std::fs::read(&mpath).map_err(|e| Error::io(mpath.display().to_string(), e))?;
    let m = Manifest::from_json(&bytes)?;
    let listed = std::iter::once(MANIFEST_FILE)
        .chain(std::iter::once(m.tokenizer.file.as_str()))
        .chain(m.shards.iter().map(|s| s.file.as_str()))
        .chain(m.files.iter().map(|f| f.file.as_str()));
    Ok((
        m.total_bytes(),
        listed.map(|f| file_len(&dst.join(f))).sum(),
    ))
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

pub fn run(a: WebModelsArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let vs = parse_list(&a.variants)?;
    let prepared = prepare(&a.model, &vs, &a.work)?;
    let mut index = Vec::new();
    let (bytes, download_bytes) = write_f16_package(&a.model, &a.out.join("f16"))?;
    println!("f16      {bytes:>10} weight bytes, {download_bytes:>10} to download");
    index.push(IndexEntry {
        name: "f16".into(),
        path: "f16".into(),
        kind: "package",
        bytes,
        download_bytes,
    });
    for p in prepared {
        if p.variant == Variant::F16 {
            continue;
        }
        let name = p.variant.name();
        if read_model_file(&p.path, SELECTOR_FILE)?.is_none() {
            eprintln!("training the Selector of {name}");
            let vqa = load_path(crate::backend::cpu::CpuBackend::new(), &p.path)?;
            let label = p.path.display().to_string();
            let o = SelectorTrainOptions::default();
            train_and_store(&vqa, &p.path, &label, a.dev, a.val, &o)?;
        }
        let (bytes, download_bytes) = copy_package(&p.path, &a.out.join(&name))?;
        println!("{name:<8} {bytes:>10} weight bytes, {download_bytes:>10} to download");
        index.push(IndexEntry {
            path: name.clone(),
            name,
            kind: "package",
            bytes,
            download_bytes,
        });
    }
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io(a.out.display().to_string(), e))?;
    let text = serde_json::to_vec_pretty(&serde_json::json!({ "variants": index }))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let p = a.out.join(INDEX_FILE);
    std::fs::write(&p, text).map_err(|e| Error::io(p.display().to_string(), e))?;
    println!(
        "wrote {} ({} variants) in {:.1} s",
        p.display(),
        index.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
