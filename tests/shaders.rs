//! fpi's own WGSL kernels (`shaders/`) against burn's composition of the same operation, whole tensors by relative
//! L2 error: ≤ 1e-5 in f32, and in f16 no further from burn's f32 result than burn's own f16 composition is. They
//! run where the kernels do, on wgpu (`FPI_TEST_DEVICE=wgpu`: lavapipe here, f16 included); on the CPU backends
//! the tests check nothing and say so.

mod common;

use burn::nn::{GroupNorm, GroupNormConfig};
use burn::tensor::{Distribution, FloatDType, Tensor};
use common::*;
use fpi_models::feature_map::{Bands, FeatureMap};
use fpi_models::group_norm;

/// A group norm of `channels` in `groups` with random γ and β (f32, as in every model).
fn norm(groups: usize, channels: usize) -> GroupNorm {
    let device = device();
    let random = |mean| Tensor::<1>::random([channels], Distribution::Normal(mean, 0.5), &device);
    let mut norm = GroupNormConfig::new(groups, channels).with_epsilon(1e-6).init(&device);
    norm.gamma = norm.gamma.map(|p| p.map(|_| random(1.0)));
    norm.beta = norm.beta.map(|p| p.map(|_| random(0.0)));
    norm
}

/// A map with an offset and scale per channel, as activations have (a plain normal map would hide centring errors).
fn map(dims: [usize; 4]) -> Tensor<4> {
    let device = device();
    let x = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
    let scale = Tensor::<4>::random([1, dims[1], 1, 1], Distribution::Uniform(0.5, 4.0), &device);
    let offset = Tensor::<4>::random([1, dims[1], 1, 1], Distribution::Normal(0.0, 3.0), &device);
    x * scale + offset
}

fn on_wgpu() -> bool {
    let wgpu = fpi_models::device::is_wgpu(&device());
    if !wgpu {
        eprintln!("not on wgpu: the WGSL kernels do not run on this device, nothing to check");
    }
    wgpu
}

/// The WGSL kernels against burn's modules in f32, and `forward` taking the kernels.
fn check_f32(dims: [usize; 4], groups: usize, then_silu: bool) {
    let (norm, x) = (norm(groups, dims[1]), map(dims));
    assert!(group_norm::wgsl_applies(&norm, &x), "the kernels apply to an f32 map on wgpu");
    let ours = values(group_norm::by_wgsl(&norm, x.clone(), then_silu));
    assert_eq!(values(group_norm::forward(&norm, x.clone(), then_silu)), ours, "forward runs the kernels");
    let err = rel_l2(&ours, &values(group_norm::composed(&norm, x, then_silu)));
    eprintln!("{dims:?} in {groups} groups, SiLU {then_silu}: relative L2 error {err:.2e}");
    assert!(err <= 1e-5, "{dims:?}, SiLU {then_silu}: {err:.2e} from burn's group norm");
}

#[test]
fn group_norm_kernel_matches_burn_in_f32() {
    if !on_wgpu() {
        return;
    }
    check_f32([2, 64, 16, 16], 32, true);
    check_f32([2, 64, 16, 16], 32, false);
    // Fewer elements per group than invocations in a workgroup, and a plane of one pixel.
    check_f32([1, 32, 3, 5], 8, true);
    check_f32([2, 64, 1, 1], 32, true);
    // Groups cut into slices: two slices of 4 channels (30,720 elements), 2 of one channel, 7 of 64 channels with
    // slices that start and end inside a channel and a shorter last one.
    check_f32([1, 128, 96, 80], 32, true);
    check_f32([2, 8, 200, 90], 8, true);
    check_f32([1, 64, 40, 40], 1, false);
}

#[test]
fn group_norm_kernel_in_f16_is_as_close_as_burns_f16() {
    let device = device();
    if !on_wgpu() || !fpi_models::precision::computes_in_f16(&device) {
        return;
    }
    // One slice per group, and seven slices spanning channels.
    for (dims, groups) in [([2, 64, 24, 24], 32), ([1, 64, 40, 40], 1)] {
        let (norm, x) = (norm(groups, dims[1]), map(dims));
        let exact = values(group_norm::composed(&norm, x.clone(), true));
        let half = x.cast(FloatDType::F16);
        assert!(group_norm::wgsl_applies(&norm, &half), "the kernels apply to an f16 map");
        let ours = group_norm::by_wgsl(&norm, half.clone(), true);
        assert_eq!(ours.dtype(), half.dtype(), "the output keeps the map's type");
        let ours = rel_l2(&values(ours), &exact);
        let burn = rel_l2(&values(group_norm::composed(&norm, half, true)), &exact);
        eprintln!("{dims:?} in {groups} groups, f16 from f32: ours {ours:.2e}, burn's {burn:.2e}");
        assert!(ours <= burn * 1.1 + 1e-6, "ours {ours:.2e} against burn's {burn:.2e}");
    }
}

/// A map in bands of rows, normalised with statistics over all its bands, against burn's norm of the whole map.
fn check_bands(dims: [usize; 4], groups: usize, band_rows: usize, dtype: FloatDType, tol: f64) {
    let (norm, x) = (norm(groups, dims[1]), map(dims).cast(dtype));
    let row_bytes = dims[0] * dims[1] * dims[3] * size_of::<f32>();
    let bands = Bands::split(x.clone(), band_rows * row_bytes);
    let banded = values(bands.group_norm_silu(&norm).join());
    let err = rel_l2(&banded, &values(group_norm::composed(&norm, x.cast(FloatDType::F32), true)));
    eprintln!("{dims:?} in {groups} groups, bands of {band_rows} rows, {dtype:?}: relative L2 error {err:.2e}");
    assert!(err <= tol, "banded {dtype:?}: {err:.2e} from burn's group norm of the whole map");
}

#[test]
fn banded_group_norm_matches_the_whole_map() {
    if !on_wgpu() {
        return;
    }
    // Four groups of 16 channels in bands of 12 rows (the last of 4): each band's group (16 × 12 × 90 elements) is
    // cut into two slices that start and end inside a channel; two batch items.
    check_bands([2, 64, 40, 90], 4, 12, FloatDType::F32, 1e-5);
    if fpi_models::precision::computes_in_f16(&device()) {
        // f16 output rounding (2⁻¹¹ relative) bounds the error.
        check_bands([2, 64, 40, 90], 4, 12, FloatDType::F16, 1e-3);
    }
}

/// A norm without affine parameters is not the kernel's: it goes to burn's module.
#[test]
fn norms_without_affine_parameters_fall_back_to_burn() {
    if !on_wgpu() {
        return;
    }
    let plain = GroupNormConfig::new(8, 32).with_affine(false).init(&device());
    let x = map([1, 32, 8, 8]);
    assert!(!group_norm::wgsl_applies(&plain, &x));
    let reference = values(plain.forward(x.clone()));
    let err = rel_l2(&values(group_norm::forward(&plain, x, false)), &reference);
    assert!(err <= 1e-6, "{err:.2e}");
}
