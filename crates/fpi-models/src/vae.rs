//! diffusers' `AutoencoderKL`: images ↔ latents.

use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, FloatDType, Tensor};

use crate::attention::SpatialAttention;
use crate::config::VaeConfig;
use crate::device::has_binding_limit;
use crate::feature_map::{Bands, FeatureMap};
use crate::resnet::{Downsample2D, ResnetBlock2D, ResnetShape, Upsample2D, conv, group_norm};

const VAE_EPS: f64 = 1e-6;

/// The default most bytes of one band of a VAE feature map on a device with a binding limit: a quarter of the
/// 128 MiB limit, leaving room for a convolution's halo rows and output. Elsewhere (the CPU) a map is one band.
pub const BAND_BYTES: usize = 32 << 20;

/// Resnet, attention, resnet at the lowest resolution.
#[derive(Module, Debug)]
pub struct VaeMidBlock {
    /// The two resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// Empty when the config sets `mid_block_add_attention: false`.
    pub attentions: Vec<SpatialAttention>,
}

impl VaeMidBlock {
    fn new(channels: usize, groups: usize, attention: bool, device: &Device) -> Self {
        let resnet = || ResnetBlock2D::new(vae_resnet(channels, channels, groups), device);
        Self {
            resnets: vec![resnet(), resnet()],
            attentions: attention.then(|| SpatialAttention::new(channels, groups, device)).into_iter().collect(),
        }
    }

    /// Attention needs the whole map; at the lowest resolution it is small (8 MiB for SD1.5 at 512×512).
    fn forward(&self, x: Bands, band_bytes: usize) -> Bands {
        let mut h = self.resnets[0].forward(x, None);
        for attn in &self.attentions {
            h = Bands::split(attn.forward(h.join()), band_bytes);
        }
        self.resnets[1].forward(h, None)
    }
}

/// A level of the encoder: resnets, then a downsampler (except on the last level).
#[derive(Module, Debug)]
pub struct EncoderBlock {
    /// `layers_per_block` resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// diffusers' `downsamplers.0`; absent on the last level.
    pub downsamplers: Vec<Downsample2D>,
}

/// A level of the decoder: resnets, then an upsampler (except on the last level).
#[derive(Module, Debug)]
pub struct DecoderBlock {
    /// `layers_per_block + 1` resnets.
    pub resnets: Vec<ResnetBlock2D>,
    /// diffusers' `upsamplers.0`; absent on the last level.
    pub upsamplers: Vec<Upsample2D>,
}

/// Image `[B, 3, H, W]` → the posterior's moments `[B, 2·latent_channels, H/f, W/f]`.
#[derive(Module, Debug)]
pub struct Encoder {
    /// Image to the first level's channels.
    pub conv_in: Conv2d,
    /// The levels, each halving the sides but the last.
    pub down_blocks: Vec<EncoderBlock>,
    /// At the lowest resolution.
    pub mid_block: VaeMidBlock,
    /// Before the output convolution.
    pub conv_norm_out: GroupNorm,
    /// To the posterior's moments.
    pub conv_out: Conv2d,
}

/// Latents `[B, latent_channels, h, w]` → image `[B, 3, h·f, w·f]`.
#[derive(Module, Debug)]
pub struct Decoder {
    /// Latents to the last level's channels.
    pub conv_in: Conv2d,
    /// At the lowest resolution.
    pub mid_block: VaeMidBlock,
    /// The levels, deepest first, each doubling the sides but the last.
    pub up_blocks: Vec<DecoderBlock>,
    /// Before the output convolution.
    pub conv_norm_out: GroupNorm,
    /// To the image's channels.
    pub conv_out: Conv2d,
}

/// The VAE: encoder, decoder and the 1×1 (post-)quantisation convolutions.
#[derive(Module, Debug)]
pub struct AutoencoderKL {
    /// Image → posterior moments.
    pub encoder: Encoder,
    /// A 1×1 convolution on the moments (absent with `use_quant_conv: false`).
    pub quant_conv: Option<Conv2d>,
    /// A 1×1 convolution on the latents before decoding (absent with `use_post_quant_conv: false`).
    pub post_quant_conv: Option<Conv2d>,
    /// Latents → image.
    pub decoder: Decoder,
    /// Latents are `scaling_factor` × the posterior mean.
    pub scaling_factor: f64,
    /// The most bytes of one band of a feature map (see [`Bands`]): [`BAND_BYTES`] where the device has a binding
    /// limit, else unlimited, unless changed.
    pub band_bytes: usize,
}

/// The posterior of an encoded image: a diagonal Gaussian.
pub struct Posterior {
    /// `[B, latent_channels, h, w]`; the deterministic encoding.
    pub mean: Tensor<4>,
    /// Log-variance, clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor<4>,
}

fn vae_resnet(in_channels: usize, out_channels: usize, groups: usize) -> ResnetShape {
    ResnetShape { in_channels, out_channels, temb_channels: None, groups, eps: VAE_EPS }
}

