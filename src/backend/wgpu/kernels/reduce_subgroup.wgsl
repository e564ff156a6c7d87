// Workgroup-wide reductions with subgroup operations: each subgroup reduces in registers, then
// the per-subgroup results are combined by one invocation through workgroup memory, three
// barriers in all (a tree over 64 invocations takes seven). The
// drop-in for reduce_workgroup.wgsl (same functions, same contract), used when the device has
// the `subgroups` feature and a subgroup size of at most WG.
//
// The subgroup results are combined in invocation order, each counted once at its subgroup's
// lowest invocation, so the sum does not depend on scheduling: the same inputs give the same
// bits on every run. (No `enable subgroups;`: naga 30 rejects the directive; natively the
// builtins work when the device was created with the feature.)

var<workgroup> red: array<f32, WG>;
var<workgroup> lead: array<u32, WG>;
var<workgroup> red_total: f32;
// Used only by reduce_sum4 (see reduce_workgroup.wgsl on unused workgroup variables).
var<workgroup> red4: array<vec4<f32>, WG>;
var<workgroup> red4_total: vec4<f32>;

fn combine_sum() -> f32 {
    var total = 0.0;
    for (var i = 0u; i < WG; i++) {
        if (lead[i] == 1u) {
            total += red[i];
        }
    }
    return total;
}

fn combine_max() -> f32 {
    // The lowest finite f32, as bits (see softmax_last_f32.wgsl).
    var total = bitcast<f32>(0xff7fffffu);
    for (var i = 0u; i < WG; i++) {
        if (lead[i] == 1u) {
            total = max(total, red[i]);
        }
    }
    return total;
}

fn reduce_sum(lid: u32, x: f32) -> f32 {
    red[lid] = subgroupAdd(x);
    lead[lid] = select(0u, 1u, subgroupMin(lid) == lid);
    workgroupBarrier();
    if (lid == 0u) {
        red_total = combine_sum();
    }
    return broadcast_total();
}

fn reduce_max(lid: u32, x: f32) -> f32 {
    red[lid] = subgroupMax(x);
    lead[lid] = select(0u, 1u, subgroupMin(lid) == lid);
    workgroupBarrier();
    if (lid == 0u) {
        red_total = combine_max();
    }
    return broadcast_total();
}

// One invocation combined the subgroup results; everyone reads them, then the workgroup
// memory is free for the next reduction.
fn broadcast_total() -> f32 {
    workgroupBarrier();
    let total = red_total;
    workgroupBarrier();
    return total;
}

// Four independent sums at once (the multi-row GEMV), combined in invocation order like
// reduce_sum so the result is the same on every run.
fn reduce_sum4(lid: u32, x: vec4<f32>) -> vec4<f32> {
    red4[lid] = subgroupAdd(x);
    lead[lid] = select(0u, 1u, subgroupMin(lid) == lid);
    workgroupBarrier();
    if (lid == 0u) {
        var total = vec4<f32>(0.0);
        for (var i = 0u; i < WG; i++) {
            if (lead[i] == 1u) {
                total += red4[i];
            }
        }
        red4_total = total;
    }
    workgroupBarrier();
    let total = red4_total;
    workgroupBarrier();
    return total;
}
