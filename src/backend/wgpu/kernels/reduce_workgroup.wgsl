// Workgroup-wide reductions that every adapter supports: a tree over workgroup memory,
// log2(WG) barriers. Not a kernel: this file is appended to the source of every kernel that
// reduces (which defines `const WG: u32`, a power of two), unless the device has subgroups,
// where reduce_subgroup.wgsl with the same two functions is appended instead.
// Call from uniform control flow; every invocation receives the result.

var<workgroup> red: array<f32, WG>;

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
