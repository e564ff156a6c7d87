//! `relvqa bench`: measurements, never assertions. `bench kernels` times the fused packed-weight
//! kernels against candle's Q4_0 and f32 matmuls on the same weights, next to the memory
//! bandwidth measured in the same run, and reports how close each comes to it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::quant::kernels::{isa_for, matmul_packed};
use crate::quant::rtn::quantize;
use crate::quant::{PackedTensor, QuantSpec};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(clap::Subcommand, Debug)]
enum BenchCmd {
    /// Fused int-N kernels vs candle Q4_0 and f32, against measured memory bandwidth.
    Kernels(KernelsArgs),
    /// Whole models: weight bytes, load time, prefill and decode tokens/s (`--synthetic`: a
    /// random SmolVLM-256M-shaped model and its HQQ packages).
    Model(super::bench_model::ModelBenchArgs),
}

#[derive(clap::Args, Debug)]
pub struct KernelsArgs {
    /// Also write the numbers as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Timed repetitions per kernel (the median is reported), after two warm-up calls.
    #[arg(long, default_value_t = 15)]
    reps: usize,
    /// cold: evict the cache before every call (weights from DRAM); hot: repeat calls back to
    /// back; auto: cold for shapes of 1M weights or more.
    #[arg(long, value_enum, default_value_t = CacheMode::Auto)]
    cache: CacheMode,
    /// Skip the GPU half (WGSL kernels through wgpu).
    #[arg(long)]
    no_gpu: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum CacheMode {
    Auto,
    Hot,
    Cold,
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.cmd {
        BenchCmd::Kernels(k) => kernels(k),
        BenchCmd::Model(m) => super::bench_model::run(m),
    }
}

/// Group size of every relvqa tensor benchmarked: int4 g64 is 4.5 bits per weight, exactly
/// Q4_0's 18 bytes per 32 weights, so the two read the same number of bytes.
const GROUP: usize = 64;
/// Rows of x for the prefill (GEMM) measurement.
const GEMM_M: usize = 16;
/// With `--cache auto`, weights from which a shape is timed cold (cache evicted before every
/// call), as in decoding a model too large for the cache; smaller shapes are timed hot, as the
/// default model runs.
const COLD_WEIGHTS: usize = 1 << 20;

/// (name, K = in, N = out).
const SHAPES: [(&str, usize, usize); 4] = [
    ("7B-class MLP up (4096 -> 11008)", 4096, 11008),
    // models/default/config.json text_config: hidden 128, intermediate 320.
    ("default text gate/up (128 -> 320)", 128, 320),
    ("default text down (320 -> 128)", 320, 128),
    ("default text q/o (128 -> 128)", 128, 128),
];

#[derive(Debug, Serialize)]
struct Report {
    threads: usize,
    isa_int4: &'static str,
    llc_bytes: usize,
    bandwidth: Bandwidth,
    shapes: Vec<ShapeReport>,
    gpu: Option<super::bench_gpu::GpuReport>,
    /// Why there is no GPU half (no adapter, `--no-gpu`).
    gpu_skipped: Option<String>,
}

#[derive(Debug, Serialize)]
struct Bandwidth {
    buffer_bytes: usize,
    /// Bytes read per second by a summing loop over the buffer, best repetition.
    read_gbs: f64,
    read_gbs_median: f64,
    /// (bytes read + bytes written) per second by `copy_from_slice` between two such buffers,
    /// best repetition.
    copy_gbs: f64,
}

#[derive(Debug, Serialize)]
struct ShapeReport {
    name: String,
    k: usize,
    n: usize,
    /// Whether the cache was evicted before every timed call.
    cold: bool,
    rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
struct Row {
    kernel: String,
    m: usize,
    /// Weight bytes (packed levels + scales + zeros, or the f32 matrix) read per call.
    bytes: usize,
    median_us: f64,
    gbs: f64,
    /// `gbs / read_gbs` (best read bandwidth of the run).
    frac_bandwidth: f64,
    /// candle Q4_0's time at the same m divided by this kernel's time.
    speedup_vs_candle_q4_0: f64,
    /// ‖y − y_f32‖ / ‖y_f32‖ against candle's f32 matmul on the unquantized weight.
    rel_err_vs_f32: f64,
}

fn kernels(a: KernelsArgs) -> Result<()> {
    let reps = a.reps.max(1);
    let threads = rayon::current_num_threads();
    let llc = llc_bytes();
    eprintln!("measuring memory bandwidth ({threads} threads) ...");
    let mut mem = Memory::new(llc);
    let bandwidth = mem.bandwidth(reps);
    println!(
        "threads {threads}, int4 kernel {}, LLC {:.0} MiB; memory bandwidth over {:.0} MiB: \
         read {:.1} GB/s (median {:.1}), copy {:.1} GB/s (read + write); best of repetitions",
        isa_for(4).name(),
        llc as f64 / (1 << 20) as f64,
        bandwidth.buffer_bytes as f64 / (1 << 20) as f64,
        bandwidth.read_gbs,
        bandwidth.read_gbs_median,
        bandwidth.copy_gbs
    );
    let mut shapes = Vec::new();
    for (name, k, n) in SHAPES {
        eprintln!("{name}: preparing weights ...");
        let cold = match a.cache {
            CacheMode::Auto => n * k >= COLD_WEIGHTS,
            CacheMode::Hot => false,
            CacheMode::Cold => true,
        };
        let s = bench_shape(name, k, n, reps, cold, &bandwidth, &mut mem)?;
        print_shape(&s);
        shapes.push(s);
    }
    print_summary(&shapes);
    let (gpu, gpu_skipped) = if a.no_gpu {
        (None, Some("--no-gpu".to_string()))
    } else {
        let cpu_int4: Vec<(String, usize, usize, f64)> = shapes
            .iter()
            .filter_map(|s| {
                let r = s
                    .rows
                    .iter()
                    .find(|r| r.m == 1 && r.kernel.starts_with("relvqa int4"))?;
                Some((s.name.clone(), s.k, s.n, r.median_us / 1e6))
            })
            .collect();
        match super::bench_gpu::run(&cpu_int4, reps) {
            Ok(g) => (Some(g), None),
            // A benchmark, not a test: say why and keep the CPU numbers.
            Err(e) => {
                println!("\nGPU half skipped: {e}");
                (None, Some(e.to_string()))
            }
        }
    };
    let report = Report {
        threads,
        isa_int4: isa_for(4).name(),
        llc_bytes: llc,
        bandwidth,
        shapes,
        gpu,
        gpu_skipped,
    };
    if let Some(p) = &a.json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| Error::Invalid(e.to_string()))?;
        std::fs::write(p, text).map_err(|e| Error::io(p.display().to_string(), e))?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// A kernel to time: a name, its m, bytes read per call, and the call; `call(true)` also returns
/// the output, `call(false)` (timed) only runs the kernel.
struct Case<'a> {
    kernel: String,
    m: usize,
    bytes: usize,
    call: Box<dyn FnMut(bool) -> Result<Vec<f32>> + 'a>,
}

fn ours_case<'a>(p: &'a PackedTensor, x: &'a [f32], m: usize) -> Case<'a> {
    let mut out = vec![0f32; m * p.rows];
    Case {
        kernel: format!(
            "relvqa int{} g{GROUP} ({})",
            p.spec.bits,
            isa_for(p.spec.bits).name()
        ),
        m,
        bytes: p.nbytes(),
        call: Box::new(move |want| {
            matmul_packed(x, m, p, &mut out)?;
            Ok(if want { out.clone() } else { Vec::new() })
        }),
    }
}

fn candle_case<'a>(
    kernel: &str,
    m: usize,
    bytes: usize,
    f: impl Fn() -> candle_core::Result<Tensor> + 'a,
) -> Case<'a> {
    Case {
        kernel: kernel.to_string(),
        m,
        bytes,
        call: Box::new(move |want| {
            let y = f()?;
            Ok(if want {
                y.flatten_all()?.to_vec1()?
            } else {
                Vec::new()
            })
        }),
    }
}

