//! The CPU backend's ops and the model's layout code against plain loops.

use relvqa::backend::cpu::CpuBackend;
use relvqa::backend::{causal_mask, Backend, HostTensor};
use relvqa::model::idefics3::connector::Connector;
use relvqa::model::linear::{Linear, Weight};

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn host(shape: &[usize], seed: u64) -> HostTensor {
    let n = shape.iter().product();
    HostTensor::new(shape.to_vec(), rand_vec(n, seed)).unwrap()
}

fn read(b: &CpuBackend, t: &candle_core::Tensor) -> Vec<f32> {
    pollster::block_on(b.read_f32(t)).unwrap().data
}

fn close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "index {i}: {x} vs {y}");
    }
}

#[test]
fn rope_matches_rotate_half_formula() {
    let b = CpuBackend::new();
    let (bs, h, s, d) = (1, 2, 3, 8);
    let x = host(&[bs, h, s, d], 1);
    let cos = host(&[s, d / 2], 2);
    let sin = host(&[s, d / 2], 3);
    let out = read(
        &b,
        &b.rope(
            &b.upload(&x).unwrap(),
            &b.upload(&cos).unwrap(),
            &b.upload(&sin).unwrap(),
        )
        .unwrap(),
    );
    let mut want = vec![0f32; x.data.len()];
    for hh in 0..h {
        for p in 0..s {
            let base = (hh * s + p) * d;
            for i in 0..d {
                let j = i % (d / 2);
                let (c, sn) = (cos.data[p * d / 2 + j], sin.data[p * d / 2 + j]);
                let rot = if i < d / 2 {
                    -x.data[base + i + d / 2]
                } else {
                    x.data[base + i - d / 2]
                };
                want[base + i] = x.data[base + i] * c + rot * sn;
            }
        }
    }
    close(&out, &want, 1e-5);
}

#[test]
fn attention_with_causal_mask_matches_loops() {
    let b = CpuBackend::new();
    let (h, s, d) = (2, 4, 3);
    let q = host(&[1, h, s, d], 4);
    let k = host(&[1, h, s, d], 5);
    let v = host(&[1, h, s, d], 6);
    let m = causal_mask(s, 0);
    let t = |x: &HostTensor| b.upload(x).unwrap();
    let out = read(
        &b,
        &b.attention(&t(&q), &t(&k), &t(&v), Some(&t(&m)), 0.5)
            .unwrap(),
    );
    let mut want = vec![0f32; h * s * d];
    for hh in 0..h {
        for i in 0..s {
            let scores: Vec<f32> = (0..=i)
                .map(|j| {
                    (0..d)
                        .map(|c| q.data[(hh * s + i) * d + c] * k.data[(hh * s + j) * d + c])
                        .sum::<f32>()
                        * 0.5
                })
                .collect();
            let mx = scores.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = scores.iter().map(|x| (x - mx).exp()).collect();
            let z: f32 = e.iter().sum();
            for c in 0..d {
                want[(hh * s + i) * d + c] = (0..=i)
                    .map(|j| e[j] / z * v.data[(hh * s + j) * d + c])
                    .sum();
            }
        }
    }
    close(&out, &want, 1e-5);
}

#[test]
fn causal_mask_with_past_lets_queries_see_the_cache() {
    let m = causal_mask(2, 3);
    assert_eq!(m.shape, vec![2, 5]);
    assert!(m.data[..4].iter().all(|x| *x == 0.0) && m.data[4] == f32::NEG_INFINITY);
    assert!(m.data[5..].iter().all(|x| *x == 0.0));
}

#[test]
fn repeat_kv_repeats_each_head_in_place() {
    let b = CpuBackend::new();
    let x = host(&[1, 2, 3, 2], 7);
    let out = read(&b, &b.repeat_kv(&b.upload(&x).unwrap(), 3).unwrap());
    for head in 0..6 {
        let src = head / 3;
        close(
            &out[head * 6..head * 6 + 6],
            &x.data[src * 6..src * 6 + 6],
            0.0,
        );
    }
}

/// Pixel shuffle as index arithmetic: output token (i, j) of the (side/s)² grid, channel block
/// (a, b) holds input token (i·s + b, j·s + a)... derived from transformers' reshape sequence.
#[test]
fn pixel_shuffle_matches_transformers_index_map() {
    let b = CpuBackend::new();
    let (side, d, s) = (4, 3, 2);
    let x = host(&[1, side * side, d], 8);
    let proj = Linear::<CpuBackend> {
        name: "proj".into(),
        weight: Weight::Dense(
            b.upload(&HostTensor::new(vec![1, d * s * s], vec![0.0; d * s * s]).unwrap())
                .unwrap(),
        ),
        bias: None,
        in_features: d * s * s,
        out_features: 1,
    };
    let conn = Connector::from_parts(s, proj);
    let out = read(&b, &conn.pixel_shuffle(&b, &b.upload(&x).unwrap()).unwrap());
    // Replay the numpy-style reshapes on indices: view(h, w/s, d·s) -> permute -> ...
    let g = side / s;
    let mut want = vec![0f32; side * side * d];
    for oi in 0..g {
        for oj in 0..g {
            for c in 0..d * s * s {
                // After the final permute, (oi, oj) comes from (oj, oi) of [w/s, h/s, d·s²], which
                // is rows (oi·s + c / (d·s)) of the [w/s, h, d·s] tensor at column block oj.
                let row = oi * s + c / (d * s);
                let within = c % (d * s);
                let col = oj * s + within / d;
                let ch = within % d;
                want[(oi * g + oj) * d * s * s + c] = x.data[(row * side + col) * d + ch];
            }
        }
    }
    close(&out, &want, 0.0);
}

