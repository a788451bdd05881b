//! diffusers' `Transformer2DModel`: the UNet's spatial transformer with self- and cross-attention.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

use crate::attention::{Attention, SCORE_BLOCK_BYTES};
use crate::hook::HookAt;
use crate::precision::layer_norm;
use crate::profile::{self, Op};
use crate::resnet::{conv, group_norm};

/// GEGLU feed-forward: `proj` to twice the inner width, `x · gelu(gate)`, back to `dim`.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// diffusers' `ff.net.0.proj`.
    pub geglu: Linear,
    /// diffusers' `ff.net.2`.
    pub out: Linear,
}

impl FeedForward {
    fn new(dim: usize, device: &Device) -> Self {
        let inner = 4 * dim;
        Self { geglu: LinearConfig::new(dim, 2 * inner).init(device), out: LinearConfig::new(inner, dim).init(device) }
    }

    /// In blocks of tokens so that the GEGLU's widest tensor stays within [`SCORE_BLOCK_BYTES`] (at 512² and a batch
    /// of 4, as an edit runs, it would be 160 MiB whole); tokens are independent, so the blocks give the same result.
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, tokens, _] = x.dims();
        let width = self.geglu.weight.dims()[1];
        let rows = (SCORE_BLOCK_BYTES / (batch * width * size_of::<f32>()).max(1)).max(1);
        if rows >= tokens {
            return self.block(x);
        }
        let blocks =
            (0..tokens).step_by(rows).map(|start| self.block(x.clone().narrow(1, start, rows.min(tokens - start))));
        Tensor::cat(blocks.collect(), 1)
    }

    fn block(&self, x: Tensor<3>) -> Tensor<3> {
        let [value, gate] = profile::linear(&self.geglu, x).chunk(2, 2).try_into().expect("two halves");
        let device = value.device();
        let gated = profile::timed(Op::GegluGate, &device, || value * gelu(gate));
        profile::linear(&self.out, gated)
    }
}

/// Pre-LN block: self-attention, cross-attention on the text states, GEGLU feed-forward; each with a residual.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock {
    /// Before the self-attention.
    pub norm1: LayerNorm,
    /// Self-attention.
    pub attn1: Attention,
    /// Before the cross-attention.
    pub norm2: LayerNorm,
    /// Cross-attention on the text states.
    pub attn2: Attention,
    /// Before the feed-forward.
    pub norm3: LayerNorm,
    /// The GEGLU feed-forward.
    pub ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(dim: usize, context_dim: usize, heads: usize, device: &Device) -> Self {
        let norm = || LayerNormConfig::new(dim).init(device);
        Self {
            norm1: norm(),
            attn1: Attention::new(dim, dim, heads, false, device),
            norm2: norm(),
            attn2: Attention::new(dim, context_dim, heads, false, device),
            norm3: norm(),
            ff: FeedForward::new(dim, device),
        }
    }

    /// `hook`: the hook and this block's `(index in its transformer, query map side)`.
    fn forward(&self, x: Tensor<3>, context: &Tensor<3>, hook: Option<(HookAt<'_>, usize, [usize; 2])>) -> Tensor<3> {
        let hooked = |cross| hook.map(|(at, layer, side)| (at.hook, at.place(layer, cross, side)));
        let x = self.attn1.forward_hooked(layer_norm(&self.norm1, x.clone()), None, hooked(false)) + x;
        let x = self.attn2.forward_hooked(layer_norm(&self.norm2, x.clone()), Some(context.clone()), hooked(true)) + x;
        self.ff.forward(layer_norm(&self.norm3, x.clone())) + x
    }
}

/// The projection in and out of the token sequence: a 1×1 convolution (SD1.x) or a linear layer (SD2.x).
#[derive(Module, Debug)]
pub enum Projection {
    /// `use_linear_projection: false`.
    Conv(Conv2d),
    /// `use_linear_projection: true`.
    Linear(Linear),
}

/// Group norm, projection to tokens, transformer blocks, projection back, residual.
#[derive(Module, Debug)]
pub struct Transformer2DModel {
    /// Before the projection in.
    pub norm: GroupNorm,
    /// Feature map to tokens.
    pub proj_in: Projection,
    /// `transformer_layers_per_block` blocks.
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    /// Tokens back to the feature map.
    pub proj_out: Projection,
}

/// The shape of a [`Transformer2DModel`].
#[derive(Debug, Clone, Copy)]
pub struct TransformerShape {
    /// Channels of the feature map (and width of the tokens).
    pub channels: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of the text states.
    pub context_dim: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Groups of the group norm.
    pub groups: usize,
    /// Linear projections in and out, else 1×1 convolutions.
    pub linear_projection: bool,
}

impl Transformer2DModel {
    /// A transformer of the given shape (weights to be loaded).
    pub fn new(s: TransformerShape, device: &Device) -> Self {
        let c = s.channels;
        let projection = || {
            if s.linear_projection {
                Projection::Linear(LinearConfig::new(c, c).init(device))
            } else {
                Projection::Conv(conv([c, c], 1, 1, 0, device))
            }
        };
        Self {
            norm: group_norm(s.groups, c, 1e-6, device),
            proj_in: projection(),
            transformer_blocks: (0..s.depth)
                .map(|_| BasicTransformerBlock::new(c, s.context_dim, s.heads, device))
                .collect(),
            proj_out: projection(),
        }
    }

    /// `x`: `[B, C, H, W]`; `context`: the text states `[B, 77, context_dim]`; `hook`: attention control, with
    /// this transformer's place in the UNet.
    pub fn forward(&self, x: Tensor<4>, context: &Tensor<3>, hook: Option<HookAt<'_>>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let normed = crate::group_norm::forward(&self.norm, x.clone(), false);
        let to_tokens = |t: Tensor<4>| t.reshape([b, c, h * w]).swap_dims(1, 2);
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(crate::conv::forward(conv, normed)),
            Projection::Linear(linear) => profile::linear(linear, to_tokens(normed)),
        };
        for (layer, block) in self.transformer_blocks.iter().enumerate() {
            tokens = block.forward(tokens, context, hook.map(|at| (at, layer, [h, w])));
        }
        let to_map = |t: Tensor<3>| t.swap_dims(1, 2).reshape([b, c, h, w]);
        let out = match &self.proj_out {
            Projection::Conv(conv) => crate::conv::forward(conv, to_map(tokens)),
            Projection::Linear(linear) => to_map(profile::linear(linear, tokens)),
        };
        out + x
    }
}
