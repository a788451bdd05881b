//! Multi-head attention as diffusers' `Attention` (UNet self/cross attention, VAE mid-block attention).

use std::ops::Range;

use burn::module::Module;
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Device, FloatDType, Tensor};

use crate::hook::{AttentionHook, AttentionPlace};
use crate::profile::{self, Op};

/// The most bytes one score block `[B, H, rows, Lk]` may take. Real WebGPU adapters (and lavapipe) bind at
/// most 128 MiB per buffer; half of that leaves room for the softmax's temporaries.
pub const SCORE_BLOCK_BYTES: usize = 64 << 20;

/// `softmax(q·kᵀ/√d)·v` over `[B, H, L, D]` tensors, in blocks of query rows so that no score tensor
/// exceeds [`SCORE_BLOCK_BYTES`]. Rows are independent, so the blocks give the unblocked result exactly.
/// Causal attention (CLIP's 77 tokens, far under the budget) runs in one block.
/// On flex (f32, not causal) our own kernel computes it instead ([`cpu`]); in f16 the softmax is taken in f32
/// (as in [`hooked_attention`]).
pub fn blocked_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, causal: bool) -> Tensor<4> {
    #[cfg(not(target_family = "wasm"))]
    if !causal && cpu::handles(&q, &k, &v) {
        return cpu::attention(q, k, v);
    }
    if q.dtype() != DType::F32 {
        return softmax_attention(q, k, v, causal, &|_, probabilities| probabilities);
    }
    let lq = q.dims()[2];
    let options = AttentionModuleOptions { is_causal: causal, ..Default::default() };
    let rows = block_rows(&q, &k);
    if rows >= lq || causal {
        return attention(q, k, v, None, None, options);
    }
    let blocks = (0..lq)
        .step_by(rows)
        .map(|start| {
            let len = rows.min(lq - start);
            attention(q.clone().narrow(2, start, len), k.clone(), v.clone(), None, None, options)
        })
        .collect();
    Tensor::cat(blocks, 2)
}

/// Query rows per block so that a score block `[B, H, rows, Lk]` stays within [`SCORE_BLOCK_BYTES`].
fn block_rows(q: &Tensor<4>, k: &Tensor<4>) -> usize {
    let [b, h, _, _] = q.dims();
    let lk = k.dims()[2];
    (SCORE_BLOCK_BYTES / (b * h * lk * size_of::<f32>()).max(1)).max(1)
}

/// [`blocked_attention`] with the probabilities made explicit, so that `hook` can read or replace each block of
/// them before they weigh the values.
pub fn hooked_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    hook: &dyn AttentionHook,
    place: &AttentionPlace,
) -> Tensor<4> {
    softmax_attention(q, k, v, false, &|rows, probabilities| hook.edit(place, rows, probabilities))
}

/// Attention in blocks of query rows with the probabilities computed in f32 (whatever the type of `q`, `k`, `v`),
/// handed to `edit` (with the block's query rows), then cast back to weigh the values.
fn softmax_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    causal: bool,
    edit: &dyn Fn(Range<usize>, Tensor<4>) -> Tensor<4>,
) -> Tensor<4> {
    let [.., lq, d] = q.dims();
    let lk = k.dims()[2];
    let rows = block_rows(&q, &k);
    // Scaled before the product, so that half-precision scores stay far from f16's largest value.
    let q = q.mul_scalar(1.0 / (d as f64).sqrt());
    let keys = k.swap_dims(2, 3);
    let blocks = (0..lq)
        .step_by(rows)
        .map(|start| {
            let len = rows.min(lq - start);
            let mut scores = q.clone().narrow(2, start, len).matmul(keys.clone()).cast(FloatDType::F32);
            if causal {
                // Query row `start + i` sees keys up to itself.
                let later = Tensor::<2, Bool>::tril_mask([len, lk], start as i64, &scores.device());
                scores = scores.mask_fill(later.unsqueeze::<4>(), f32::NEG_INFINITY);
            }
            let probabilities = edit(start..start + len, softmax(scores, 3));
            probabilities.cast(FloatDType::from(v.dtype())).matmul(v.clone())
        })
        .collect();
    Tensor::cat(blocks, 2)
}

/// diffusers' `Attention` (also CLIP's, causal): query from `x`, key and value from `context` (or `x`), `heads`
/// heads, output projection.
#[derive(Module, Debug)]
pub struct Attention {
    /// The query projection.
    pub to_q: Linear,
    /// The key projection.
    pub to_k: Linear,
    /// The value projection.
    pub to_v: Linear,
    /// diffusers' `to_out.0` (its `to_out.1` is a dropout).
    pub to_out: Linear,
    /// Attention heads.
    pub heads: usize,
    /// Each token attends only to itself and earlier ones (CLIP's text encoder).
    pub causal: bool,
}