#[test]
fn linear_applies_pytorch_layout_and_bias() {
    let b = CpuBackend::new();
    let x = host(&[2, 3], 9);
    let w = host(&[4, 3], 10);
    let bias = host(&[4], 11);
    let out = read(
        &b,
        &b.linear(
            &b.upload(&x).unwrap(),
            &b.upload(&w).unwrap(),
            Some(&b.upload(&bias).unwrap()),
        )
        .unwrap(),
    );
    for r in 0..2 {
        for o in 0..4 {
            let want: f32 = (0..3)
                .map(|i| x.data[r * 3 + i] * w.data[o * 3 + i])
                .sum::<f32>()
                + bias.data[o];
            assert!((out[r * 4 + o] - want).abs() < 1e-5);
        }
    }
}

#[test]
fn norms_match_formulas() {
    let b = CpuBackend::new();
    let x = host(&[2, 5], 12);
    let w = host(&[5], 13);
    let bias = host(&[5], 14);
    let rms = read(
        &b,
        &b.rms_norm(&b.upload(&x).unwrap(), &b.upload(&w).unwrap(), 1e-5)
            .unwrap(),
    );
    let ln = read(
        &b,
        &b.layer_norm(
            &b.upload(&x).unwrap(),
            &b.upload(&w).unwrap(),
            &b.upload(&bias).unwrap(),
            1e-6,
        )
        .unwrap(),
    );
    for r in 0..2 {
        let row = &x.data[r * 5..r * 5 + 5];
        let ms = row.iter().map(|v| v * v).sum::<f32>() / 5.0;
        let mean = row.iter().sum::<f32>() / 5.0;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 5.0;
        for i in 0..5 {
            assert!((rms[r * 5 + i] - row[i] / (ms + 1e-5).sqrt() * w.data[i]).abs() < 1e-5);
            assert!(
                (ln[r * 5 + i]
                    - ((row[i] - mean) / (var + 1e-6).sqrt() * w.data[i] + bias.data[i]))
                    .abs()
                    < 1e-5
            );
        }
    }
}

#[test]
fn gelu_is_the_tanh_approximation() {
    let b = CpuBackend::new();
    let x = host(&[7], 15);
    let out = read(&b, &b.gelu_tanh(&b.upload(&x).unwrap()).unwrap());
    for (o, v) in out.iter().zip(&x.data) {
        let want = 0.5
            * v
            * (1.0 + ((2.0f32 / std::f32::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh());
        assert!((o - want).abs() < 1e-5);
    }
}

/// A packed weight through `Linear` (the fused CPU kernel) equals the dense layer holding its
/// dequantized values, for every width, with a bias and a batch of rows.
#[test]
fn packed_linear_matches_dense_linear_of_its_dequantized_weight() {
    use relvqa::quant::{rtn, QuantSpec};
    let b = CpuBackend::new();
    let (rows, cols) = (24, 128);
    let w = rand_vec(rows * cols, 11);
    let bias = b
        .upload(&HostTensor::new(vec![rows], rand_vec(rows, 12)).unwrap())
        .unwrap();
    let x = b.upload(&host(&[2, 3, cols], 13)).unwrap();
    for bits in [8, 4, 3, 2] {
        let p = rtn::quantize("w", &w, rows, cols, QuantSpec::new(bits, 32).unwrap()).unwrap();
        let dense = b
            .upload(&HostTensor::new(vec![rows, cols], p.dequantize()).unwrap())
            .unwrap();
        let layer = |weight| Linear::<CpuBackend> {
            name: "l".into(),
            weight,
            bias: Some(bias.clone()),
            in_features: cols,
            out_features: rows,
        };
        let want = read(&b, &layer(Weight::Dense(dense)).forward(&b, &x).unwrap());
        let got_t = layer(Weight::Packed(b.upload_packed(&p).unwrap()))
            .forward(&b, &x)
            .unwrap();
        assert_eq!(b.shape(&got_t), vec![2, 3, rows]);
        let got = read(&b, &got_t);
        // The kernel rounds activations to int8 per 32 values (as llama.cpp's Q4_0 path does).
        let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 0.02 * scale, "{bits}-bit: {g} vs {w}");
        }
    }
}
