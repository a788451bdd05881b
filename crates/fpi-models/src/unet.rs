//! diffusers' `UNet2DConditionModel` for SD1.x-family configs: ε(x_t, t, text states).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, FloatDType, Tensor};

use crate::config::{DownBlockType, UNetConfig, UpBlockType};
use crate::hook::{AttentionHook, HookAt, UNetPart};
use crate::profile;
use crate::resnet::{Downsample2D, ResnetBlock2D, ResnetShape, Upsample2D, conv, group_norm};
use crate::transformer::{Transformer2DModel, TransformerShape};

/// The time MLP: sinusoidal features → linear → SiLU → linear.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    /// From the sinusoidal features to the embedding's width.
    pub linear_1: Linear,
    /// After the SiLU.
    pub linear_2: Linear,
}

/// One level on the way down: resnets (each followed by a transformer in cross-attention levels), then a downsampler.
#[derive(Module, Debug)]
pub struct DownBlock {
    /// `layers_per_block` resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// One after each resnet in a cross-attention level, else none.
    pub attentions: Vec<Transformer2DModel>,
    /// diffusers' `downsamplers.0`; absent on the last level.
    pub downsamplers: Vec<Downsample2D>,
}

/// The bottom: resnet, transformer, resnet.
#[derive(Module, Debug)]
pub struct MidBlock {
    /// The two resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// The transformer between them.
    pub attentions: Vec<Transformer2DModel>,
}

/// One level on the way up: each resnet takes a skip connection; then an upsampler.
#[derive(Module, Debug)]
pub struct UpBlock {
    /// `layers_per_block + 1` resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// One after each resnet in a cross-attention level, else none.
    pub attentions: Vec<Transformer2DModel>,
    /// diffusers' `upsamplers.0`; absent on the last level.
    pub upsamplers: Vec<Upsample2D>,
}

/// The SD1.x noise predictor.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    /// The timestep's embedding, added to every resnet.
    pub time_embedding: TimestepEmbedding,
    /// Latents to the first level's channels.
    pub conv_in: Conv2d,
    /// The levels on the way down.
    pub down_blocks: Vec<DownBlock>,
    /// The bottom.
    pub mid_block: MidBlock,
    /// The levels on the way up, the deepest first.
    pub up_blocks: Vec<UpBlock>,
    /// Before the output convolution.
    pub conv_norm_out: GroupNorm,
    /// To the predicted noise's channels.
    pub conv_out: Conv2d,
    /// Width of the sinusoidal timestep features (`block_out_channels[0]`).
    pub time_features: usize,
    /// Timestep features as cosines then sines (else sines then cosines).
    pub flip_sin_to_cos: bool,
    /// Shifts the timestep frequencies' denominator.
    pub freq_shift: usize,
}

/// Builds the UNet's blocks from its config.
struct Builder<'a> {
    config: &'a UNetConfig,
    device: &'a Device,
}

