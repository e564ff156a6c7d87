//! Each WGSL kernel against the CPU reference on seeded random inputs, with shapes that are not
//! multiples of the tile, workgroup or group sizes.
//!
//! These tests need a GPU adapter. Without one they FAIL (never skip), so that a CI machine that
//! lost its driver cannot pass silently; without a GPU, `apt-get install mesa-vulkan-drivers`
//! provides lavapipe (Vulkan on the CPU).

mod common;

use common::gpu::{check_tol, gpu, rand_vec, random_packed};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use relvqa::backend::cpu::CpuBackend;
use relvqa::backend::wgpu::kernels;
use relvqa::backend::{Backend, HostTensor};
use relvqa::{Error, GpuErrorKind};

const TOL: f32 = 1e-4;

fn check(name: &str, got: &[f32], want: &[f32]) {
    check_tol(name, got, want, TOL);
}

fn cpu_op(
    shape: &[usize],
    data: &[f32],
    f: impl Fn(
        &CpuBackend,
        &<CpuBackend as Backend>::Tensor,
    ) -> relvqa::Result<<CpuBackend as Backend>::Tensor>,
) -> Vec<f32> {
    let cpu = CpuBackend::new();
    let t = cpu
        .upload(&HostTensor::new(shape.to_vec(), data.to_vec()).expect("host tensor"))
        .expect("cpu upload");
    let y = f(&cpu, &t).expect("cpu op");
    pollster::block_on(cpu.read_f32(&y)).expect("cpu read").data
}

/// Plain `x [m, k] · Wᵀ` in f64 from the dequantized reference weight.
fn reference_linear(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                .sum();
            y[i * n + j] = s as f32;
        }
    }
    y
}

#[test]
fn adapter_is_present_and_reports_limits() {
    let ctx = gpu();
    let info = ctx.info();
    println!(
        "adapter {} ({}), software {}, shader-f16 {}, subgroups {}, max storage binding {}",
        info.adapter,
        info.backend,
        info.is_software,
        info.shader_f16,
        info.subgroups,
        info.limits.max_storage_buffer_binding_size
    );
    assert!(info.limits.max_compute_invocations_per_workgroup >= 256);
}

#[test]
fn gemv_dequant_matches_dequantize_then_matmul() {
    let ctx = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // (bits, group, n, k, m): odd row counts, K of 32 * odd (3-bit and 2-bit rows then start
    // off a 16-byte boundary), several input rows.
    let cases = [
        (8, 32, 37, 96, 1),
        (4, 64, 129, 320, 2),
        (4, 128, 3, 1152, 1),
        (3, 32, 67, 160, 3),
        (3, 64, 50, 448, 1),
        (2, 32, 41, 224, 2),
        (2, 128, 5, 384, 1),
    ];
    for (bits, group, n, k, m) in cases {
        let w = random_packed(&mut rng, bits, group, n, k);
        let x = rand_vec(&mut rng, m * k, -1.0, 1.0);
        let gw = kernels::GpuPacked::upload(&ctx, &w).expect("upload packed");
        let gx = ctx.upload_f32("x", &x).expect("upload x");
        let y = kernels::gemv_dequant(&ctx, &gx, m, &gw).expect("gemv");
        let got = pollster::block_on(ctx.read_f32(&y)).expect("read");
        let want = reference_linear(&x, &w.dequantize(), m, n, k);
        check(
            &format!("gemv {bits}-bit g{group} [{m}x{k}]·[{n}x{k}]ᵀ"),
            &got,
            &want,
        );
    }
}

#[test]
fn matmul_matches_cpu() {
    let ctx = gpu();
    let cpu = CpuBackend::new();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (batch, m, k, n) in [
        (1, 1, 1, 1),
        (1, 17, 33, 19),
        (3, 45, 70, 29),
        (2, 64, 16, 48),
    ] {
        let a = rand_vec(&mut rng, batch * m * k, -1.0, 1.0);
        let b = rand_vec(&mut rng, batch * k * n, -1.0, 1.0);
        let ga = ctx.upload_f32("a", &a).expect("upload a");
        let gb = ctx.upload_f32("b", &b).expect("upload b");
        let shape = kernels::MatmulShape {
            batch,
            m,
            n,
            k,
            b_trans: false,
            b_batched: true,
            b_f16: false,
        };
        let c = kernels::matmul(&ctx, &ga, &gb, shape).expect("matmul");
        let got = pollster::block_on(ctx.read_f32(&c)).expect("read");
        let ta = cpu
            .upload(&HostTensor::new(vec![batch, m, k], a.clone()).expect("a"))
            .expect("cpu a");
        let tb = cpu
            .upload(&HostTensor::new(vec![batch, k, n], b.clone()).expect("b"))
            .expect("cpu b");
        let want = pollster::block_on(cpu.read_f32(&cpu.matmul(&ta, &tb).expect("cpu matmul")))
            .expect("cpu read")
            .data;
        check(
            &format!("matmul [{batch}, {m}, {k}]·[{k}, {n}]"),
            &got,
            &want,
        );
    }
}