impl AutoencoderKL {
    /// A VAE shaped by `config` (weights to be loaded). The config must have passed [`VaeConfig`]'s checks
    /// ([`crate::config::PartConfig::validate`]).
    pub fn new(config: &VaeConfig, device: &Device) -> Self {
        let (ch, o) = (&config.block_out_channels, &config.options);
        let (levels, groups, layers) = (ch.len(), o.norm_num_groups, config.layers_per_block);
        let latent = config.latent_channels;
        let resnet = |i, o| ResnetBlock2D::new(vae_resnet(i, o, groups), device);
        let top = ch[levels - 1];

        let encoder = Encoder {
            conv_in: conv([config.in_channels, ch[0]], 3, 1, 1, device),
            down_blocks: (0..levels)
                .map(|i| {
                    let input = if i == 0 { ch[0] } else { ch[i - 1] };
                    EncoderBlock {
                        resnets: (0..layers).map(|j| resnet(if j == 0 { input } else { ch[i] }, ch[i])).collect(),
                        downsamplers: (i + 1 < levels)
                            .then(|| Downsample2D::new(ch[i], 0, device))
                            .into_iter()
                            .collect(),
                    }
                })
                .collect(),
            mid_block: VaeMidBlock::new(top, groups, o.mid_block_add_attention, device),
            conv_norm_out: group_norm(groups, top, VAE_EPS, device),
            conv_out: conv([top, 2 * latent], 3, 1, 1, device),
        };

        let decoder = Decoder {
            conv_in: conv([latent, top], 3, 1, 1, device),
            mid_block: VaeMidBlock::new(top, groups, o.mid_block_add_attention, device),
            up_blocks: (0..levels)
                .map(|i| {
                    let out = ch[levels - 1 - i];
                    let prev = if i == 0 { top } else { ch[levels - i] };
                    DecoderBlock {
                        resnets: (0..=layers).map(|j| resnet(if j == 0 { prev } else { out }, out)).collect(),
                        upsamplers: (i + 1 < levels).then(|| Upsample2D::new(out, device)).into_iter().collect(),
                    }
                })
                .collect(),
            conv_norm_out: group_norm(groups, ch[0], VAE_EPS, device),
            conv_out: conv([ch[0], config.out_channels], 3, 1, 1, device),
        };

        Self {
            encoder,
            quant_conv: o.use_quant_conv.then(|| conv([2 * latent, 2 * latent], 1, 1, 0, device)),
            post_quant_conv: o.use_post_quant_conv.then(|| conv([latent, latent], 1, 1, 0, device)),
            decoder,
            scaling_factor: o.scaling_factor,
            band_bytes: if has_binding_limit(device) { BAND_BYTES } else { usize::MAX },
        }
    }

    /// Pixels per latent cell along a side: 2 per downsampling level (8 for SD1.x).
    pub fn downsampling_factor(&self) -> usize {
        1 << self.encoder.down_blocks.iter().filter(|b| !b.downsamplers.is_empty()).count()
    }

    /// The float type it computes in (its weights'): see [`crate::precision`].
    pub fn dtype(&self) -> FloatDType {
        self.encoder.conv_in.weight.val().dtype().into()
    }

    /// The posterior of images `x` in [-1, 1], `[B, 3, H, W]` (computed in [`dtype`](Self::dtype), in f32).
    pub fn encode(&self, x: Tensor<4>) -> Posterior {
        let e = &self.encoder;
        let mut h = Bands::split(x.cast(self.dtype()), self.band_bytes).conv(&e.conv_in);
        for block in &e.down_blocks {
            for resnet in &block.resnets {
                h = resnet.forward(h, None);
            }
            for down in &block.downsamplers {
                h = down.forward(h);
            }
        }
        h = e.mid_block.forward(h, self.band_bytes);
        let mut moments = h.group_norm_silu(&e.conv_norm_out).conv(&e.conv_out).join();
        if let Some(quant) = &self.quant_conv {
            moments = crate::conv::forward(quant, moments);
        }
        let [mean, logvar] = moments.cast(FloatDType::F32).chunk(2, 1).try_into().expect("two halves");
        Posterior { mean, logvar: logvar.clamp(-30.0, 20.0) }
    }

    /// Images in about [-1, 1] from (unscaled) latents `z` (computed in [`dtype`](Self::dtype), in f32).
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        let d = &self.decoder;
        let z = z.cast(self.dtype());
        let z = match &self.post_quant_conv {
            Some(post) => crate::conv::forward(post, z),
            None => z,
        };
        let h = Bands::split(z, self.band_bytes).conv(&d.conv_in);
        let mut h = d.mid_block.forward(h, self.band_bytes);
        for block in &d.up_blocks {
            for resnet in &block.resnets {
                h = resnet.forward(h, None);
            }
            for up in &block.upsamplers {
                h = up.forward(h);
            }
        }
        h.group_norm_silu(&d.conv_norm_out).conv(&d.conv_out).join().cast(FloatDType::F32)
    }
}