impl Builder<'_> {
    fn channels(&self, level: usize) -> usize {
        self.config.block_out_channels[level]
    }

    fn resnet(&self, in_channels: usize, out_channels: usize) -> ResnetBlock2D {
        let o = &self.config.options;
        let temb_channels = Some(4 * self.channels(0));
        let shape =
            ResnetShape { in_channels, out_channels, temb_channels, groups: o.norm_num_groups, eps: o.norm_eps };
        ResnetBlock2D::new(shape, self.device)
    }

    /// `n` spatial transformers of level `level` if it has cross-attention, else none.
    fn transformers(&self, cross_attention: bool, n: usize, level: usize) -> Vec<Transformer2DModel> {
        let (c, o) = (self.config, &self.config.options);
        let shape = TransformerShape {
            channels: self.channels(level),
            heads: c.heads(level),
            context_dim: c.cross_attention_dim,
            depth: o.transformer_layers_per_block.get(level),
            groups: o.norm_num_groups,
            linear_projection: o.use_linear_projection,
        };
        let n = if cross_attention { n } else { 0 };
        (0..n).map(|_| Transformer2DModel::new(shape, self.device)).collect()
    }

    fn down_block(&self, level: usize, kind: DownBlockType) -> DownBlock {
        let layers = self.config.layers_per_block.get(level);
        let (input, out) = (self.channels(level.saturating_sub(1)), self.channels(level));
        let cross_attention = match kind {
            DownBlockType::CrossAttnDownBlock2D => true,
            DownBlockType::DownBlock2D => false,
        };
        let last = level + 1 == self.config.block_out_channels.len();
        let padding = self.config.options.downsample_padding;
        DownBlock {
            resnets: (0..layers).map(|j| self.resnet(if j == 0 { input } else { out }, out)).collect(),
            attentions: self.transformers(cross_attention, layers, level),
            downsamplers: (!last).then(|| Downsample2D::new(out, padding, self.device)).into_iter().collect(),
        }
    }

    fn mid_block(&self) -> MidBlock {
        let level = self.config.block_out_channels.len() - 1;
        let bottom = self.channels(level);
        MidBlock {
            resnets: vec![self.resnet(bottom, bottom), self.resnet(bottom, bottom)],
            attentions: self.transformers(true, 1, level),
        }
    }

    /// Up block `i` (of level `levels − 1 − i`): its resnets take the previous block's output and the skip
    /// connections of the matching down block, the last one the skip from the level above.
    fn up_block(&self, i: usize, kind: UpBlockType) -> UpBlock {
        let levels = self.config.block_out_channels.len();
        let level = levels - 1 - i;
        let layers = self.config.layers_per_block.get(level) + 1;
        let out = self.channels(level);
        let prev_out = self.channels((level + 1).min(levels - 1));
        let skip_in = self.channels(level.saturating_sub(1));
        let cross_attention = match kind {
            UpBlockType::CrossAttnUpBlock2D => true,
            UpBlockType::UpBlock2D => false,
        };
        let resnet = |j| {
            let skip = if j == layers - 1 { skip_in } else { out };
            let input = if j == 0 { prev_out } else { out };
            self.resnet(input + skip, out)
        };
        UpBlock {
            resnets: (0..layers).map(resnet).collect(),
            attentions: self.transformers(cross_attention, layers, level),
            upsamplers: (level > 0).then(|| Upsample2D::new(out, self.device)).into_iter().collect(),
        }
    }
}

impl UNet2DConditionModel {
    /// A UNet shaped by `config` (weights to be loaded). The config must have passed [`UNetConfig`]'s checks
    /// ([`crate::config::PartConfig::validate`]).
    pub fn new(config: &UNetConfig, device: &Device) -> Self {
        let b = Builder { config, device };
        let (o, ch0) = (&config.options, b.channels(0));
        let temb = 4 * ch0;
        Self {
            time_embedding: TimestepEmbedding {
                linear_1: LinearConfig::new(ch0, temb).init(device),
                linear_2: LinearConfig::new(temb, temb).init(device),
            },
            conv_in: conv([config.in_channels, ch0], 3, 1, 1, device),
            down_blocks: config.down_block_types.iter().enumerate().map(|(i, &kind)| b.down_block(i, kind)).collect(),
            mid_block: b.mid_block(),
            up_blocks: config.up_block_types.iter().enumerate().map(|(i, &kind)| b.up_block(i, kind)).collect(),
            conv_norm_out: group_norm(o.norm_num_groups, ch0, o.norm_eps, device),
            conv_out: conv([ch0, config.out_channels], 3, 1, 1, device),
            time_features: ch0,
            flip_sin_to_cos: o.flip_sin_to_cos,
            freq_shift: o.freq_shift,
        }
    }

    /// Channels of the latents it reads and predicts (4 for SD1.x).
    pub fn latent_channels(&self) -> usize {
        self.conv_in.weight.dims()[1]
    }

    /// Latent sides must be multiples of this: the UNet halves them once per downsampling level (8 for SD1.x).
    pub fn latent_multiple(&self) -> usize {
        1 << self.down_blocks.iter().filter(|b| !b.downsamplers.is_empty()).count()
    }

