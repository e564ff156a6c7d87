// Tiled GEMM with packed int-N weights (the prefill path): y [m, n] = x [m, k] . W^T for a
// packed W [n, k] in the layout of src/quant/packed.rs (see gemv_dequant_f32.wgsl). Each
// workgroup computes a 16 x 16 tile of y; per 32-value block of k it stages 16 rows of x and
// the 16 matching weight rows, dequantized once into workgroup memory as (q - zero) * scale,
// so each weight is unpacked once per tile instead of once per output row.

struct Params {
    n: u32,
    k: u32,
    m: u32,
    group: u32,
}

override BITS: u32;
const T: u32 = 16u;
const KB: u32 = 32u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> words: array<u32>;
@group(0) @binding(2) var<storage, read> scales: array<u32>;
@group(0) @binding(3) var<storage, read> zeros: array<u32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

var<workgroup> tx: array<array<f32, 32>, 16>;
var<workgroup> tw: array<array<f32, 32>, 16>;

fn half_of(word: u32, i: u32) -> f32 {
    return unpack2x16float(word)[i & 1u];
}

// Level of value i (0..32) of block `blk` in weight row `n`; a 3-bit value may straddle words.
fn level(n: u32, blk: u32, i: u32) -> f32 {
    let base = (n * (p.k / KB) + blk) * BITS;
    let bit = i * BITS;
    let wi = base + (bit >> 5u);
    let sh = bit & 31u;
    var q = words[wi] >> sh;
    if (sh + BITS > 32u) {
        q |= words[wi + 1u] << (32u - sh);
    }
    return f32(q & ((1u << BITS) - 1u));
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.y * T + lid.y;
    let col = wid.x * T + lid.x;
    let wrow = wid.x * T + lid.y;
    let gpr = p.k / p.group;
    var acc = 0.0;
    for (var blk = 0u; blk < p.k / KB; blk++) {
        // Each invocation stages two values of x and two dequantized weights.
        for (var h = 0u; h < 2u; h++) {
            let c = lid.x + h * T;
            var xv = 0.0;
            if (row < p.m) {
                xv = x[row * p.k + blk * KB + c];
            }
            tx[lid.y][c] = xv;
            var wv = 0.0;
            if (wrow < p.n) {
                let g = wrow * gpr + (blk * KB) / p.group;
                wv = (level(wrow, blk, c) - half_of(zeros[g >> 1u], g)) * half_of(scales[g >> 1u], g);
            }
            tw[lid.y][c] = wv;
        }
        workgroupBarrier();
        for (var c = 0u; c < KB; c++) {
            acc += tx[lid.y][c] * tw[lid.x][c];
        }
        workgroupBarrier();
    }
    if (row < p.m && col < p.n) {
        y[row * p.n + col] = acc;
    }
}
