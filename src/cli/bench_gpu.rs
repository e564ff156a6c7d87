//! The GPU half of `relvqa bench kernels`: the WGSL int4 GEMV against the WGSL f32 GEMV (and
//! the f16-weight GEMV) on the same shape, against the CPU's int4 kernel timed in the same run, and against the GPU's own
//! copy bandwidth, all measured here.
//!
//! Timing without timestamp queries (not every adapter has them): a batch of calls is
//! recorded first, then the submit and the wait for a one-value readback are timed, and the
//! same submit-and-wait of an empty batch is subtracted. So the numbers are GPU execution per
//! call, without the host's recording cost. Where the adapter has subgroups, the int4 GEMV is
//! also timed with the workgroup-memory reductions, to show what subgroups give.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use crate::backend::wgpu::{GpuOptions, WgpuBackend, WgpuTensor};
use crate::backend::{Backend, HostTensor};
use crate::error::Result;
use crate::quant::rtn::quantize;
use crate::quant::QuantSpec;

/// A batch is grown until it runs at least this long, so the fixed submit cost fades.
const BATCH_SECONDS: f64 = 0.02;
const MAX_BATCH: usize = 512;
/// Values copied to measure the GPU's memory bandwidth (64 MiB read, 64 MiB written).
const COPY_VALUES: usize = 16 << 20;

#[derive(Debug, Serialize)]
pub struct GpuReport {
    pub adapter: String,
    pub backend: String,
    pub software: bool,
    /// (bytes read + bytes written) per second by the driver's buffer copy, median of repetitions.
    pub copy_gbs: f64,
    pub shapes: Vec<GpuShape>,
}

#[derive(Debug, Serialize)]
pub struct GpuShape {
    pub name: String,
    pub k: usize,
    pub n: usize,
    pub int4_us: f64,
    pub f32_us: f64,
    /// The same GEMV on the weight kept as f16 pairs (what an f16 checkpoint loads as).
    pub f16_us: f64,
    /// Weight bytes read per call.
    pub int4_bytes: usize,
    pub f32_bytes: usize,
    pub int4_gbs: f64,
    /// int4 weight bytes per second over the copy bandwidth.
    pub int4_frac_copy_bw: f64,
    /// WGSL f32 GEMV time / WGSL int4 GEMV time.
    pub int4_speedup_vs_f32: f64,
    /// CPU int4 kernel time (this run) / WGSL int4 GEMV time.
    pub int4_speedup_vs_cpu: f64,
    /// Max |int4 - f32| over max |f32| of the two GPU outputs: the quantization error.
    pub int4_rel_err: f64,
    /// Where the adapter has subgroups: the int4 GEMV with workgroup-memory reductions / with
    /// subgroup reductions (the default there).
    pub int4_subgroup_speedup: Option<f64>,
}

/// Median GPU seconds per call of `op`, recorded in batches (see the module docs).
fn time_gpu(b: &WgpuBackend, reps: usize, op: &dyn Fn() -> Result<WgpuTensor>) -> Result<f64> {
    let sync = b.upload(&HostTensor::new(vec![1], vec![0.0])?)?;
    let run = |batch: usize| -> Result<f64> {
        let outs = (0..batch).map(|_| op()).collect::<Result<Vec<_>>>()?;
        let t0 = Instant::now();
        b.context().flush()?;
        pollster::block_on(b.read_f32(&sync))?;
        let t = t0.elapsed().as_secs_f64();
        drop(outs);
        Ok(t)
    };
    run(2)?; // compile the pipelines, fill the buffer pool
    let mut batch = 4;
    while batch < MAX_BATCH && run(batch)? < BATCH_SECONDS {
        batch *= 2;
    }
    let mut per_call = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let full = run(batch)?;
        let empty = run(0)?;
        per_call.push(((full - empty) / batch as f64).max(1e-9));
    }
    per_call.sort_by(|a, c| a.total_cmp(c));
    Ok(per_call[per_call.len() / 2])
}

fn copy_bandwidth(b: &WgpuBackend, reps: usize) -> Result<f64> {
    let ctx = b.context();
    let n = COPY_VALUES.min((ctx.max_binding() / 4) as usize);
    let src = ctx.upload_f32("bench copy", &vec![1.0; n])?;
    // One destination for every call, so a batch does not allocate gigabytes. Through wgpu
    // on an H200 (Vulkan) this copy measured only 430-830 GB/s while the f32 GEMV read
    // 3.3 TB/s, so on such devices the `vs f32` column is the better ceiling.
    let dst = ctx.storage("bench copy out", n)?;
    let t = time_gpu(b, reps, &|| {
        ctx.copy_buffer(&src, &dst)?;
        Ok(WgpuTensor::from_buffer(dst.clone(), vec![n]))
    })?;
    Ok(2.0 * (n * 4) as f64 / t / 1e9)
}

