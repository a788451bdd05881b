//! Feature maps for the convolutional blocks: a plain `[B, C, H, W]` tensor, or the same map held as horizontal
//! bands so that no device buffer exceeds a budget.
//!
//! SD1.5's VAE at 512×512 has 256-channel maps of 256 MiB, more than lavapipe and many WebGPU adapters bind in one
//! buffer. Convolutions need only a row of halo from each neighbouring band and group norms combine statistics
//! across bands, so the banded map gives the unbanded result up to float rounding.

use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

use crate::conv::conv2d;

/// The operations a resnet block needs, on either kind of feature map.
pub trait FeatureMap: Clone + Sized {
    /// Group normalisation with the module's groups, epsilon and affine parameters, then SiLU.
    fn group_norm_silu(self, norm: &GroupNorm) -> Self;
    /// A 1×1, a 3×3 (stride 1, padding 1) or the VAE encoder's 3×3 stride-2 (padding bottom/right) convolution;
    /// the banded map supports only these, the VAE's.
    fn conv(self, conv: &Conv2d) -> Self;
    /// Element-wise sum of two maps of the same shape.
    fn add(self, other: Self) -> Self;
    /// Adds a per-channel shift `[B, C]`.
    fn shift(self, shift: Tensor<2>) -> Self;
    /// Nearest-neighbour 2× upsampling.
    fn upsample(self) -> Self;
}

impl FeatureMap for Tensor<4> {
    fn group_norm_silu(self, norm: &GroupNorm) -> Self {
        crate::group_norm::forward(norm, self, true)
    }
    fn conv(self, conv: &Conv2d) -> Self {
        crate::conv::forward(conv, self)
    }
    fn add(self, other: Self) -> Self {
        self + other
    }
    fn shift(self, shift: Tensor<2>) -> Self {
        let [b, c] = shift.dims();
        self + shift.reshape([b, c, 1, 1])
    }
    fn upsample(self) -> Self {
        interpolate(self, InterpolateOptions::new(InterpolateMode::Nearest).with_scale_factor([2.0, 2.0]))
    }
}

/// A `[B, C, H, W]` map as bands of rows, top to bottom. Before each convolution the bands are re-cut to even
/// heights (except perhaps the last), so a stride-2 window never straddles two bands' interiors.
#[derive(Debug, Clone)]
pub struct Bands {
    bands: Vec<Tensor<4>>,
    max_bytes: usize,
}

impl Bands {
    /// Splits `x` into bands of at most `max_bytes` each (at least two rows a band).
    pub fn split(x: Tensor<4>, max_bytes: usize) -> Self {
        Self { bands: vec![x], max_bytes }.refit(1)
    }

    /// The whole map as one tensor (for parts that need it whole, such as attention at the lowest resolution).
    pub fn join(self) -> Tensor<4> {
        Tensor::cat(self.bands, 2)
    }

    /// The map's dimensions `[B, C, H, W]`.
    pub fn dims(&self) -> [usize; 4] {
        let [b, c, _, w] = self.bands[0].dims();
        [b, c, self.bands.iter().map(|t| t.dims()[2]).sum(), w]
    }

    /// Re-bands so that each band, grown `growth` times by the next operation, stays within the budget: splits
    /// large bands and merges small neighbours, never holding more than one band's worth in a new tensor.
    fn refit(self, growth: usize) -> Self {
        let [b, c, h, w] = self.dims();
        let row_bytes = b * c * w * size_of::<f32>() * growth;
        let rows = ((self.max_bytes / row_bytes.max(1)) & !1).max(2);
        let heights: Vec<usize> = (0..h).step_by(rows).map(|start| rows.min(h - start)).collect();
        self.recut(&heights)
    }

    /// The same map cut into bands of the given heights (which sum to the map's height).
    fn recut(self, heights: &[usize]) -> Self {
        let same = heights.len() == self.bands.len() && self.bands.iter().zip(heights).all(|(t, &h)| t.dims()[2] == h);
        if same {
            return self;
        }
        let mut bands = Vec::with_capacity(heights.len());
        let mut start = 0;
        for &h in heights {
            bands.push(self.rows(start, h));
            start += h;
        }
        Self { bands, max_bytes: self.max_bytes }
    }