    /// The query maps `[height, width]` of the down levels that have cross-attention, for latents of `latent_side`
    /// `[height, width]` (the up levels mirror them).
    pub fn cross_attention_sides(&self, latent_side: [usize; 2]) -> Vec<[usize; 2]> {
        let mut side = latent_side;
        let mut sides = Vec::new();
        for block in &self.down_blocks {
            if !block.attentions.is_empty() {
                sides.push(side);
            }
            if !block.downsamplers.is_empty() {
                side = side.map(|s| s / 2);
            }
        }
        sides
    }

    /// ε for latents `x` `[B, 4, h, w]` at `timesteps` `[B]`, conditioned on text states `context` `[B, 77, C]`;
    /// computed in the model's [`dtype`](Self::dtype), returned in f32.
    pub fn forward(&self, x: Tensor<4>, timesteps: Tensor<1>, context: &Tensor<3>) -> Tensor<4> {
        self.forward_hooked(x, timesteps, context, None)
    }

    /// [`UNet2DConditionModel::forward`] with attention control: `hook` sees (and may replace) the attention
    /// probabilities of the layers it asks for.
    pub fn forward_hooked(
        &self,
        x: Tensor<4>,
        timesteps: Tensor<1>,
        context: &Tensor<3>,
        hook: Option<&dyn AttentionHook>,
    ) -> Tensor<4> {
        let at = |part, block, transformer| hook.map(|hook| HookAt { hook, part, block, transformer });
        let dtype = self.dtype();
        let context = &context.clone().cast(dtype);
        let temb = profile::linear(&self.time_embedding.linear_1, self.timestep_features(timesteps).cast(dtype));
        let temb = profile::linear(&self.time_embedding.linear_2, silu(temb));

        let mut h = crate::conv::forward(&self.conv_in, x.cast(dtype));
        let mut skips = vec![h.clone()];
        for (i, block) in self.down_blocks.iter().enumerate() {
            for (j, resnet) in block.resnets.iter().enumerate() {
                h = resnet.forward(h, Some(&temb));
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(h, context, at(UNetPart::Down, i, j));
                }
                skips.push(h.clone());
            }
            for down in &block.downsamplers {
                h = down.forward(h);
                skips.push(h.clone());
            }
        }

        let mid = &self.mid_block;
        h = mid.resnets[0].forward(h, Some(&temb));
        h = mid.attentions[0].forward(h, context, at(UNetPart::Mid, 0, 0));
        h = mid.resnets[1].forward(h, Some(&temb));

        for (i, block) in self.up_blocks.iter().enumerate() {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip connection per up-block resnet");
                h = resnet.forward(Tensor::cat(vec![h, skip], 1), Some(&temb));
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(h, context, at(UNetPart::Up, i, j));
                }
            }
            for up in &block.upsamplers {
                h = up.forward(h);
            }
        }

        crate::conv::forward(&self.conv_out, crate::group_norm::forward(&self.conv_norm_out, h, true))
            .cast(FloatDType::F32)
    }

    /// The float type it computes in (its weights'): see [`crate::precision`].
    pub fn dtype(&self) -> FloatDType {
        self.conv_in.weight.val().dtype().into()
    }

    /// diffusers' `get_timestep_embedding`: `[B]` → `[B, time_features]` of sines and cosines.
    fn timestep_features(&self, timesteps: Tensor<1>) -> Tensor<2> {
        let half = self.time_features / 2;
        let device = timesteps.device();
        // In f32, step by step as diffusers computes it, so that large timesteps get the same angles.
        let denominator = half as f32 - self.freq_shift as f32;
        let freqs: Vec<f32> = (0..half).map(|i| (-(10000f64.ln() as f32) * i as f32 / denominator).exp()).collect();
        let freqs = Tensor::<1>::from_floats(freqs.as_slice(), &device).unsqueeze_dim::<2>(0);
        let angles = timesteps.unsqueeze_dim::<2>(1) * freqs;
        let (sin, cos) = (angles.clone().sin(), angles.cos());
        if self.flip_sin_to_cos { Tensor::cat(vec![cos, sin], 1) } else { Tensor::cat(vec![sin, cos], 1) }
    }
}