/// Bench every `(name, k, n, cpu int4 GEMV seconds)`.
pub fn run(shapes: &[(String, usize, usize, f64)], reps: usize) -> Result<GpuReport> {
    let b = pollster::block_on(WgpuBackend::new())?;
    // The same kernels with the workgroup-memory reductions, to measure what subgroups give.
    let wg = if b.context().uses_subgroups() {
        Some(pollster::block_on(WgpuBackend::with_options(
            &GpuOptions {
                no_subgroups: true,
                ..GpuOptions::default()
            },
        ))?)
    } else {
        None
    };
    let info = b.context().info().clone();
    println!();
    println!(
        "GPU: {} ({}{}); timed as GPU execution per call (batches recorded, then submit + wait)",
        info.adapter,
        info.backend,
        if info.is_software {
            ", software: ratios are meaningful, absolute speeds are the CPU's"
        } else {
            ""
        }
    );
    let copy_gbs = copy_bandwidth(&b, reps)?;
    println!("  GPU copy bandwidth {copy_gbs:.1} GB/s (read + write)");
    println!(
        "  {:<34} {:>11} {:>11} {:>11} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "shape",
        "int4 GEMV",
        "f32 GEMV",
        "f16 GEMV",
        "GB/s",
        "of copy",
        "vs f32",
        "vs CPU",
        "subgroup",
        "rel.err"
    );
    let mut out = Vec::new();
    for (name, k, n, cpu_s) in shapes {
        let (k, n) = (*k, *n);
        let mut rng = ChaCha8Rng::seed_from_u64(k as u64 * 131 + n as u64);
        let w: Vec<f32> = (0..n * k)
            .map(|_| rng.sample::<f32, _>(StandardNormal) * 0.02)
            .collect();
        let x: Vec<f32> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
        let p = quantize("bench", &w, n, k, QuantSpec::new(4, 64)?)?;
        let wh = HostTensor::new(vec![n, k], w)?;
        let wd = b.upload(&wh)?;
        let w16 = b.upload_half_weight(&wh)?;
        drop(wh);
        let wp = b.upload_packed(&p)?;
        let xh = HostTensor::new(vec![1, k], x)?;
        let xt = b.upload(&xh)?;
        let y4 = pollster::block_on(b.read_f32(&b.linear_packed(&xt, &wp, None)?))?;
        let y32 = pollster::block_on(b.read_f32(&b.linear(&xt, &wd, None)?))?;
        let scale = y32.data.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
        let err = y4
            .data
            .iter()
            .zip(&y32.data)
            .map(|(a, c)| (a - c).abs())
            .fold(0f32, f32::max)
            / scale;
        let t4 = time_gpu(&b, reps, &|| b.linear_packed(&xt, &wp, None))?;
        let t32 = time_gpu(&b, reps, &|| b.linear(&xt, &wd, None))?;
        let t16 = time_gpu(&b, reps, &|| b.linear(&xt, &w16, None))?;
        let subgroup = match &wg {
            Some(w) => {
                let (wp, xt) = (w.upload_packed(&p)?, w.upload(&xh)?);
                Some(time_gpu(w, reps, &|| w.linear_packed(&xt, &wp, None))? / t4)
            }
            None => None,
        };
        let int4_bytes = p.nbytes();
        let int4_gbs = int4_bytes as f64 / t4 / 1e9;
        let s = GpuShape {
            name: name.clone(),
            k,
            n,
            int4_us: t4 * 1e6,
            f32_us: t32 * 1e6,
            f16_us: t16 * 1e6,
            int4_bytes,
            f32_bytes: n * k * 4,
            int4_gbs,
            int4_frac_copy_bw: int4_gbs / copy_gbs,
            int4_speedup_vs_f32: t32 / t4,
            int4_speedup_vs_cpu: cpu_s / t4,
            int4_rel_err: err as f64,
            int4_subgroup_speedup: subgroup,
        };
        println!(
            "  {:<34} {:>11} {:>11} {:>11} {:>8.1} {:>6.0}% {:>8.2}x {:>8.2}x {:>9} {:>9.2e}",
            s.name,
            super::bench::fmt_time(s.int4_us),
            super::bench::fmt_time(s.f32_us),
            super::bench::fmt_time(s.f16_us),
            s.int4_gbs,
            s.int4_frac_copy_bw * 100.0,
            s.int4_speedup_vs_f32,
            s.int4_speedup_vs_cpu,
            s.int4_subgroup_speedup
                .map_or("-".to_string(), |r| format!("{r:.2}x")),
            s.int4_rel_err
        );
        out.push(s);
    }
    Ok(GpuReport {
        adapter: info.adapter,
        backend: info.backend,
        software: info.is_software,
        copy_gbs,
        shapes: out,
    })
}
