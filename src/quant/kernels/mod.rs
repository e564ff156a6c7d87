//! Fused dequantize-and-multiply for [`PackedTensor`]: `out[m, N] = x[m, K] · Wᵀ` without ever
//! materialising the f32 weight.
//!
//! Each weight row is read once per call as its packed words plus one f16 scale and zero per
//! group. Activations are quantized to int8 per 32 values first ([`act`]), so a block of 32
//! weights is one integer dot product; the zero point is applied exactly per group through the
//! f32 group sums of `x`. The result therefore differs from `dequantize()` then an f32 matmul by
//! the activation rounding alone (see `tests/kernels.rs` for the tolerance).
//!
//! Paths: m == 1 (decode, GEMV) tiles four weight rows so four accumulator chains run at once;
//! m > 1 (prefill, GEMM) decodes each weight block once per tile of four rows of `x`. Natively the
//! output rows are split across the rayon pool; wasm32 runs single-threaded. The ISA is chosen at
//! run time: AVX2+FMA+F16C on x86-64, simd128 on wasm32 when compiled in, else [`scalar`], which
//! is also the reference every SIMD path is tested against.

pub mod act;
#[cfg(target_arch = "x86_64")]
mod avx2;
mod scalar;
pub mod self_test;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;

use std::marker::PhantomData;
use std::ops::Range;

use self::act::{Acts, Order, Scratch};
use super::packed::PackedTensor;
use crate::error::{Error, Result};

/// Which instruction set a call runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Simd128,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Simd128 => "simd128",
        }
    }
}

/// Computes the outputs of weight rows `rows` for every row of `x` into `out`.
type ChunkFn = fn(&PackedTensor, &Acts, Range<usize>, &mut OutCols);

/// A kernel for one bit width: its chunk function and the activation order it reads.
#[derive(Clone, Copy)]
struct Kernel {
    isa: Isa,
    run: ChunkFn,
    order: Order,
}

fn scalar_kernel() -> Kernel {
    Kernel {
        isa: Isa::Scalar,
        run: scalar::chunk,
        order: Order::Natural,
    }
}

