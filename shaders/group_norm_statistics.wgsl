// The first half of group normalisation: the statistics of each slice of each group of a contiguous [B, C, H, W]
// map, for `group_norm_silu.wgsl` to combine.
//
// A group (C/G channels of one batch item, count = C/G·H·W elements in a row) is cut into slices of `chunk`
// consecutive elements (the last may be shorter, none is empty). For each slice the kernel writes its element
// count n, its mean m and M2 = Σ(x − m)², in f32 whatever {{ elem }} is, from which the group's mean and variance
// follow exactly (Chan et al.'s pairwise combination). One pass: each invocation keeps Welford's running (n, m, M2)
// of the elements it reads, and the workgroup combines them pairwise; nothing large cancels. Slicing lets a large group
// spread over many workgroups, as a GPU needs; a map held in bands has each band's slices computed separately and
// combined all together.
//
// Bindings (all read-write storage buffers, as burn's kernels declare them: tensors share the pool's buffers, and
// one buffer may not be bound both read-only and read-write in a dispatch):
//   0 input     array<{{ elem }}>  the map, B·C·H·W elements
//   1 partials  array<f32>         (n, m, M2) for each (item, group, slice), in that order
//   2 params    array<u32>         channels C, groups G, plane H·W, slices S, chunk
//
// Workgroups: one per (slice, group, batch item), dispatched as (S, G, B), of {{ workgroup }} invocations; each
// reads its slice once.

{{ enable }}

@group(0) @binding(0) var<storage, read_write> input: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;

const WORKGROUP: u32 = {{ workgroup }}u;

var<workgroup> partial: array<vec3<f32>, WORKGROUP>;

// Two sets' (n, m, M2) as one (Chan et al.); empty sets are allowed.
fn combine(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    let n = a.x + b.x;
    if n == 0.0 {
        return a;
    }
    let delta = b.y - a.y;
    return vec3<f32>(n, a.y + delta * (b.x / n), a.z + b.z + delta * delta * (a.x * b.x / n));
}

// The workgroup's invocations' (n, m, M2) combined (a tree in workgroup memory).
fn workgroup_combine(value: vec3<f32>, local: u32) -> vec3<f32> {
    partial[local] = value;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride = stride / 2u) {
        if local < stride {
            partial[local] = combine(partial[local], partial[local + stride]);
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

    // Welford over this invocation's elements.
    var own = vec3<f32>(0.0, 0.0, 0.0);
    for (var i = lo + local; i < hi; i = i + WORKGROUP) {
        let x = f32(input[i]);
        own.x = own.x + 1.0;
        let delta = x - own.y;
        own.y = own.y + delta / own.x;
        own.z = own.z + delta * (x - own.y);
    }
    let total = workgroup_combine(own, local);

    if local == 0u {
        let at = 3u * ((item * groups + group) * slices + slice);
        partials[at] = total.x;
        partials[at + 1u] = total.y;
        partials[at + 2u] = total.z;
    }
}
