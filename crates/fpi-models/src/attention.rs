//! Multi-head attention as diffusers' `Attention` (UNet self/cross attention, VAE mid-block attention).

use burn::module::Module;
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};

use crate::hook::{AttentionHook, AttentionPlace};

/// The most bytes one score block `[B, H, rows, Lk]` may take. Real WebGPU adapters (and lavapipe) bind at
/// most 128 MiB per buffer; half of that leaves room for the softmax's temporaries.
pub const SCORE_BLOCK_BYTES: usize = 64 << 20;

/// `softmax(q·kᵀ/√d)·v` over `[B, H, L, D]` tensors, in blocks of query rows so that no score tensor
/// exceeds [`SCORE_BLOCK_BYTES`]. Rows are independent, so the blocks give the unblocked result exactly.
/// Causal attention (CLIP's 77 tokens, far under the budget) runs in one block.
pub fn blocked_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, causal: bool) -> Tensor<4> {
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
    let [.., lq, d] = q.dims();
    let rows = block_rows(&q, &k);
    let scale = 1.0 / (d as f64).sqrt();
    let keys = k.swap_dims(2, 3);
    let blocks = (0..lq)
        .step_by(rows)
        .map(|start| {
            let len = rows.min(lq - start);
            let scores = q.clone().narrow(2, start, len).matmul(keys.clone()).mul_scalar(scale);
            let probabilities = hook.edit(place, start..start + len, softmax(scores, 3));
            probabilities.matmul(v.clone())
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
        let q = self.split_heads(self.to_q.forward(x));
        let k = self.split_heads(self.to_k.forward(context.clone()));
        let v = self.split_heads(self.to_v.forward(context));
        let out = match hook.filter(|(hook, place)| hook.wants(place)) {
            Some((hook, place)) => hooked_attention(q, k, v, hook, &place),
            None => blocked_attention(q, k, v, self.causal),
        };
        self.to_out.forward(merge_heads(out))
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
        let tokens = self.group_norm.forward(x.clone()).reshape([b, c, h * w]).swap_dims(1, 2);
        let out = self.attention.forward(tokens, None);
        x + out.swap_dims(1, 2).reshape([b, c, h, w])
    }
}