/// The fastest kernel this machine has for `bits`.
fn select(bits: u32) -> Kernel {
    #[cfg(target_arch = "x86_64")]
    if let Some((run, order)) = avx2::select(bits) {
        return Kernel {
            isa: Isa::Avx2,
            run,
            order,
        };
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if let Some((run, order)) = simd128::select(bits) {
        return Kernel {
            isa: Isa::Simd128,
            run,
            order,
        };
    }
    let _ = bits;
    scalar_kernel()
}

/// The instruction set [`matmul_packed`] uses for a tensor of `bits` on this machine.
pub fn isa_for(bits: u32) -> Isa {
    select(bits).isa
}

/// `out[m, N] = x[m, K] · Wᵀ` with `W = w.dequantize()` `[N, K]`, on the fastest path available.
pub fn matmul_packed(x: &[f32], m: usize, w: &PackedTensor, out: &mut [f32]) -> Result<()> {
    run(x, m, w, out, select(w.spec.bits))
}

/// [`matmul_packed`] on the portable scalar path: the reference the SIMD paths are tested against.
pub fn matmul_packed_scalar(x: &[f32], m: usize, w: &PackedTensor, out: &mut [f32]) -> Result<()> {
    run(x, m, w, out, scalar_kernel())
}

fn check(x: &[f32], m: usize, w: &PackedTensor, out: &[f32]) -> Result<()> {
    w.validate()?;
    let (n, k) = (w.rows, w.cols);
    if x.len() != m * k || out.len() != m * n {
        return Err(Error::Invalid(format!(
            "matmul_packed: x has {} values and out {} for m = {m} and a [{n}, {k}] weight; \
             expected {} and {}",
            x.len(),
            out.len(),
            m * k,
            m * n
        )));
    }
    Ok(())
}

fn run(x: &[f32], m: usize, w: &PackedTensor, out: &mut [f32], kernel: Kernel) -> Result<()> {
    check(x, m, w, out)?;
    if m == 0 || w.rows == 0 {
        return Ok(());
    }
    thread_local! {
        static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
    }
    SCRATCH.with(|cell| {
        // A nested call on this thread (rayon runs other tasks while it waits) finds the scratch
        // taken and uses a fresh one rather than failing.
        let mut fresh = Scratch::default();
        let mut guard = cell.try_borrow_mut().ok();
        let scratch = guard.as_deref_mut().unwrap_or(&mut fresh);
        let acts = scratch.quantize(x, m, w.cols, w.spec.group, kernel.order);
        drive(w, &acts, out, kernel.run);
    });
    Ok(())
}

/// Multiply-adds below which a call stays on the calling thread: handing work to the pool and
/// waking a worker costs microseconds, as much as a whole default-model matmul.
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_MIN_WORK: usize = 1 << 21;

/// Weight rows per parallel task when a call is worth splitting: about 256K multiply-adds per
/// task so each outweighs rayon's overhead (a few hundred tasks for a 4096 x 11008 GEMV, enough
/// to balance a busy core), a multiple of the four-row GEMV tile.
#[cfg(not(target_arch = "wasm32"))]
fn rows_per_task(n: usize, k: usize, m: usize) -> Option<usize> {
    let rows = (1usize << 18)
        .div_ceil(k * m.clamp(1, 16))
        .max(4)
        .div_ceil(4)
        * 4;
    (n > rows && n * k * m >= PARALLEL_MIN_WORK && rayon::current_num_threads() > 1).then_some(rows)
}

fn drive(w: &PackedTensor, acts: &Acts, out: &mut [f32], chunk: ChunkFn) {
    let n = w.rows;
    let base = OutBase::new(out, acts.m, n);
    #[cfg(not(target_arch = "wasm32"))]
    if let Some(per_task) = rows_per_task(n, w.cols, acts.m) {
        use rayon::prelude::*;
        (0..n.div_ceil(per_task)).into_par_iter().for_each(|t| {
            let rows = t * per_task..((t + 1) * per_task).min(n);
            // SAFETY: task `t` alone covers rows [t*per_task, (t+1)*per_task).
            let mut cols = unsafe { base.cols(rows.clone()) };
            chunk(w, acts, rows, &mut cols);
        });
        return;
    }
    // SAFETY: the only view of `out` while it lives.
    let mut cols = unsafe { base.cols(0..n) };
    chunk(w, acts, 0..n, &mut cols);
}

/// `out` `[m, n]` shared by the tasks of one call, each writing its own columns.
struct OutBase<'a> {
    ptr: *mut f32,
    m: usize,
    n: usize,
    _out: PhantomData<&'a mut [f32]>,
}

// SAFETY: the pointer is only written through `OutCols` views over disjoint column ranges.
unsafe impl Send for OutBase<'_> {}
unsafe impl Sync for OutBase<'_> {}

impl<'a> OutBase<'a> {
    fn new(out: &'a mut [f32], m: usize, n: usize) -> Self {
        debug_assert_eq!(out.len(), m * n);
        Self {
            ptr: out.as_mut_ptr(),
            m,
            n,
            _out: PhantomData,
        }
    }

    /// # Safety
    /// No two live views may share a column.
    unsafe fn cols(&self, cols: Range<usize>) -> OutCols<'a> {
        OutCols {
            ptr: self.ptr,
            m: self.m,
            n: self.n,
            cols,
            _out: PhantomData,
        }
    }
}

/// The columns `cols` of every output row: what one task may write.
pub(crate) struct OutCols<'a> {
    ptr: *mut f32,
    m: usize,
    n: usize,
    cols: Range<usize>,
    _out: PhantomData<&'a mut [f32]>,
}

impl OutCols<'_> {
    /// `out[mi, col] = v`; a write outside this view's columns is dropped (a kernel bug, never
    /// memory corruption).
    #[inline]
    pub(crate) fn set(&mut self, mi: usize, col: usize, v: f32) {
        debug_assert!(mi < self.m && self.cols.contains(&col));
        if mi < self.m && self.cols.contains(&col) {
            // SAFETY: in bounds of the `[m, n]` buffer, and the column belongs to this view alone.
            unsafe { *self.ptr.add(mi * self.n + col) = v };
        }
    }
}
