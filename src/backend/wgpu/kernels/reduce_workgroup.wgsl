// Workgroup-wide reductions that every adapter supports: a tree over workgroup memory,
// log2(WG) barriers. Not a kernel: this file is appended to the source of every kernel that
// reduces (which defines `const WG: u32`, a power of two), unless the device has subgroups,
// where reduce_subgroup.wgsl with the same two functions is appended instead.
// Call from uniform control flow; every invocation receives the result.

var<workgroup> red: array<f32, WG>;
// Only kernels that call reduce_sum4 use this; WGSL counts a workgroup variable against the
// storage limit only in entry points that touch it.
var<workgroup> red4: array<vec4<f32>, WG>;

fn reduce_sum(lid: u32, x: f32) -> f32 {
    red[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    // Everyone has read the result before the next reduction overwrites it.
    workgroupBarrier();
    return total;
}

fn reduce_max(lid: u32, x: f32) -> f32 {
    red[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// Four independent sums at once (the multi-row GEMV: one lane per output row), for the
// barriers of one reduction instead of four.
fn reduce_sum4(lid: u32, x: vec4<f32>) -> vec4<f32> {
    red4[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red4[lid] += red4[lid + s];
        }
        workgroupBarrier();
    }
    let total = red4[0];
    workgroupBarrier();
    return total;
}