impl Attention {
    /// `dim` query channels, `context_dim` key/value channels; `qkv_bias`: whether the query, key and value
    /// projections have biases (not in the UNet; in the VAE and CLIP).
    pub fn new(dim: usize, context_dim: usize, heads: usize, qkv_bias: bool, device: &Device) -> Self {
        let qkv = |d_in| LinearConfig::new(d_in, dim).with_bias(qkv_bias).init(device);
        Self {
            to_q: qkv(dim),
            to_k: qkv(context_dim),
            to_v: qkv(context_dim),
            to_out: LinearConfig::new(dim, dim).init(device),
            heads,
            causal: false,
        }
    }

    /// The same attention with a causal mask.
    pub fn causal(self) -> Self {
        Self { causal: true, ..self }
    }

    /// `x`: `[B, L, C]`; `context`: `[B, Lc, Cc]` for cross-attention, `None` for self-attention.
    pub fn forward(&self, x: Tensor<3>, context: Option<Tensor<3>>) -> Tensor<3> {
        self.forward_hooked(x, context, None)
    }

    /// [`Attention::forward`], handing the probabilities to `hook` when it asks for this layer's.
    pub fn forward_hooked(
        &self,
        x: Tensor<3>,
        context: Option<Tensor<3>>,
        hook: Option<(&dyn AttentionHook, AttentionPlace)>,
    ) -> Tensor<3> {
        let context = context.unwrap_or_else(|| x.clone());
        let q = self.split_heads(profile::linear(&self.to_q, x));
        let k = self.split_heads(profile::linear(&self.to_k, context.clone()));
        let v = self.split_heads(profile::linear(&self.to_v, context));
        let out = match hook.filter(|(hook, place)| hook.wants(place)) {
            Some((hook, place)) => hooked_attention(q, k, v, hook, &place),
            None => {
                let (device, causal) = (q.device(), self.causal);
                profile::timed(Op::Attention, &device, || blocked_attention(q, k, v, causal))
            }
        };
        profile::linear(&self.to_out, merge_heads(out))
    }

    fn split_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, l, c] = x.dims();
        x.reshape([b, l, self.heads, c / self.heads]).swap_dims(1, 2)
    }
}

/// `[B, H, L, D]` → `[B, L, H·D]`.
fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, l, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, l, h * d])
}

/// The VAE's single-head spatial self-attention with its group norm and residual.
#[derive(Module, Debug)]
pub struct SpatialAttention {
    /// Before the attention.
    pub group_norm: GroupNorm,
    /// Single-head self-attention over the map's positions.
    pub attention: Attention,
}

impl SpatialAttention {
    /// Attention over the `channels` of a feature map, normalised with `groups` groups.
    pub fn new(channels: usize, groups: usize, device: &Device) -> Self {
        Self {
            group_norm: GroupNormConfig::new(groups, channels).with_epsilon(1e-6).init(device),
            attention: Attention::new(channels, channels, 1, true, device),
        }
    }

    /// `x`: `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let tokens =
            crate::group_norm::forward(&self.group_norm, x.clone(), false).reshape([b, c, h * w]).swap_dims(1, 2);
        let out = self.attention.forward(tokens, None);
        x + out.swap_dims(1, 2).reshape([b, c, h, w])
    }
}

/// Attention on flex without burn's tiles of 64 keys: each thread takes blocks of query rows of one (image, head),
/// computes the whole score block `q·kᵀ/√d` with one matrix product, its softmax with a vectorised exponential,
/// and the block's output with a second product, normalising each row at the end.
#[cfg(not(target_family = "wasm"))]
pub mod cpu {
    use std::cell::RefCell;

    use burn::tensor::Tensor;
    use gemm::{Parallelism, gemm};
    use rayon::prelude::*;

    use crate::flex::{elements, exp, is_flex_f32, primitive, tensor_from_vec};

    /// The most elements of one thread's score block (1 MiB, the size of a core's L2 cache on recent CPUs).
    const SCORE_BLOCK: usize = 1 << 18;

