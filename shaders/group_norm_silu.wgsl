// Group normalisation of a contiguous [B, C, H, W] map, then SiLU if asked, in one kernel.
//
// y = x̂·γ[c] + β[c], x̂ = (x − mean) / √(variance + ε) over each group of C/G channels of one batch item (the
// biased variance, as PyTorch's); then y·σ(y) where params.silu ≠ 0. Statistics and arithmetic are f32 whatever
// {{ elem }} is (f32, or f16 on adapters with shader-f16); γ and β are f32.
//
// Bindings (all read-write storage buffers, as burn's kernels declare them: tensors share the pool's buffers, and
// one buffer may not be bound both read-only and read-write in a dispatch):
//   0 input       array<{{ elem }}>  the map, B·C·H·W elements
//   1 gamma       array<f32>         C
//   2 beta        array<f32>         C
//   3 statistics  array<f32>         (mean, 1/√(variance + ε)) for each (item, group), item-major, used when
//                                    params.given ≠ 0 (a map held in bands has them from all its bands);
//                                    otherwise a placeholder of one element
//   4 output      array<{{ elem }}>  like input
//   5 params      array<u32>         channels C, groups G, plane H·W, silu, given, ε's f32 bits
//
// Workgroups: one per (group, batch item), dispatched as (G, B, 1), of {{ workgroup }} invocations. Unless the
// statistics are given, each reduces its group twice (the sum, then the squared deviations from the mean: two
// passes, as exact as burn's); then it writes each element once.

{{ enable }}

@group(0) @binding(0) var<storage, read_write> input: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> statistics: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<{{ elem }}>;
@group(0) @binding(5) var<storage, read_write> params: array<u32>;

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
    let then_silu = params[3] != 0u;
    let given = params[4] != 0u;
    let epsilon = bitcast<f32>(params[5]);

    let group = id.x;
    let item = id.y;
    let per_group = channels / groups;
    let count = per_group * plane;
    let start = (item * channels + group * per_group) * plane;

    // The reductions' barriers need uniform control flow, which a value read from a read-write buffer is not:
    // both reductions always run, over nothing when the statistics are given.
    let reduced = select(count, 0u, given);
    var sum = 0.0;
    for (var i = local; i < reduced; i = i + WORKGROUP) {
        sum = sum + f32(input[start + i]);
    }
    var mean = workgroup_sum(sum, local) / f32(count);
    var squares = 0.0;
    for (var i = local; i < reduced; i = i + WORKGROUP) {
        let d = f32(input[start + i]) - mean;
        squares = squares + d * d;
    }
    var inv_std = inverseSqrt(workgroup_sum(squares, local) / f32(count) + epsilon);
    if given {
        let at = 2u * (item * groups + group);
        mean = statistics[at];
        inv_std = statistics[at + 1u];
    }

    for (var i = local; i < count; i = i + WORKGROUP) {
        let channel = group * per_group + i / plane;
        let scale = gamma[channel] * inv_std;
        var y = (f32(input[start + i]) - mean) * scale + beta[channel];
        if then_silu {
            y = y / (1.0 + exp(min(-y, 80.0)));
        }
        output[start + i] = {{ elem }}(y);
    }
}