fn bench_shape(
    name: &str,
    k: usize,
    n: usize,
    reps: usize,
    cold: bool,
    bw: &Bandwidth,
    mem: &mut Memory,
) -> Result<ShapeReport> {
    let mut rng = ChaCha8Rng::seed_from_u64(k as u64 * 31 + n as u64);
    let w: Vec<f32> = (0..n * k)
        .map(|_| rng.sample::<f32, _>(StandardNormal) * 0.02)
        .collect();
    let x1: Vec<f32> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
    let xm: Vec<f32> = (0..GEMM_M * k)
        .map(|_| rng.sample(StandardNormal))
        .collect();

    let dev = Device::Cpu;
    let wt = Tensor::from_vec(w.clone(), (n, k), &dev)?;
    let q4_0 = QMatMul::from_qtensor(QTensor::quantize(&wt, GgmlDType::Q4_0)?)?;
    let q4_0_bytes = n * k / GgmlDType::Q4_0.block_size() * GgmlDType::Q4_0.type_size();
    let wt_t = wt.t()?;
    let x1t = Tensor::from_vec(x1.clone(), (1, k), &dev)?;
    let xmt = Tensor::from_vec(xm.clone(), (GEMM_M, k), &dev)?;
    let packed = [8u32, 4, 3, 2]
        .iter()
        .map(|&b| quantize("bench", &w, n, k, QuantSpec::new(b, GROUP)?))
        .collect::<Result<Vec<_>>>()?;
    drop(w);
    let f32_ref =
        |x: &Tensor| -> Result<Vec<f32>> { Ok(x.matmul(&wt_t)?.flatten_all()?.to_vec1()?) };
    let ref1 = f32_ref(&x1t)?;
    let refm = f32_ref(&xmt)?;

    let ours = |bits: u32, m: usize| -> Result<Case<'_>> {
        let p = packed
            .iter()
            .find(|p| p.spec.bits == bits)
            .ok_or_else(|| Error::Invalid(format!("no int{bits} tensor prepared")))?;
        Ok(ours_case(p, if m == 1 { &x1 } else { &xm }, m))
    };
    let cases = vec![
        ours(4, 1)?,
        candle_case("candle Q4_0", 1, q4_0_bytes, || q4_0.forward(&x1t)),
        candle_case("candle f32", 1, n * k * 4, || x1t.matmul(&wt_t)),
        ours(8, 1)?,
        ours(3, 1)?,
        ours(2, 1)?,
        ours(4, GEMM_M)?,
        candle_case("candle Q4_0", GEMM_M, q4_0_bytes, || q4_0.forward(&xmt)),
    ];

    let mut timed = Vec::new();
    for mut c in cases {
        eprintln!("  {} m={} ...", c.kernel, c.m);
        let y = (c.call)(true)?;
        let err = rel_err(&y, if c.m == 1 { &ref1 } else { &refm });
        let t = time_call(&mut c.call, reps, cold.then_some(&mut *mem))?;
        timed.push((c.kernel, c.m, c.bytes, t, err));
    }
    let q4_0_time = |m: usize| {
        timed
            .iter()
            .find(|r| r.0 == "candle Q4_0" && r.1 == m)
            .map_or(f64::NAN, |r| r.3)
    };
    let rows = timed
        .iter()
        .map(|(kernel, m, bytes, t, err)| {
            let gbs = *bytes as f64 / t / 1e9;
            Row {
                kernel: kernel.clone(),
                m: *m,
                bytes: *bytes,
                median_us: t * 1e6,
                gbs,
                frac_bandwidth: gbs / bw.read_gbs,
                speedup_vs_candle_q4_0: q4_0_time(*m) / t,
                rel_err_vs_f32: *err,
            }
        })
        .collect();
    Ok(ShapeReport {
        name: name.to_string(),
        k,
        n,
        cold,
        rows,
    })
}

