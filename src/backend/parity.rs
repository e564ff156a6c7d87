//! Op-by-op parity of a backend against the CPU backend, on seeded random inputs whose shapes
//! are off the tile, workgroup and group sizes. A library function rather than a test so that
//! the same checks run natively (`tests/gpu_backend.rs`, on lavapipe) and in the browser
//! (`RelVqa.gpuSelfTest` in `src/web.rs`, on Chromium's WebGPU): the WGSL kernels are held to
//! the CPU on every adapter the project can reach.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::cpu::CpuBackend;
use super::{causal_mask, Backend, HostTensor};
use crate::error::{Error, Result};
use crate::quant::{Method, PackedTensor, QuantSpec};

/// Tolerance relative to the largest reference value: float reordering only.
pub const TOL: f32 = 1e-4;

/// One op compared: its largest error relative to the reference's scale.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParityCheck {
    pub name: String,
    pub rel_err: f32,
    pub tol: f32,
}

impl ParityCheck {
    pub fn ok(&self) -> bool {
        self.rel_err <= self.tol
    }
}

/// Max |got - want| over max(1, max |want|), or infinity when shapes differ or a value is NaN.
pub fn rel_err(got: &HostTensor, want: &HostTensor) -> f32 {
    if got.shape != want.shape {
        return f32::INFINITY;
    }
    let scale = want.data.iter().fold(1f32, |m, v| m.max(v.abs()));
    let worst = got
        .data
        .iter()
        .zip(&want.data)
        .map(|(g, w)| (g - w).abs())
        .fold(
            0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        );
    worst / scale
}

fn host(rng: &mut ChaCha8Rng, shape: &[usize]) -> Result<HostTensor> {
    let n = shape.iter().product();
    HostTensor::new(
        shape.to_vec(),
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect(),
    )
}

fn packed(
    rng: &mut ChaCha8Rng,
    bits: u32,
    group: usize,
    n: usize,
    k: usize,
) -> Result<PackedTensor> {
    let spec = QuantSpec::new(bits, group)?;
    let max = spec.max_level() as u8;
    let levels: Vec<u8> = (0..n * k).map(|_| rng.random_range(0..=max)).collect();
    let groups = n * k / group;
    let scales = (0..groups)
        .map(|_| half::f16::from_f32(rng.random_range(0.001..0.05)))
        .collect();
    // Real-valued zeros, as HQQ leaves them.
    let zeros = (0..groups)
        .map(|_| half::f16::from_f32(rng.random_range(0.0..max as f32)))
        .collect();
    PackedTensor::from_levels(spec, Method::Hqq, n, k, &levels, scales, zeros)
}