    /// Rows `start..start + len` of the map, from the bands that hold them.
    fn rows(&self, start: usize, len: usize) -> Tensor<4> {
        let mut pieces = Vec::new();
        let mut top = 0;
        for band in &self.bands {
            let h = band.dims()[2];
            let (from, to) = (start.max(top), (start + len).min(top + h));
            if from < to {
                pieces.push(band.clone().narrow(2, from - top, to - from));
            }
            top += h;
        }
        if pieces.len() == 1 { pieces.pop().unwrap() } else { Tensor::cat(pieces, 2) }
    }

    fn map(self, f: impl Fn(Tensor<4>) -> Tensor<4>) -> Self {
        Self { bands: self.bands.into_iter().map(f).collect(), max_bytes: self.max_bytes }
    }

    /// The zero row above the first band and below the last, or the neighbour's adjacent row.
    fn halo(&self, i: usize, above: bool, device: &Device) -> Tensor<4> {
        let [b, c, _, w] = self.bands[i].dims();
        let neighbour = if above { i.checked_sub(1) } else { Some(i + 1) };
        match neighbour.and_then(|n| self.bands.get(n)) {
            Some(t) if above => t.clone().narrow(2, t.dims()[2] - 1, 1),
            Some(t) => t.clone().narrow(2, 0, 1),
            None => Tensor::zeros([b, c, 1, w], (device, self.bands[i].dtype())),
        }
    }
}

impl FeatureMap for Bands {
    fn group_norm_silu(self, norm: &GroupNorm) -> Self {
        if self.bands.len() == 1 {
            return self.map(|t| t.group_norm_silu(norm));
        }
        let max_bytes = self.max_bytes;
        Self { bands: crate::group_norm::forward_bands(norm, self.bands), max_bytes }
    }

    fn conv(self, conv: &Conv2d) -> Self {
        let weight = conv.weight.val();
        let [c_out, c_in, k, _] = weight.dims();
        let bias = conv.bias.as_ref().map(|p| p.val());
        let stride = conv.stride[0];
        let growth = c_out.div_ceil(c_in);
        let this = self.refit(growth);
        if this.bands.len() == 1 {
            return this.map(|t| t.conv(conv));
        }
        if k == 1 {
            return this.map(|t| conv2d(t, weight.clone(), bias.clone(), 1, [0; 4]));
        }
        let device = weight.device();
        // Under a stride-2 convolution, a last band of one row makes no output row (its window runs off the map).
        let bands = (0..this.bands.len())
            .filter(|&i| stride == 1 || this.bands[i].dims()[2] > 1)
            .map(|i| {
                let band = this.bands[i].clone();
                match stride {
                    // Rows 2r, 2r+1, 2r+2 make output row r: one halo row below, none above.
                    2 => {
                        let input = Tensor::cat(vec![band, this.halo(i, false, &device)], 2);
                        conv2d(input, weight.clone(), bias.clone(), 2, [0, 0, 0, 1])
                    }
                    _ => {
                        let input =
                            Tensor::cat(vec![this.halo(i, true, &device), band, this.halo(i, false, &device)], 2);
                        conv2d(input, weight.clone(), bias.clone(), 1, [0, 1, 0, 1])
                    }
                }
            })
            .collect();
        Self { bands, max_bytes: this.max_bytes }
    }

    fn add(self, other: Self) -> Self {
        let heights: Vec<usize> = self.bands.iter().map(|t| t.dims()[2]).collect();
        let other = other.recut(&heights);
        Self { bands: self.bands.into_iter().zip(other.bands).map(|(a, b)| a + b).collect(), max_bytes: self.max_bytes }
    }

    fn shift(self, shift: Tensor<2>) -> Self {
        let [b, c] = shift.dims();
        let shift = shift.reshape([b, c, 1, 1]);
        self.map(|t| t + shift.clone())
    }

    fn upsample(self) -> Self {
        self.refit(4).map(FeatureMap::upsample)
    }
}