#[test]
fn matmul_with_shared_transposed_weight_is_a_linear_layer() {
    let ctx = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let (batch, m, k, n) = (2, 23, 50, 37);
    let x = rand_vec(&mut rng, batch * m * k, -1.0, 1.0);
    let w = rand_vec(&mut rng, n * k, -1.0, 1.0);
    let gx = ctx.upload_f32("x", &x).expect("upload x");
    let gw = ctx.upload_f32("w", &w).expect("upload w");
    let shape = kernels::MatmulShape {
        batch,
        m,
        n,
        k,
        b_trans: true,
        b_batched: false,
        b_f16: false,
    };
    let y = kernels::matmul(&ctx, &gx, &gw, shape).expect("matmul");
    let got = pollster::block_on(ctx.read_f32(&y)).expect("read");
    let want = reference_linear(&x, &w, batch * m, n, k);
    check("linear [2, 23, 50]·[37, 50]ᵀ", &got, &want);
}

#[test]
fn rms_norm_matches_cpu() {
    let ctx = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    for (rows, d) in [(1, 1), (5, 67), (33, 576), (2, 1000)] {
        let x = rand_vec(&mut rng, rows * d, -3.0, 3.0);
        let w = rand_vec(&mut rng, d, 0.5, 1.5);
        let gx = ctx.upload_f32("x", &x).expect("upload x");
        let gw = ctx.upload_f32("w", &w).expect("upload w");
        let y = kernels::rms_norm(&ctx, &gx, &gw, rows, d, 1e-5).expect("rms_norm");
        let got = pollster::block_on(ctx.read_f32(&y)).expect("read");
        let wt = HostTensor::new(vec![d], w.clone()).expect("w");
        let want = cpu_op(&[rows, d], &x, |c, t| {
            let w = c.upload(&wt)?;
            c.rms_norm(t, &w, 1e-5)
        });
        check(&format!("rms_norm [{rows}, {d}]"), &got, &want);
    }
}

#[test]
fn softmax_matches_cpu() {
    let ctx = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    for (rows, d) in [(1, 1), (7, 65), (40, 129), (3, 2049)] {
        // Wide range: the max subtraction must keep exp in range.
        let x = rand_vec(&mut rng, rows * d, -30.0, 30.0);
        let gx = ctx.upload_f32("x", &x).expect("upload x");
        let y = kernels::softmax_last(&ctx, &gx, rows, d).expect("softmax");
        let got = pollster::block_on(ctx.read_f32(&y)).expect("read");
        let want = cpu_op(&[rows, d], &x, |c, t| c.softmax_last(t));
        check(&format!("softmax [{rows}, {d}]"), &got, &want);
    }
}

#[test]
fn silu_mul_matches_cpu() {
    let ctx = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    for len in [1, 255, 257, 10_001] {
        let a = rand_vec(&mut rng, len, -8.0, 8.0);
        let b = rand_vec(&mut rng, len, -2.0, 2.0);
        let ga = ctx.upload_f32("a", &a).expect("upload a");
        let gb = ctx.upload_f32("b", &b).expect("upload b");
        let y = kernels::silu_mul(&ctx, &ga, &gb, len).expect("silu_mul");
        let got = pollster::block_on(ctx.read_f32(&y)).expect("read");
        let bt = HostTensor::new(vec![len], b.clone()).expect("b");
        let want = cpu_op(&[len], &a, |c, t| {
            let b = c.upload(&bt)?;
            c.mul(&c.silu(t)?, &b)
        });
        check(&format!("silu_mul [{len}]"), &got, &want);
    }
}

