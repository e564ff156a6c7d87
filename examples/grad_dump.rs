//! The training loss's gradients on one fixed batch, for `tools/hf_check/check_gradients.py`,
//! which recomputes them with transformers' `Idefics3ForConditionalGeneration` on the same
//! weights and batch. It answers "is candle's autograd through our model definition the
//! gradient PyTorch would take?" when training stalls (it did: shape names never left chance).
//!
//! `cargo run --release --example grad_dump -- MODEL_DIR OUT.safetensors [ROWS]`

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use relvqa::backend::cpu::CpuBackend;
use relvqa::error::{Error, Result};
use relvqa::eval::shapes::{Draw, Split};
use relvqa::model::generate::Vqa;
use relvqa::model::idefics3::{Idefics3, Idefics3Config};
use relvqa::model::tokenizer::VqaTokenizer;
use relvqa::train::{batch, batch_loss, params::VarParams};

fn read(p: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| Error::io(p.display().to_string(), e))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || Error::Invalid("usage: grad_dump MODEL_DIR OUT.safetensors [ROWS]".into());
    let dir = PathBuf::from(args.next().ok_or_else(usage)?);
    let out = PathBuf::from(args.next().ok_or_else(usage)?);
    let rows: u64 = match args.next() {
        Some(r) => r.parse().map_err(|_| usage())?,
        None => 6,
    };
    let cfg: Idefics3Config = serde_json::from_slice(&read(&dir.join("config.json"))?)
        .map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
    let tok = VqaTokenizer::from_bytes(&read(&dir.join("tokenizer.json"))?)?;
    // Trainable variables laid out exactly as `relvqa train` makes them, then set to the
    // checkpoint's values.
    let mut vp = VarParams::new(0);
    let model = Idefics3::load(&mut vp, &cfg)?;
    let weights = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
    for (name, var) in &vp.vars {
        let w = weights
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("checkpoint has no `{name}`")))?;
        var.set(&w.to_dtype(DType::F32)?)?;
    }
    let vqa = Vqa::new(CpuBackend::new(), model, tok);
    let b = batch::make_batch(&vqa, Split::Train, 0..rows, 4, Draw::EVAL)?;
    let loss = batch_loss(&vqa, &b)?;
    println!("loss {}", loss.to_scalar::<f32>()?);
    let grads = loss.backward()?;
    let dev = Device::Cpu;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    for (name, var) in &vp.vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            t.insert(format!("grad.{name}"), g.clone());
        }
    }
    let ids = |v: &[u32], shape: &[usize]| -> Result<Tensor> {
        Ok(Tensor::from_slice(v, shape, &dev)?.to_dtype(DType::I64)?)
    };
    t.insert("ids".into(), ids(&b.ids, &[b.rows, b.seq])?);
    t.insert("positions".into(), ids(&b.positions, &[b.positions.len()])?);
    t.insert("targets".into(), ids(&b.targets, &[b.targets.len()])?);
    t.insert(
        "pixels".into(),
        Tensor::from_slice(&b.pixels.data, b.pixels.shape.as_slice(), &dev)?,
    );
    t.insert("loss".into(), loss.reshape(1)?);
    candle_core::safetensors::save(&t, &out)?;
    println!("wrote {} tensors to {}", t.len(), out.display());
    Ok(())
}