/// Median seconds per call. Cold: the cache is evicted before each timed call. Hot: each
/// repetition times enough back-to-back calls to last about 2 ms.
fn time_call(
    call: &mut dyn FnMut(bool) -> Result<Vec<f32>>,
    reps: usize,
    mut evict: Option<&mut Memory>,
) -> Result<f64> {
    for _ in 0..2 {
        std::hint::black_box(call(false)?);
    }
    let t0 = Instant::now();
    std::hint::black_box(call(false)?);
    let one = t0.elapsed().max(Duration::from_nanos(100));
    let inner = if evict.is_some() {
        1
    } else {
        (Duration::from_millis(2).as_nanos() / one.as_nanos()).clamp(1, 100_000) as usize
    };
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        if let Some(m) = evict.as_deref_mut() {
            m.evict();
        }
        let t0 = Instant::now();
        for _ in 0..inner {
            std::hint::black_box(call(false)?);
        }
        times.push(t0.elapsed().as_secs_f64() / inner as f64);
    }
    Ok(median(&mut times))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn rel_err(y: &[f32], r: &[f32]) -> f64 {
    let (e, n) = y.iter().zip(r).fold((0f64, 0f64), |(e, n), (&a, &b)| {
        (e + ((a - b) as f64).powi(2), n + (b as f64).powi(2))
    });
    (e / n).sqrt()
}

/// Buffers larger than the last-level cache, for the bandwidth measurement and for eviction.
struct Memory {
    src: Vec<u64>,
    dst: Vec<u64>,
    evict_words: usize,
}

/// Words per parallel chunk of the bandwidth loops (1 MiB).
const CHUNK_WORDS: usize = 1 << 17;

impl Memory {
    fn new(llc: usize) -> Self {
        let bytes = (llc * 8).max(256 << 20);
        let words = bytes / 8;
        // Written, not just allocated, so every page is backed before it is timed.
        let src: Vec<u64> = (0..words as u64).collect();
        Self {
            dst: vec![1; words],
            src,
            evict_words: (llc * 2 / 8).min(words),
        }
    }

