//! diffusers' `ResnetBlock2D`, `Downsample2D` and `Upsample2D`, shared by the UNet and the VAE.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};

use crate::feature_map::FeatureMap;

/// A `k`×`k` convolution with stride `stride` and symmetric padding `pad`.
pub fn conv(channels: [usize; 2], k: usize, stride: usize, pad: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new(channels, [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init(device)
}

/// A group norm over `channels` channels.
pub fn group_norm(groups: usize, channels: usize, eps: f64, device: &Device) -> GroupNorm {
    GroupNormConfig::new(groups, channels).with_epsilon(eps).init(device)
}

/// Two norm–SiLU–conv stages with a residual, optionally shifted by a time embedding.
#[derive(Module, Debug)]
pub struct ResnetBlock2D {
    /// Before the first convolution.
    pub norm1: GroupNorm,
    /// The first 3×3 convolution.
    pub conv1: Conv2d,
    /// Projects the time embedding to a per-channel shift (UNet only).
    pub time_emb_proj: Option<Linear>,
    /// Before the second convolution.
    pub norm2: GroupNorm,
    /// The second 3×3 convolution.
    pub conv2: Conv2d,
    /// A 1×1 convolution on the residual when the channel count changes.
    pub conv_shortcut: Option<Conv2d>,
}

/// The shape of a [`ResnetBlock2D`].
#[derive(Debug, Clone, Copy)]
pub struct ResnetShape {
    /// Channels in.
    pub in_channels: usize,
    /// Channels out.
    pub out_channels: usize,
    /// Width of the time embedding; `None` in the VAE.
    pub temb_channels: Option<usize>,
    /// Groups of the group norms.
    pub groups: usize,
    /// Epsilon of the group norms.
    pub eps: f64,
}

impl ResnetBlock2D {
    /// A block of the given shape (weights to be loaded).
    pub fn new(s: ResnetShape, device: &Device) -> Self {
        Self {
            norm1: group_norm(s.groups, s.in_channels, s.eps, device),
            conv1: conv([s.in_channels, s.out_channels], 3, 1, 1, device),
            time_emb_proj: s.temb_channels.map(|t| LinearConfig::new(t, s.out_channels).init(device)),
            norm2: group_norm(s.groups, s.out_channels, s.eps, device),
            conv2: conv([s.out_channels, s.out_channels], 3, 1, 1, device),
            conv_shortcut: (s.in_channels != s.out_channels)
                .then(|| conv([s.in_channels, s.out_channels], 1, 1, 0, device)),
        }
    }

    /// `x`: `[B, C, H, W]`; `temb`: `[B, T]`, the time embedding before its SiLU.
    pub fn forward<F: FeatureMap>(&self, x: F, temb: Option<&Tensor<2>>) -> F {
        let mut h = x.clone().group_norm_silu(&self.norm1).conv(&self.conv1);
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            h = h.shift(crate::profile::linear(proj, silu(temb.clone())));
        }
        let h = h.group_norm_silu(&self.norm2).conv(&self.conv2);
        let residual = match &self.conv_shortcut {
            Some(shortcut) => x.conv(shortcut),
            None => x,
        };
        residual.add(h)
    }
}

/// A stride-2 3×3 convolution. diffusers' VAE encoder pads only the bottom and right (`padding = 0`).
#[derive(Module, Debug)]
pub struct Downsample2D {
    /// The strided convolution.
    pub conv: Conv2d,
}

impl Downsample2D {
    /// `padding` is diffusers' `downsample_padding`: 1 in the UNet, 0 (one row and column, after) in the VAE.
    pub fn new(channels: usize, padding: usize, device: &Device) -> Self {
        let padding = match padding {
            0 => PaddingConfig2d::Explicit(0, 0, 1, 1),
            p => PaddingConfig2d::Explicit(p, p, p, p),
        };
        let conv =
            Conv2dConfig::new([channels, channels], [3, 3]).with_stride([2, 2]).with_padding(padding).init(device);
        Self { conv }
    }

    /// Halves the height and width.
    pub fn forward<F: FeatureMap>(&self, x: F) -> F {
        x.conv(&self.conv)
    }
}

/// Nearest-neighbour 2× upsampling followed by a 3×3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D {
    /// The convolution after upsampling.
    pub conv: Conv2d,
}

impl Upsample2D {
    /// An upsampler for `channels` channels.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self { conv: conv([channels, channels], 3, 1, 1, device) }
    }

    /// Doubles the height and width.
    pub fn forward<F: FeatureMap>(&self, x: F) -> F {
        x.upsample().conv(&self.conv)
    }
}
