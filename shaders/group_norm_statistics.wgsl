// The first half of group normalisation: the statistics of each slice of each group of a contiguous [B, C, H, W]
// map, for `group_norm_silu.wgsl` to combine.
//
// A group (C/G channels of one batch item, count = C/G·H·W elements in a row) is cut into slices of `chunk`
// consecutive elements (the last may be shorter, none is empty). For each slice the kernel writes its element
// count n, its mean m and M2 = Σ(x − m)² (two passes over the slice, in f32 whatever {{ elem }} is), from which
// the group's mean and variance follow exactly (Chan et al.'s pairwise combination). Slicing lets a large group
// spread over many workgroups, as a GPU needs; a map held in bands has each band's slices computed separately and
// combined all together.
//
// Bindings (all read-write storage buffers, as burn's kernels declare them: tensors share the pool's buffers, and
// one buffer may not be bound both read-only and read-write in a dispatch):
//   0 input     array<{{ elem }}>  the map, B·C·H·W elements
//   1 partials  array<f32>         (n, m, M2) for each (item, group, slice), in that order
//   2 params    array<u32>         channels C, groups G, plane H·W, slices S, chunk
//
// Workgroups: one per (slice, group, batch item), dispatched as (S, G, B), of {{ workgroup }} invocations.

{{ enable }}

@group(0) @binding(0) var<storage, read_write> input: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;

const WORKGROUP: u32 = {{ workgroup }}u;

var<workgroup> partial: array<f32, WORKGROUP>;

// The sum of `value` over the workgroup's invocations (a tree in workgroup memory).
fn workgroup_sum(value: f32, local: u32) -> f32 {
    partial[local] = value;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride = stride / 2u) {
        if local < stride {
            partial[local] = partial[local] + partial[local + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(workgroup_id) id: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let channels = params[0];
    let groups = params[1];
    let plane = params[2];
    let slices = params[3];
    let chunk = params[4];

    let slice = id.x;
    let group = id.y;
    let item = id.z;
    let count = channels / groups * plane;
    let group_start = (item * channels + group * (channels / groups)) * plane;
    let lo = group_start + slice * chunk;
    let hi = group_start + min(slice * chunk + chunk, count);
    let n = f32(hi - lo);

    var sum = 0.0;
    for (var i = lo + local; i < hi; i = i + WORKGROUP) {
        sum = sum + f32(input[i]);
    }
    let mean = workgroup_sum(sum, local) / n;
    var squares = 0.0;
    for (var i = lo + local; i < hi; i = i + WORKGROUP) {
        let d = f32(input[i]) - mean;
        squares = squares + d * d;
    }
    let m2 = workgroup_sum(squares, local);

    if local == 0u {
        let at = 3u * ((item * groups + group) * slices + slice);
        partials[at] = n;
        partials[at + 1u] = mean;
        partials[at + 2u] = m2;
    }
}
