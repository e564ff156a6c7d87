//! `relvqa web-models`: the packages the web page offers. Builds (or reuses, from the same
//! cache as `relvqa eval --variants`) each variant's package and its Selector, copies the files
//! a browser fetches into `--out/<variant>/`, and writes `--out/index.json` listing every
//! variant with its bytes, f16 (the model directory `make web` copies to `--out/default`) first.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::selector::train_and_store;
use super::variants::{parse_list, prepare, Variant};
use crate::error::{Error, Result};
use crate::model::loader::{load_path, WEIGHTS_FILE};
use crate::package::{read_model_file, Manifest, MANIFEST_FILE};
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

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

pub fn run(a: WebModelsArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let vs = parse_list(&a.variants)?;
    let prepared = prepare(&a.model, &vs, &a.work)?;
    let mut index = Vec::new();
    let dir_files = ["config.json", "tokenizer.json", WEIGHTS_FILE];
    let extras = [SELECTOR_FILE, crate::selector::threshold::CALIBRATION_FILE];
    index.push(IndexEntry {
        name: "f16".into(),
        path: "default".into(),
        kind: "dir",
        bytes: file_len(&a.model.join(WEIGHTS_FILE)),
        download_bytes: dir_files
            .iter()
            .chain(extras.iter())
            .map(|f| file_len(&a.model.join(f)))
            .sum(),
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
