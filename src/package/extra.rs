//! Files that travel with a model besides its weights (the Selector, the MaxProb calibration),
//! in either kind of model directory: a package lists them with checksums in its manifest, a
//! Hugging Face directory simply holds them.

use std::path::Path;

use super::writer::{attach_file, read_listed_file};
use super::MANIFEST_FILE;
use crate::error::{Error, Result};

/// Write `name` into the model directory `dir` (and list it, if `dir` is a package).
pub fn write_model_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    if dir.join(MANIFEST_FILE).is_file() {
        attach_file(dir, name, bytes)?;
        return Ok(());
    }
    let p = dir.join(name);
    std::fs::write(&p, bytes).map_err(|e| Error::io(p.display().to_string(), e))
}

/// Read `name` from the model directory `dir`; `None` when it has none. In a package, a file
/// the manifest does not list is treated as absent and a listed one must match its sha256.
pub fn read_model_file(dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    if dir.join(MANIFEST_FILE).is_file() {
        return read_listed_file(dir, name);
    }
    let p = dir.join(name);
    if !p.exists() {
        return Ok(None);
    }
    std::fs::read(&p)
        .map(Some)
        .map_err(|e| Error::io(p.display().to_string(), e))
}