#[test]
fn shape_errors_are_values_not_panics() {
    let ctx = gpu();
    let x = ctx.upload_f32("x", &[1.0; 10]).expect("upload");
    let e = kernels::softmax_last(&ctx, &x, 3, 4).expect_err("10 values cannot be [3, 4]");
    assert!(e.to_string().contains("needs 12"), "{e}");
    let e = kernels::softmax_last(&ctx, &x, 0, 4).expect_err("empty");
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
fn more_rows_than_one_grid_dimension_holds() {
    // 65535 workgroups per dimension is WebGPU's default limit; rows past it go to `y`.
    let ctx = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    let rows = ctx.limits().max_compute_workgroups_per_dimension as usize + 465;
    let (n, k) = (rows, 32);
    let w = random_packed(&mut rng, 2, 32, n, k);
    let x = rand_vec(&mut rng, k, -1.0, 1.0);
    let gw = kernels::GpuPacked::upload(&ctx, &w).expect("upload packed");
    let gx = ctx.upload_f32("x", &x).expect("upload x");
    let y = kernels::gemv_dequant(&ctx, &gx, 1, &gw).expect("gemv");
    let got = pollster::block_on(ctx.read_f32(&y)).expect("read");
    check(
        &format!("gemv 2-bit n = {n}"),
        &got,
        &reference_linear(&x, &w.dequantize(), 1, n, k),
    );

    let d = 3;
    let x = rand_vec(&mut rng, rows * d, -5.0, 5.0);
    let gx = ctx.upload_f32("x", &x).expect("upload x");
    let y = kernels::softmax_last(&ctx, &gx, rows, d).expect("softmax");
    let got = pollster::block_on(ctx.read_f32(&y)).expect("read");
    let want = cpu_op(&[rows, d], &x, |c, t| c.softmax_last(t));
    check(&format!("softmax rows = {rows}"), &got, &want);
}

#[test]
fn a_lost_device_is_a_typed_error() {
    let ctx = gpu();
    let x = ctx.upload_f32("x", &[1.0, 2.0]).expect("upload");
    ctx.destroy();
    let r =
        kernels::softmax_last(&ctx, &x, 1, 2).and_then(|y| pollster::block_on(ctx.read_f32(&y)));
    match r {
        Err(Error::Gpu {
            kind: GpuErrorKind::DeviceLost,
            ..
        }) => {}
        other => panic!("expected a DeviceLost error, got {other:?}"),
    }
}

#[test]
fn layer_norm_matches_cpu() {
    let ctx = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    for (rows, d) in [(1, 1), (6, 67), (17, 768), (2, 1001)] {
        // An offset mean: a one-pass variance would lose digits here.
        let x = rand_vec(&mut rng, rows * d, 2.0, 8.0);
        let w = rand_vec(&mut rng, d, 0.5, 1.5);
        let b = rand_vec(&mut rng, d, -0.5, 0.5);
        let gx = ctx.upload_f32("x", &x).expect("upload x");
        let gw = ctx.upload_f32("w", &w).expect("upload w");
        let gb = ctx.upload_f32("b", &b).expect("upload b");
        let y = kernels::layer_norm(&ctx, &gx, &gw, &gb, rows, d, 1e-6).expect("layer_norm");
        let got = pollster::block_on(ctx.read_f32(&y)).expect("read");
        let wt = HostTensor::new(vec![d], w.clone()).expect("w");
        let bt = HostTensor::new(vec![d], b.clone()).expect("b");
        let want = cpu_op(&[rows, d], &x, |c, t| {
            c.layer_norm(t, &c.upload(&wt)?, &c.upload(&bt)?, 1e-6)
        });
        check(&format!("layer_norm [{rows}, {d}]"), &got, &want);
    }
}

#[test]
fn gelu_tanh_matches_cpu() {
    let ctx = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    for len in [1, 255, 257, 10_001] {
        // Past +-10 the tanh argument saturates: the clamp must not change the result.
        let x = rand_vec(&mut rng, len, -40.0, 40.0);
        let gx = ctx.upload_f32("x", &x).expect("upload x");
        let y = kernels::gelu_tanh(&ctx, &gx, len).expect("gelu");
        let got = pollster::block_on(ctx.read_f32(&y)).expect("read");
        let want = cpu_op(&[len], &x, |c, t| c.gelu_tanh(t));
        check(&format!("gelu_tanh [{len}]"), &got, &want);
    }
}

#[test]
fn gelu_erf_matches_cpu() {
    let ctx = gpu();
    let mut rng = ChaCha8Rng::seed_from_u64(19);
    for len in [1, 255, 257, 10_001] {
        // Both tails: erf saturates to +-1 and the kernel's exp must not overflow.
        let x = rand_vec(&mut rng, len, -40.0, 40.0);
        let gx = ctx.upload_f32("x", &x).expect("upload x");
        let y = kernels::gelu_erf(&ctx, &gx, len).expect("gelu_erf");
        let got = pollster::block_on(ctx.read_f32(&y)).expect("read");
        let want = cpu_op(&[len], &x, |c, t| c.gelu_erf(t));
        check(&format!("gelu_erf [{len}]"), &got, &want);
    }
}