    fn bandwidth(&mut self, reps: usize) -> Bandwidth {
        let bytes = self.src.len() * 8;
        std::hint::black_box(read_all(&self.src));
        let mut read = Vec::new();
        let mut copy = Vec::new();
        for _ in 0..reps.clamp(5, 10) {
            let t0 = Instant::now();
            std::hint::black_box(read_all(&self.src));
            read.push(bytes as f64 / t0.elapsed().as_secs_f64() / 1e9);
            let t0 = Instant::now();
            self.dst
                .par_chunks_mut(CHUNK_WORDS)
                .zip(self.src.par_chunks(CHUNK_WORDS))
                .for_each(|(d, s)| d.copy_from_slice(s));
            std::hint::black_box(&self.dst);
            copy.push(2.0 * bytes as f64 / t0.elapsed().as_secs_f64() / 1e9);
        }
        // Best of the repetitions, as STREAM reports: what the memory can deliver. A kernel's
        // median against it errs on the conservative side.
        let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
        Bandwidth {
            buffer_bytes: bytes,
            read_gbs: best(&read),
            read_gbs_median: median(&mut read),
            copy_gbs: best(&copy),
        }
    }

    /// Read twice the LLC's worth of unrelated memory so the next call finds its weights in DRAM.
    fn evict(&mut self) {
        std::hint::black_box(read_all(&self.src[..self.evict_words]));
    }
}

fn read_all(v: &[u64]) -> u64 {
    v.par_chunks(CHUNK_WORDS)
        .map(|c| {
            // Eight independent sums keep the loads in flight (and vectorise).
            let mut acc = [0u64; 8];
            for w in c.chunks_exact(8) {
                for (a, &x) in acc.iter_mut().zip(w) {
                    *a = a.wrapping_add(x);
                }
            }
            acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
        })
        .reduce(|| 0, u64::wrapping_add)
}

/// Size of the last-level cache from sysfs (Linux), else 32 MiB.
fn llc_bytes() -> usize {
    let parse = |s: &str| -> Option<usize> {
        let s = s.trim();
        let (num, mul) = match s.strip_suffix('K') {
            Some(n) => (n, 1 << 10),
            None => match s.strip_suffix('M') {
                Some(n) => (n, 1 << 20),
                None => (s, 1),
            },
        };
        num.parse::<usize>().ok().map(|v| v * mul)
    };
    (0..8)
        .filter_map(|i| {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
            let level = std::fs::read_to_string(format!("{dir}/level")).ok()?;
            let size = std::fs::read_to_string(format!("{dir}/size")).ok()?;
            Some((level.trim().parse::<u32>().ok()?, parse(&size)?))
        })
        .max()
        .map_or(32 << 20, |(_, s)| s)
}

fn print_shape(s: &ShapeReport) {
    println!();
    println!(
        "{} [K={}, N={}]: {}",
        s.name,
        s.k,
        s.n,
        if s.cold {
            "cold (cache evicted before each call: weights come from DRAM)"
        } else {
            "hot (calls back to back: weights stay in cache as far as they fit)"
        }
    );
    println!(
        "  {:<28} {:>3} {:>10} {:>11} {:>7} {:>6} {:>8} {:>9}",
        "kernel", "m", "bytes", "time/call", "GB/s", "of bw", "vs Q4_0", "rel.err"
    );
    for r in &s.rows {
        println!(
            "  {:<28} {:>3} {:>10} {:>11} {:>7.1} {:>5.0}% {:>7.2}x {:>9.2e}",
            r.kernel,
            r.m,
            fmt_bytes(r.bytes),
            fmt_time(r.median_us),
            r.gbs,
            r.frac_bandwidth * 100.0,
            r.speedup_vs_candle_q4_0,
            r.rel_err_vs_f32
        );
    }
}

/// The int4 GEMV of each shape against the two targets: 70% of the measured read bandwidth,
/// 1.2x candle's Q4_0.
fn print_summary(shapes: &[ShapeReport]) {
    println!();
    for s in shapes {
        let Some(r) = s
            .rows
            .iter()
            .find(|r| r.m == 1 && r.kernel.starts_with("relvqa int4"))
        else {
            continue;
        };
        println!(
            "int4 GEMV {:<34} {:>5.1}% of read bandwidth (target 70%), {:.2}x candle Q4_0 \
             (target 1.2x){}",
            s.name,
            r.frac_bandwidth * 100.0,
            r.speedup_vs_candle_q4_0,
            if s.cold {
                ""
            } else {
                "; hot: % of DRAM bandwidth not meaningful"
            }
        );
    }
}

fn fmt_bytes(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

pub(super) fn fmt_time(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.3} ms", us / 1000.0)
    } else {
        format!("{us:.2} µs")
    }
}
