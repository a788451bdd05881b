//! Group normalisation, optionally followed by SiLU, fused: our CPU kernel for f32 on flex, our WGSL kernels on
//! wgpu (`shaders/group_norm_statistics.wgsl`, then `shaders/group_norm_silu.wgsl`), burn's modules elsewhere
//! (computed in f32 for an f16 map, as diffusers' half-precision models do).
//!
//! burn's group norm makes some eight passes over the map (mean, centring, squares, their mean, scaling, the
//! affine's product and sum) and SiLU another two, each into a new tensor, plus two casts for an f16 map. The WGSL
//! kernels read the map once for its statistics and once more to normalise it, and write the output once; the CPU
//! kernel reads each group twice for its statistics (in f64), and computes SiLU's exponential by a polynomial the
//! compiler vectorises.

use burn::nn::GroupNorm;
use burn::tensor::activation::silu;
use burn::tensor::{DType, FloatDType, Tensor};

use crate::precision::in_f32;
use crate::profile::{self, Op};

/// `norm(x)`, then SiLU if `then_silu`, for `x` `[B, C, H, W]`.
pub fn forward(norm: &GroupNorm, x: Tensor<4>, then_silu: bool) -> Tensor<4> {
    let device = x.device();
    profile::timed(Op::GroupNorm, &device, || untimed(norm, x, then_silu))
}

fn untimed(norm: &GroupNorm, x: Tensor<4>, then_silu: bool) -> Tensor<4> {
    #[cfg(not(target_family = "wasm"))]
    if cpu::handles(norm, &x) {
        return cpu::group_norm(norm, x, then_silu);
    }
    if wgsl_applies(norm, &x) {
        return by_wgsl(norm, x, then_silu);
    }
    composed(norm, x, then_silu)
}

/// Whether fpi's WGSL kernels compute `norm` for `x`: a non-empty map on wgpu of a type they take (f32, f16), and
/// a norm with f32 affine parameters.
pub fn wgsl_applies(norm: &GroupNorm, x: &Tensor<4>) -> bool {
    let f32_parameter =
        |p: &Option<burn::module::Param<Tensor<1>>>| p.as_ref().is_some_and(|p| p.val().dtype() == DType::F32);
    crate::device::is_wgpu(&x.device())
        && crate::wgsl::handles_dtype(x.dtype())
        && x.shape().num_elements() > 0
        && f32_parameter(&norm.gamma)
        && f32_parameter(&norm.beta)
}

/// [`forward`] by fpi's WGSL kernels, which must apply ([`wgsl_applies`]): the statistics, then the normalisation.
pub fn by_wgsl(norm: &GroupNorm, x: Tensor<4>, then_silu: bool) -> Tensor<4> {
    assert!(wgsl_applies(norm, &x), "the WGSL group norm does not apply to this norm and map");
    let x = crate::wgsl::contiguous(x);
    let partials = crate::wgsl::group_norm_statistics(x.clone(), norm.num_groups);
    let (gamma, beta) = affine(norm);
    crate::wgsl::group_norm_silu(x, gamma, beta, partials, norm.epsilon, then_silu)
}

/// `norm`'s γ and β (which it has where the WGSL kernels apply).
fn affine(norm: &GroupNorm) -> (Tensor<1>, Tensor<1>) {
    let value = |p: &Option<burn::module::Param<Tensor<1>>>| p.as_ref().expect("an affine group norm").val();
    (value(&norm.gamma), value(&norm.beta))
}

/// `norm(x)` then SiLU for a map `[B, C, H, W]` held as `bands` of rows (top to bottom), with each group's
/// statistics taken over all the bands: the normalised bands, of the same heights.
pub fn forward_bands(norm: &GroupNorm, bands: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
    if bands.iter().all(|band| wgsl_applies(norm, band)) {
        let bands: Vec<Tensor<4>> = bands.into_iter().map(crate::wgsl::contiguous).collect();
        let partials = bands.iter().map(|band| crate::wgsl::group_norm_statistics(band.clone(), norm.num_groups));
        let partials = Tensor::cat(partials.collect(), 2);
        let (gamma, beta) = affine(norm);
        return bands
            .into_iter()
            .map(|band| {
                crate::wgsl::group_norm_silu(band, gamma.clone(), beta.clone(), partials.clone(), norm.epsilon, true)
            })
            .collect();
    }
    // burn's modules: the statistics in f32 from sums over the bands, then each band normalised in f32.
    let [b, c, _, w] = bands[0].dims();
    let h: usize = bands.iter().map(|t| t.dims()[2]).sum();
    let g = norm.num_groups;
    let count = (c / g * h * w) as f64;
    let grouped = |t: &Tensor<4>| t.clone().cast(FloatDType::F32).reshape([b as i64, g as i64, -1]);
    let total = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
        let sums: Vec<Tensor<3>> = bands.iter().map(|t| f(grouped(t)).sum_dim(2)).collect();
        Tensor::cat(sums, 2).sum_dim(2).div_scalar(count)
    };
    let mean = total(&|x| x);
    let var = total(&|x| (x - mean.clone()).powi_scalar(2));
    let inv_std = var.add_scalar(norm.epsilon).sqrt().recip();
    let normalise = |x: Tensor<4>| {
        let band_h = x.dims()[2];
        let normed = ((grouped(&x) - mean.clone()) * inv_std.clone()).reshape([b, c, band_h, w]);
        let scaled = match &norm.gamma {
            Some(gamma) => normed * gamma.val().reshape([1, c, 1, 1]),
            None => normed,
        };
        silu(match &norm.beta {
            Some(beta) => scaled + beta.val().reshape([1, c, 1, 1]),
            None => scaled,
        })
    };
    bands.into_iter().map(|x| in_f32(x, normalise)).collect()
}

