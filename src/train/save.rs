//! Writing a trained model as a Hugging Face model directory.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::model::idefics3::Idefics3Config;
use crate::model::loader::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use crate::model::tokenizer::VqaTokenizer;

/// `Idefics3ImageProcessor` settings matching our preprocessing: no tiling, resize to the
/// model's image size, rescale 1/255, normalise with mean = std = 0.5.
pub fn preprocessor_config(cfg: &Idefics3Config) -> serde_json::Value {
    let side = cfg.vision_config.image_size;
    serde_json::json!({
        "image_processor_type": "Idefics3ImageProcessor",
        "processor_class": "Idefics3Processor",
        "do_convert_rgb": true,
        "do_resize": true,
        "size": {"longest_edge": side},
        "resample": 1,
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_pad": true,
        "do_image_splitting": false,
        "max_image_size": {"longest_edge": side}
    })
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).map_err(|e| Error::io(p.display().to_string(), e))
}

pub fn save_model_dir(
    dir: &Path,
    cfg: &Idefics3Config,
    tok: &VqaTokenizer,
    vars: &[(String, candle_core::Var)],
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    let cfg_json = serde_json::to_string_pretty(cfg).map_err(|e| Error::Invalid(e.to_string()))?;
    write(dir, CONFIG_FILE, cfg_json.as_bytes())?;
    write(dir, TOKENIZER_FILE, tok.to_json()?.as_bytes())?;
    let pp = serde_json::to_string_pretty(&preprocessor_config(cfg))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    write(dir, crate::model::loader::PREPROCESSOR_FILE, pp.as_bytes())?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, v) in vars {
        tensors.insert(name.clone(), v.as_tensor().to_dtype(DType::F16)?);
    }
    let p = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &p)?;
    Ok(())
}