    thread_local! {
        /// One block's scores, kept per thread so that blocks do not allocate.
        static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    /// Whether this kernel computes the attention: f32 tensors on flex.
    pub fn handles(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>) -> bool {
        is_flex_f32(q) && is_flex_f32(k) && is_flex_f32(v)
    }

    /// `softmax(q·kᵀ/√d)·v` for `q` `[B, H, Lq, D]`, `k` `[B, H, Lk, D]`, `v` `[B, H, Lk, Dv]`.
    pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
        let ([b, h, lq, d], [_, _, lk, _], [.., dv]) = (q.dims(), k.dims(), v.dims());
        let (q, k, v) = (primitive(q), primitive(k), primitive(v));
        let (q, k, v) = (elements(&q), elements(&k), elements(&v));
        let rows = (SCORE_BLOCK / lk).clamp(1, lq);
        let blocks = lq.div_ceil(rows);
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0f32; b * h * lq * dv];
        // Each (image, head, row block) writes its own rows of `out`.
        let pieces: Vec<&mut [f32]> = out.chunks_mut(lq * dv).flat_map(|head| head.chunks_mut(rows * dv)).collect();
        pieces.into_par_iter().enumerate().for_each(|(index, out)| {
            let (head, block) = (index / blocks, index % blocks);
            let (row0, n) = (block * rows, rows.min(lq - block * rows));
            let q = &q[(head * lq + row0) * d..][..n * d];
            let (k, v) = (&k[head * lk * d..][..lk * d], &v[head * lk * dv..][..lk * dv]);
            SCORES.with_borrow_mut(|scores| {
                scores.resize(n * lk, 0.0);
                // SAFETY: scores is n × lk row-major; q is n × d row-major; kᵀ element (i, j) is k[j·d + i].
                unsafe {
                    gemm(
                        n,
                        lk,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        lk as isize,
                        false,
                        q.as_ptr(),
                        1,
                        d as isize,
                        k.as_ptr(),
                        d as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                let sums: Vec<f32> = scores.chunks_mut(lk).map(softmax_numerators).collect();
                // SAFETY: out is n × dv row-major; scores n × lk; v lk × dv, all row-major.
                unsafe {
                    gemm(
                        n,
                        dv,
                        lk,
                        out.as_mut_ptr(),
                        1,
                        dv as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        lk as isize,
                        v.as_ptr(),
                        1,
                        dv as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                for (row, sum) in out.chunks_mut(dv).zip(sums) {
                    let inv = 1.0 / sum;
                    row.iter_mut().for_each(|o| *o *= inv);
                }
            });
        });
        tensor_from_vec(out, [b, h, lq, dv])
    }

    /// Replaces a row of scores by exp(score − max) and returns their sum.
    fn softmax_numerators(row: &mut [f32]) -> f32 {
        let max = lanes(row, f32::NEG_INFINITY, f32::max).into_iter().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|x| *x = exp(*x - max));
        lanes(row, 0.0, |a, b| a + b).into_iter().sum()
    }

    /// `x` reduced by `f` into eight independent lanes, so that the loop vectorises (a single accumulator would
    /// chain every step on the previous one).
    fn lanes(x: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> [f32; 8] {
        let mut acc = [init; 8];
        let chunks = x.chunks_exact(8);
        for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
            *a = f(*a, v);
        }
        for chunk in chunks {
            for (a, &v) in acc.iter_mut().zip(chunk) {
                *a = f(*a, v);
            }
        }
        acc
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::{Device, Distribution, Tensor, Tolerance};

    /// The flex kernel against burn's attention on ndarray, on the same numbers.
    fn check(q: [usize; 4], lk: usize, dv: usize) {
        #[allow(deprecated)]
        let (flex, ndarray) = (Device::flex(), Device::ndarray());
        let [b, h, _, d] = q;
        let random = |dims: [usize; 4]| Tensor::<4>::random(dims, Distribution::Normal(0.0, 2.0), &flex).into_data();
        let (q, k, v) = (random(q), random([b, h, lk, d]), random([b, h, lk, dv]));
        let on = |device: &Device, data: &burn::tensor::TensorData| Tensor::<4>::from_data(data.clone(), device);
        let ours = super::cpu::attention(on(&flex, &q), on(&flex, &k), on(&flex, &v)).into_data();
        let options = AttentionModuleOptions::default();
        let reference = attention(on(&ndarray, &q), on(&ndarray, &k), on(&ndarray, &v), None, None, options);
        ours.assert_approx_eq::<f32>(&reference.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn flex_attention_matches_burn() {
        // Self-attention of several blocks (the last one short), cross-attention to 77 tokens, one head.
        check([2, 3, 1000, 8], 1000, 8);
        check([1, 2, 64, 40], 77, 40);
        check([1, 1, 50, 16], 50, 24);
    }
}
