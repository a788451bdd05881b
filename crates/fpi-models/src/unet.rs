//! diffusers' `UNet2DConditionModel` for SD1.x-family configs: ε(x_t, t, text states).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};

use crate::config::UNetConfig;
use crate::resnet::{Downsample2D, ResnetBlock2D, ResnetShape, Upsample2D, conv, group_norm};
use crate::transformer::{Transformer2DModel, TransformerShape};

/// The time MLP: sinusoidal features → linear → SiLU → linear.
#[derive(Module, Debug)]
pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
}

/// One level on the way down: resnets (each followed by a transformer in cross-attention levels), then a downsampler.
#[derive(Module, Debug)]
pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    /// diffusers' `downsamplers.0`; absent on the last level.
    pub downsamplers: Vec<Downsample2D>,
}

/// The bottom: resnet, transformer, resnet.
#[derive(Module, Debug)]
pub struct MidBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
}

/// One level on the way up: each resnet takes a skip connection; then an upsampler.
#[derive(Module, Debug)]
pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    /// diffusers' `upsamplers.0`; absent on the last level.
    pub upsamplers: Vec<Upsample2D>,
}

/// The SD1.x noise predictor.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel {
    pub time_embedding: TimestepEmbedding,
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    /// Width of the sinusoidal timestep features (`block_out_channels[0]`).
    pub time_features: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: usize,
}

impl UNet2DConditionModel {
    /// A UNet shaped by `config` (weights to be loaded). The config must have passed [`UNetConfig::validate`].
    pub fn new(config: &UNetConfig, device: &Device) -> Self {
        let ch = &config.block_out_channels;
        let levels = ch.len();
        let temb = 4 * ch[0];
        let resnet = |in_channels, out_channels| {
            let shape = ResnetShape {
                in_channels,
                out_channels,
                temb_channels: Some(temb),
                groups: config.norm_num_groups,
                eps: config.norm_eps,
            };
            ResnetBlock2D::new(shape, device)
        };
        let transformer = |channels, level: usize| {
            let shape = TransformerShape {
                channels,
                heads: config.heads(level),
                context_dim: config.cross_attention_dim,
                depth: config.transformer_layers_per_block.get(level),
                groups: config.norm_num_groups,
                linear_projection: config.use_linear_projection,
            };
            Transformer2DModel::new(shape, device)
        };

        let mut down_blocks = Vec::with_capacity(levels);
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let layers = config.layers_per_block.get(i);
            let input = if i == 0 { ch[0] } else { ch[i - 1] };
            let out = ch[i];
            down_blocks.push(DownBlock {
                resnets: (0..layers).map(|j| resnet(if j == 0 { input } else { out }, out)).collect(),
                attentions: match kind.as_str() {
                    "CrossAttnDownBlock2D" => (0..layers).map(|_| transformer(out, i)).collect(),
                    _ => Vec::new(),
                },
                downsamplers: (i + 1 < levels)
                    .then(|| Downsample2D::new(out, config.downsample_padding, device))
                    .into_iter()
                    .collect(),
            });
        }

        let bottom = ch[levels - 1];
        let mid_block = MidBlock {
            resnets: vec![resnet(bottom, bottom), resnet(bottom, bottom)],
            attentions: vec![transformer(bottom, levels - 1)],
        };

        let mut up_blocks = Vec::with_capacity(levels);
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let level = levels - 1 - i;
            let layers = config.layers_per_block.get(level) + 1;
            let out = ch[level];
            let prev_out = if i == 0 { ch[levels - 1] } else { ch[level + 1] };
            let skip_in = ch[level.saturating_sub(1)];
            up_blocks.push(UpBlock {
                resnets: (0..layers)
                    .map(|j| {
                        let skip = if j == layers - 1 { skip_in } else { out };
                        let input = if j == 0 { prev_out } else { out };
                        resnet(input + skip, out)
                    })
                    .collect(),
                attentions: match kind.as_str() {
                    "CrossAttnUpBlock2D" => (0..layers).map(|_| transformer(out, level)).collect(),
                    _ => Vec::new(),
                },
                upsamplers: (i + 1 < levels).then(|| Upsample2D::new(out, device)).into_iter().collect(),
            });
        }

        Self {
            time_embedding: TimestepEmbedding {
                linear_1: LinearConfig::new(ch[0], temb).init(device),
                linear_2: LinearConfig::new(temb, temb).init(device),
            },
            conv_in: conv([config.in_channels, ch[0]], 3, 1, 1, device),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(config.norm_num_groups, ch[0], config.norm_eps, device),
            conv_out: conv([ch[0], config.out_channels], 3, 1, 1, device),
            time_features: ch[0],
            flip_sin_to_cos: config.flip_sin_to_cos,
            freq_shift: config.freq_shift,
        }
    }

    /// ε for latents `x` `[B, 4, h, w]` at `timesteps` `[B]`, conditioned on text states `context` `[B, 77, C]`.
    pub fn forward(&self, x: Tensor<4>, timesteps: Tensor<1>, context: &Tensor<3>) -> Tensor<4> {
        let temb = self.time_embedding.linear_1.forward(self.timestep_features(timesteps));
        let temb = self.time_embedding.linear_2.forward(silu(temb));

        let mut h = self.conv_in.forward(x);
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                h = resnet.forward(h, Some(&temb));
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(h, context);
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
        h = mid.attentions[0].forward(h, context);
        h = mid.resnets[1].forward(h, Some(&temb));

        for block in &self.up_blocks {
            for (j, resnet) in block.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip connection per up-block resnet");
                h = resnet.forward(Tensor::cat(vec![h, skip], 1), Some(&temb));
                if let Some(attn) = block.attentions.get(j) {
                    h = attn.forward(h, context);
                }
            }
            for up in &block.upsamplers {
                h = up.forward(h);
            }
        }

        self.conv_out.forward(silu(self.conv_norm_out.forward(h)))
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
        match self.flip_sin_to_cos {
            true => Tensor::cat(vec![cos, sin], 1),
            false => Tensor::cat(vec![sin, cos], 1),
        }
    }
}
