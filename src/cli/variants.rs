//! `relvqa eval --variants f16,rtn4,hqq4,mbq4,...`: build the packages that are missing, then
//! evaluate every variant on the same questions and print accuracy beside bytes.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::eval::evaluate_with_progress;
use super::quantize::{build_package, options};
use crate::error::{Error, Result};
use crate::eval::accuracy::EvalReport;
use crate::eval::shapes::Split;
use crate::model::loader::{load_path, WEIGHTS_FILE};
use crate::package::MANIFEST_FILE;
use crate::quant::spec::DEFAULT_GROUP;
use crate::quant::Method;

/// `f16`, or a method and bit width with an optional group: `hqq4`, `mbq3g128`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variant {
    F16,
    Quant {
        method: Method,
        bits: u32,
        group: usize,
    },
}

impl Variant {
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        if s == "f16" {
            return Ok(Variant::F16);
        }
        let bad = || {
            Error::Invalid(format!(
                "variant `{s}`: expected f16 or METHOD BITS [g GROUP], e.g. rtn4, hqq3, mbq4g128"
            ))
        };
        let split = s.find(|c: char| c.is_ascii_digit()).ok_or_else(bad)?;
        let method: Method = s[..split].parse()?;
        let rest = &s[split..];
        let (bits, group) = match rest.split_once('g') {
            Some((b, g)) => (b, g.parse().map_err(|_| bad())?),
            None => (rest, DEFAULT_GROUP),
        };
        let bits = bits.parse().map_err(|_| bad())?;
        crate::quant::QuantSpec::new(bits, group)?;
        Ok(Variant::Quant {
            method,
            bits,
            group,
        })
    }

    pub fn name(&self) -> String {
        match self {
            Variant::F16 => "f16".into(),
            Variant::Quant {
                method,
                bits,
                group,
            } if *group == DEFAULT_GROUP => format!("{}{bits}", method.name()),
            Variant::Quant {
                method,
                bits,
                group,
            } => format!("{}{bits}g{group}", method.name()),
        }
    }
}

/// One variant's row of the comparison.
#[derive(Debug, serde::Serialize)]
pub struct VariantResult {
    pub variant: String,
    pub path: String,
    pub total_bytes: u64,
    pub lm_bytes: Option<u64>,
    pub accuracy: f64,
    pub per_family: std::collections::BTreeMap<String, f64>,
}

/// Packages are cached under `work/<first 12 hex of the weights' sha256>/<variant>`, so a
/// retrained model never reuses another model's packages.
fn package_root(model: &Path, work: &Path) -> Result<PathBuf> {
    let w = model.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&w).map_err(|e| Error::io(w.display().to_string(), e))?;
    let hash = hex::encode(Sha256::digest(&bytes));
    Ok(work.join(&hash[..12]))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    // Weights only: the Selector file beside them is not model memory.
                    (n.ends_with(".safetensors") || n.ends_with(".bin"))
                        && n != crate::selector::store::SELECTOR_FILE
                })
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

pub fn parse_list(variants: &str) -> Result<Vec<Variant>> {
    let vs: Vec<Variant> = variants
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Variant::parse)
        .collect::<Result<_>>()?;
    if vs.is_empty() {
        return Err(Error::Invalid(
            "--variants lists no variant; e.g. --variants f16,hqq4,mbq4".into(),
        ));
    }
    Ok(vs)
}

/// A variant ready to load: its directory and sizes.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub variant: Variant,
    pub path: PathBuf,
    /// Bytes of the weight files on disk.
    pub total_bytes: u64,
    /// Language-model bytes from the quantize report (quantized variants only).
    pub lm_bytes: Option<u64>,
}

/// Build the packages of `vs` that are missing under `work` (keyed by the weights' hash).
pub fn prepare(model: &Path, vs: &[Variant], work: &Path) -> Result<Vec<Prepared>> {
    let root = package_root(model, work)?;
    let mut out = Vec::new();
    for v in vs {
        let (path, lm_bytes) = match v {
            Variant::F16 => (model.to_path_buf(), None),
            Variant::Quant {
                method,
                bits,
                group,
            } => {
                let dir = root.join(v.name());
                let report = dir.join(super::quantize::REPORT_FILE);
                if !dir.join(MANIFEST_FILE).exists() || !report.exists() {
                    eprintln!("building {} -> {}", v.name(), dir.display());
                    build_package(model, &options(*method, *bits, *group, 128, false)?, &dir)?;
                }
                let r: serde_json::Value = std::fs::read(&report)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default();
                (dir, r.get("lm_bytes").and_then(|x| x.as_u64()))
            }
        };
        out.push(Prepared {
            variant: v.clone(),
            total_bytes: dir_bytes(&path),
            path,
            lm_bytes,
        });
    }
    Ok(out)
}

pub fn run<B: crate::backend::Backend>(
    backend: &B,
    model: &Path,
    variants: &str,
    work: &Path,
    split: Split,
    n: usize,
) -> Result<Vec<VariantResult>> {
    let prepared = prepare(model, &parse_list(variants)?, work)?;
    let mut out = Vec::new();
    for p in prepared {
        let vqa = load_path(backend.clone(), &p.path)?;
        eprintln!("evaluating {}", p.variant.name());
        let r: EvalReport = evaluate_with_progress(&vqa, split, n)?;
        out.push(VariantResult {
            variant: p.variant.name(),
            path: p.path.display().to_string(),
            total_bytes: p.total_bytes,
            lm_bytes: p.lm_bytes,
            accuracy: r.accuracy,
            per_family: r
                .per_family
                .iter()
                .map(|(k, s)| (k.clone(), s.accuracy))
                .collect(),
        });
    }
    Ok(out)
}

pub fn print_table(rows: &[VariantResult]) {
    let fams: Vec<String> = rows
        .first()
        .map(|r| r.per_family.keys().cloned().collect())
        .unwrap_or_default();
    print!(
        "{:<10} {:>10} {:>10} {:>8}",
        "variant", "bytes", "lm bytes", "acc%"
    );
    for f in &fams {
        print!(" {f:>11}");
    }
    println!();
    for r in rows {
        let lm = r.lm_bytes.map_or("-".to_string(), |b| b.to_string());
        print!(
            "{:<10} {:>10} {:>10} {:>8.2}",
            r.variant,
            r.total_bytes,
            lm,
            r.accuracy * 100.0
        );
        for f in &fams {
            print!(
                " {:>11.2}",
                r.per_family.get(f).copied().unwrap_or(0.0) * 100.0
            );
        }
        println!();
    }
}