/// The maps `[B, C, H, W]` on which benchmarks time group norm + SiLU for images of `size`² pixels: the largest of
/// a guided UNet step (batch 2, 320 channels at 1/8 of the image's side) and the VAE decoder's 256-channel level
/// (at half the side).
pub fn benchmark_maps(size: usize) -> [[usize; 4]; 2] {
    [[2, 320, size / 8, size / 8], [1, 256, size / 2, size / 2]]
}

/// The same as [`forward`] by burn's modules alone (in f32): the reference our kernels are tested and timed
/// against.
pub fn composed(norm: &GroupNorm, x: Tensor<4>, then_silu: bool) -> Tensor<4> {
    in_f32(x, |x| {
        let y = norm.forward(x);
        if then_silu { silu(y) } else { y }
    })
}

#[cfg(not(target_family = "wasm"))]
mod cpu {
    use burn::nn::GroupNorm;
    use burn::tensor::Tensor;
    use rayon::prelude::*;

    use crate::flex::{elements, exp, is_flex_f32, primitive, tensor_from_vec};

    /// Whether the fused kernel computes this norm: f32 on flex, with both affine parameters or neither.
    pub(super) fn handles(norm: &GroupNorm, x: &Tensor<4>) -> bool {
        let affine = norm.gamma.as_ref().map(|p| is_flex_f32(&p.val()));
        let shift = norm.beta.as_ref().map(|p| is_flex_f32(&p.val()));
        is_flex_f32(x) && affine == shift && affine != Some(false)
    }

    pub(super) fn group_norm(norm: &GroupNorm, x: Tensor<4>, then_silu: bool) -> Tensor<4> {
        let dims = x.dims();
        let [_, channels, h, w] = dims;
        let groups = norm.num_groups;
        assert_eq!(channels % groups, 0, "group norm of {channels} channels in {groups} groups");
        let x = primitive(x);
        let gamma = norm.gamma.as_ref().map(|p| primitive(p.val()));
        let beta = norm.beta.as_ref().map(|p| primitive(p.val()));
        let (gamma, beta) = (gamma.as_ref().map(elements), beta.as_ref().map(elements));
        let (plane, per_group) = (h * w, channels / groups * h * w);
        let input = elements(&x);
        let mut out = vec![0f32; input.len()];
        out.par_chunks_mut(per_group).zip(input.par_chunks(per_group)).enumerate().for_each(|(i, (to, from))| {
            let first_channel = (i % groups) * (channels / groups);
            let (mean, inv_std) = statistics(from, norm.epsilon);
            for (c, (to, from)) in to.chunks_mut(plane).zip(from.chunks(plane)).enumerate() {
                let channel = first_channel + c;
                let scale = gamma.map_or(1.0, |g| g[channel]) * inv_std;
                let shift = beta.map_or(0.0, |b| b[channel]) - mean * scale;
                if then_silu {
                    for (o, &v) in to.iter_mut().zip(from) {
                        let y = v * scale + shift;
                        *o = y / (1.0 + exp(-y));
                    }
                } else {
                    for (o, &v) in to.iter_mut().zip(from) {
                        *o = v * scale + shift;
                    }
                }
            }
        });
        tensor_from_vec(out, dims)
    }

    /// The mean and 1/√(variance + ε) of one group (the biased variance, as PyTorch's), accumulated in f64.
    fn statistics(x: &[f32], epsilon: f64) -> (f32, f32) {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean as f32, (1.0 / (var + epsilon).sqrt()) as f32)
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use burn::module::Module;
    use burn::nn::GroupNormConfig;
    use burn::tensor::activation::silu;
    use burn::tensor::{Device, Distribution, Tensor, Tolerance};

    /// The fused flex kernel against burn's group norm (and SiLU) on ndarray, with the same parameters.
    fn check(dims: [usize; 4], groups: usize, affine: bool, then_silu: bool) {
        #[allow(deprecated)]
        let (flex, ndarray) = (Device::flex(), Device::ndarray());
        let x = Tensor::<4>::random(dims, Distribution::Normal(0.5, 2.0), &flex).into_data();
        let config = GroupNormConfig::new(groups, dims[1]).with_epsilon(1e-6).with_affine(affine);
        let mut norm = config.init(&flex);
        if affine {
            let random = |scale| Tensor::<1>::random([dims[1]], Distribution::Normal(0.0, scale), &flex);
            norm.gamma = norm.gamma.map(|p| p.map(|_| random(1.0)));
            norm.beta = norm.beta.map(|p| p.map(|_| random(1.0)));
        }
        let ours = super::forward(&norm, Tensor::from_data(x.clone(), &flex), then_silu).into_data();
        let reference = {
            let norm = norm.clone().to_device(&ndarray);
            let y = norm.forward(Tensor::<4>::from_data(x, &ndarray));
            if then_silu { silu(y) } else { y }
        };
        ours.assert_approx_eq::<f32>(&reference.into_data(), Tolerance::absolute(2e-5));
    }

    #[test]
    fn fused_group_norm_matches_burn() {
        check([2, 64, 5, 7], 32, true, false);
        check([1, 12, 3, 4], 3, false, false);
    }

    #[test]
    fn fused_group_norm_then_silu_matches_burn() {
        check([2, 64, 9, 9], 32, true, true);
        check([1, 6, 2, 50], 2, false, true);
    }
}