/// Run `f` on both backends with the same inputs.
async fn both<B: Backend>(
    gpu: &B,
    inputs: &[HostTensor],
    f: impl Fn(&dyn Ops<'_>) -> Result<Out>,
) -> Result<(HostTensor, HostTensor)> {
    let cpu = CpuBackend::new();
    let want = run(&cpu, inputs, &f).await?;
    let got = run(gpu, inputs, &f).await?;
    Ok((got, want))
}

/// What an op body may do, object-safe so one closure serves both backends.
trait Ops<'a> {
    fn t(&self, i: usize) -> Out;
    fn call(&self, op: Op<'_>) -> Result<Out>;
}

/// A tensor handle inside [`Ops`]: an index into the runner's list.
#[derive(Debug, Clone, Copy)]
struct Out(usize);

/// The backend ops the checks use, by value so the closures stay backend-agnostic.
enum Op<'a> {
    Permute(Out, &'a [usize]),
    Narrow(Out, usize, usize, usize),
    Cat(&'a [Out], usize),
    Reshape(Out, &'a [usize]),
    Add(Out, Out),
    Sub(Out, Out),
    Mul(Out, Out),
    Scale(Out, f32),
    Matmul(Out, Out),
    Linear(Out, Out, Option<Out>),
    HalfLinear(Out, usize, Option<Out>),
    PackedLinear(Out, &'a PackedTensor, Option<Out>),
    RmsNorm(Out, Out),
    LayerNorm(Out, Out, Out),
    Softmax(Out),
    Gelu(Out),
    GeluErf(Out),
    Silu(Out),
    SiluMul(Out, Out),
    Rope(Out, Out, Out),
    Attention(Out, Out, Out, Option<Out>, f32),
    CacheAppend(Option<Out>, Out, usize),
    Embedding(&'a [u32], Out),
}

struct Runner<'b, B: Backend> {
    b: &'b B,
    inputs: &'b [HostTensor],
    ts: std::cell::RefCell<Vec<B::Tensor>>,
}

impl<B: Backend> Ops<'_> for Runner<'_, B> {
    fn t(&self, i: usize) -> Out {
        Out(i)
    }

    fn call(&self, op: Op<'_>) -> Result<Out> {
        let b = self.b;
        let y = {
            let ts = self.ts.borrow();
            let g = |o: Out| &ts[o.0];
            match op {
                Op::Permute(x, d) => b.permute(g(x), d)?,
                Op::Narrow(x, d, s, l) => b.narrow(g(x), d, s, l)?,
                Op::Cat(xs, d) => b.cat(&xs.iter().map(|&o| g(o)).collect::<Vec<_>>(), d)?,
                Op::Reshape(x, s) => b.reshape(g(x), s)?,
                Op::Add(x, y) => b.add(g(x), g(y))?,
                Op::Sub(x, y) => b.sub(g(x), g(y))?,
                Op::Mul(x, y) => b.mul(g(x), g(y))?,
                Op::Scale(x, s) => b.scale(g(x), s)?,
                Op::Matmul(x, y) => b.matmul(g(x), g(y))?,
                Op::Linear(x, w, bias) => b.linear(g(x), g(w), bias.map(g))?,
                Op::HalfLinear(x, input, bias) => {
                    let w = b.upload_half_weight(&self.inputs[input])?;
                    b.linear(g(x), &w, bias.map(g))?
                }
                Op::PackedLinear(x, p, bias) => {
                    b.linear_packed(g(x), &b.upload_packed(p)?, bias.map(g))?
                }
                Op::RmsNorm(x, w) => b.rms_norm(g(x), g(w), 1e-5)?,
                Op::LayerNorm(x, w, c) => b.layer_norm(g(x), g(w), g(c), 1e-6)?,
                Op::Softmax(x) => b.softmax_last(g(x))?,
                Op::Gelu(x) => b.gelu_tanh(g(x))?,
                Op::GeluErf(x) => b.gelu_erf(g(x))?,
                Op::Silu(x) => b.silu(g(x))?,
                Op::SiluMul(x, y) => b.silu_mul(g(x), g(y))?,
                Op::Rope(x, c, s) => b.rope(g(x), g(c), g(s))?,
                Op::Attention(q, k, v, m, s) => b.attention(g(q), g(k), g(v), m.map(g), s)?,
                Op::CacheAppend(p, n, cap) => b.cache_append(p.map(g), g(n), cap)?,
                Op::Embedding(ids, table) => {
                    let n = ids.len();
                    b.embedding(&b.upload_ids(ids, &[n])?, g(table))?
                }
            }
        };
        let mut ts = self.ts.borrow_mut();
        ts.push(y);
        Ok(Out(ts.len() - 1))
    }
}

async fn run<B: Backend>(
    b: &B,
    inputs: &[HostTensor],
    f: &impl Fn(&dyn Ops<'_>) -> Result<Out>,
) -> Result<HostTensor> {
    let ts = inputs
        .iter()
        .map(|t| b.upload(t))
        .collect::<Result<Vec<_>>>()?;
    let r = Runner {
        b,
        inputs,
        ts: std::cell::RefCell::new(ts),
    };
    let out = f(&r)?;
    let y = r.ts.borrow()[out.0].clone();
    b.read_f32(&y).await
}

/// Every op of the [`Backend`] trait on `gpu` against [`CpuBackend`].
pub async fn op_parity<B: Backend>(gpu: &B) -> Result<Vec<ParityCheck>> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let mut out = Vec::new();
    macro_rules! check {
        ($name:expr, [$($shape:expr),* $(,)?], |$o:ident| $body:expr) => {{
            let inputs = vec![$(host(&mut rng, &$shape)?),*];
            let (got, want) = both(gpu, &inputs, |$o: &dyn Ops<'_>| $body).await?;
            out.push(ParityCheck { name: $name.to_string(), rel_err: rel_err(&got, &want), tol: TOL });
        }};
    }
    let t = |o: &dyn Ops<'_>, i| o.t(i);
    check!("permute 4d", [[2, 3, 5, 7]], |o| o
        .call(Op::Permute(t(o, 0), &[0, 2, 1, 3])));
    check!("permute 6d (patch unfold)", [[2, 3, 2, 5, 2, 3]], |o| o
        .call(Op::Permute(t(o, 0), &[0, 2, 4, 1, 3, 5])));
    check!("narrow", [[3, 11, 5]], |o| o.call(Op::Narrow(
        t(o, 0),
        1,
        4,
        6
    )));
    check!("cat", [[2, 3, 5], [2, 4, 5], [2, 1, 5]], |o| o
        .call(Op::Cat(&[t(o, 0), t(o, 1), t(o, 2)], 1)));
    check!("pixel shuffle (reshape, permute)", [[1, 16, 6]], |o| {
        let x = o.call(Op::Reshape(t(o, 0), &[1, 4, 2, 12]))?;
        let x = o.call(Op::Permute(x, &[0, 2, 1, 3]))?;
        let x = o.call(Op::Reshape(x, &[1, 2, 2, 24]))?;
        o.call(Op::Permute(x, &[0, 2, 1, 3]))
    });
    check!("add (bias broadcast)", [[3, 7, 9], [9]], |o| o
        .call(Op::Add(t(o, 0), t(o, 1))));
    check!("sub (column broadcast)", [[4, 5], [4, 1]], |o| o
        .call(Op::Sub(t(o, 0), t(o, 1))));
    check!("mul (both broadcast)", [[2, 1, 6], [3, 1]], |o| o
        .call(Op::Mul(t(o, 0), t(o, 1))));
    check!("scale", [[1000]], |o| o.call(Op::Scale(t(o, 0), -0.37)));
    check!("batched matmul", [[2, 3, 17, 19], [2, 3, 19, 5]], |o| o
        .call(Op::Matmul(t(o, 0), t(o, 1))));
    for (m, k, n) in [(1, 64, 33), (3, 20, 7), (40, 128, 70)] {
        check!(
            format!("linear m={m} k={k} n={n}"),
            [[1, m, k], [n, k], [n]],
            |o| o.call(Op::Linear(t(o, 0), t(o, 1), Some(t(o, 2))))
        );
    }
    for (m, k, n) in [(1, 64, 37), (1, 20, 9), (7, 48, 30)] {
        // The reference weight is the f16-rounded one the GPU keeps.
        let mut w = host(&mut rng, &[n, k])?;
        for v in &mut w.data {
            *v = half::f16::from_f32(*v).to_f32();
        }
        let inputs = vec![host(&mut rng, &[m, k])?, w];
        let (got, want) = both(gpu, &inputs, |o| o.call(Op::HalfLinear(o.t(0), 1, None))).await?;
        out.push(ParityCheck {
            name: format!("f16-weight linear m={m} k={k} n={n}"),
            rel_err: rel_err(&got, &want),
            tol: TOL,
        });
    }
    for bits in [8u32, 4, 3, 2] {
        for (m, n, k, group) in [(1, 37, 96, 32), (33, 70, 256, 64)] {
            // Reference: the dequantized weight as a dense linear on the CPU (the GPU kernels
            // dequantize exactly; the CPU's packed kernel rounds activations to int8).
            let p = packed(&mut rng, bits, group, n, k)?;
            let inputs = vec![
                host(&mut rng, &[m, k])?,
                HostTensor::new(vec![n, k], p.dequantize())?,
                host(&mut rng, &[n])?,
            ];
            let cpu = CpuBackend::new();
            let want = run(&cpu, &inputs, &|o: &dyn Ops<'_>| {
                o.call(Op::Linear(o.t(0), o.t(1), Some(o.t(2))))
            })
            .await?;
            let got = run(gpu, &inputs, &|o: &dyn Ops<'_>| {
                o.call(Op::PackedLinear(o.t(0), &p, Some(o.t(2))))
            })
            .await?;
            out.push(ParityCheck {
                name: format!("int{bits} packed linear m={m} n={n} k={k} group={group}"),
                rel_err: rel_err(&got, &want),
                tol: TOL,
            });
        }
    }
    check!("rms_norm", [[3, 5, 130], [130]], |o| o
        .call(Op::RmsNorm(t(o, 0), t(o, 1))));
    check!("layer_norm", [[7, 129], [129], [129]], |o| o
        .call(Op::LayerNorm(t(o, 0), t(o, 1), t(o, 2))));
    check!("softmax", [[4, 3, 67]], |o| o.call(Op::Softmax(t(o, 0))));
    check!("gelu_tanh", [[999]], |o| o.call(Op::Gelu(t(o, 0))));
    check!("gelu_erf", [[999]], |o| o.call(Op::GeluErf(t(o, 0))));
    check!("silu", [[3, 333]], |o| o.call(Op::Silu(t(o, 0))));
    check!("silu_mul", [[3, 333], [3, 333]], |o| o
        .call(Op::SiluMul(t(o, 0), t(o, 1))));
    check!("rope", [[1, 3, 9, 16], [9, 8], [9, 8]], |o| o
        .call(Op::Rope(t(o, 0), t(o, 1), t(o, 2))));
    {
        let inputs = vec![
            host(&mut rng, &[1, 4, 5, 12])?,
            host(&mut rng, &[1, 2, 9, 12])?,
            host(&mut rng, &[1, 2, 9, 12])?,
            causal_mask(5, 4),
        ];
        let (got, want) = both(gpu, &inputs, |o| {
            o.call(Op::Attention(o.t(0), o.t(1), o.t(2), Some(o.t(3)), 0.3))
        })
        .await?;
        out.push(ParityCheck {
            name: "attention (grouped-query, causal after 4 cached)".into(),
            rel_err: rel_err(&got, &want),
            tol: TOL,
        });
    }
    {
        // Idefics3's padded images: a key mask per batch row, [b, 1, 1, t], broadcast over heads
        // and queries; and the general per-row [b, 1, s, t]. Every row keeps some keys.
        let (b, s, t) = (2, 5, 9);
        let key_mask = HostTensor::new(
            vec![b, 1, 1, t],
            (0..b * t)
                .map(|i| {
                    if i % t < 6 || i < t {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect(),
        )?;
        let row_mask = HostTensor::new(
            vec![b, 1, s, t],
            (0..b * s * t)
                .map(|i| {
                    if (i * 7) % 5 == 0 || i % t == 0 {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect(),
        )?;
        for (name, mask) in [
            ("attention (key mask per batch row [2, 1, 1, 9])", key_mask),
            ("attention (mask per batch row [2, 1, 5, 9])", row_mask),
        ] {
            let inputs = vec![
                host(&mut rng, &[b, 6, s, 12])?,
                host(&mut rng, &[b, 3, t, 12])?,
                host(&mut rng, &[b, 3, t, 12])?,
                mask,
            ];
            let (got, want) = both(gpu, &inputs, |o| {
                o.call(Op::Attention(o.t(0), o.t(1), o.t(2), Some(o.t(3)), 0.3))
            })
            .await?;
            out.push(ParityCheck {
                name: name.into(),
                rel_err: rel_err(&got, &want),
                tol: TOL,
            });
        }
    }
    check!(
        "attention (70 keys, 2 batches)",
        [[2, 3, 70, 8], [2, 3, 70, 8], [2, 3, 70, 8]],
        |o| o.call(Op::Attention(t(o, 0), t(o, 1), t(o, 2), None, 0.35))
    );
    check!(
        "KV cache append (in place, then grown) + decode attention",
        [[1, 2, 3, 8], [1, 2, 1, 8], [1, 2, 2, 8], [1, 4, 1, 8]],
        |o| {
            // Capacity 4 holds the first two appends; the third grows the cache.
            let mut cache = None;
            for i in 0..3 {
                cache = Some(o.call(Op::CacheAppend(cache, t(o, i), 4))?);
            }
            let kv = cache.ok_or_else(|| Error::Invalid("no cache".into()))?;
            let a = o.call(Op::Attention(t(o, 3), kv, kv, None, 0.5))?;
            let a = o.call(Op::Reshape(a, &[4, 8]))?;
            let kv = o.call(Op::Reshape(kv, &[12, 8]))?;
            o.call(Op::Cat(&[a, kv], 0))
        }
    );
    check!("embedding", [[53, 20]], |o| o
        .call(Op::Embedding(&[0, 52, 7, 7, 30], t(o, 0))));
    Ok(out)
}
