// The second half of group normalisation, then SiLU if asked: each slice of each group of a contiguous
// [B, C, H, W] map normalised with its group's statistics, combined from the partial statistics that
// `group_norm_statistics.wgsl` wrote (of this map, or of all the bands of a map held in bands).
//
// y = x̂·γ[c] + β[c], x̂ = (x − mean) / √(variance + ε), the mean and (biased, as PyTorch's) variance of the group's
// C/G channels of one batch item; then y·σ(y) where silu ≠ 0. Arithmetic in f32 whatever {{ elem }} is (f32, or
// f16 on adapters with shader-f16); γ and β are f32. The group's partials (n, m, M2) combine pairwise (Chan et al.):
// n = n_a + n_b, δ = m_b − m_a, m = m_a + δ·n_b/n, M2 = M2_a + M2_b + δ²·n_a·n_b/n; variance = M2 / n.
//
// Bindings (all read-write storage buffers, as burn's kernels declare them: tensors share the pool's buffers, and
// one buffer may not be bound both read-only and read-write in a dispatch):
//   0 input     array<{{ elem }}>  the map, B·C·H·W elements
//   1 gamma     array<f32>         C
//   2 beta      array<f32>         C
//   3 partials  array<f32>         (n, m, M2) for each (item, group, partial): P partials per group
//   4 output    array<{{ elem }}>  like input
//   5 params    array<u32>         channels C, groups G, plane H·W, slices S (unused here), chunk, P, silu,
//                                  ε's f32 bits
//
// Workgroups: one per (slice, group, batch item) of this map, dispatched as (S, G, B), of {{ workgroup }}
// invocations; a slice is `chunk` consecutive elements of its group. Each reads its slice once and writes it once.

{{ enable }}

@group(0) @binding(0) var<storage, read_write> input: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<{{ elem }}>;
@group(0) @binding(5) var<storage, read_write> params: array<u32>;

const WORKGROUP: u32 = {{ workgroup }}u;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(workgroup_id) id: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let channels = params[0];
    let groups = params[1];
    let plane = params[2];
    let chunk = params[4];
    let per_group_partials = params[5];
    let then_silu = params[6] != 0u;
    let epsilon = bitcast<f32>(params[7]);

    let slice = id.x;
    let group = id.y;
    let item = id.z;
    let per_group = channels / groups;
    let count = per_group * plane;

    // The group's statistics from its partials (every invocation combines the same few values).
    let first = 3u * (item * groups + group) * per_group_partials;
    var n = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var p = 0u; p < per_group_partials; p = p + 1u) {
        let at = first + 3u * p;
        let n_b = partials[at];
        if n_b == 0.0 {
            continue;
        }
        let total = n + n_b;
        let delta = partials[at + 1u] - mean;
        mean = mean + delta * (n_b / total);
        m2 = m2 + partials[at + 2u] + delta * delta * (n * n_b / total);
        n = total;
    }
    let inv_std = inverseSqrt(m2 / n + epsilon);

    // This slice, channel by channel (no division per element).
    let group_start = (item * channels + group * per_group) * plane;
    let lo = slice * chunk;
    let hi = min(lo + chunk, count);
    for (var c = lo / plane; c * plane < hi; c = c + 1u) {
        let channel = group * per_group + c;
        let scale = gamma[channel] * inv_std;
        let shift = beta[channel];
        let end = min(hi, c * plane + plane);
        for (var i = max(lo, c * plane) + local; i < end; i = i + WORKGROUP) {
            var y = (f32(input[group_start + i]) - mean) * scale + shift;
            if then_silu {
                y = y / (1.0 + exp(min(-y, 80.0)));
            }
            output[group_start + i] = {{ elem }}(y);
        }
    }
}
