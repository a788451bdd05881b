//! The networks in half precision (`--precision f16`) against diffusers/transformers run in f16 on the tiny model
//! (`tests/fixtures/reference/models-f16.safetensors`, from `tests/reference/make_f16_reference.py`): ≤ 1e-2
//! relative L2 on a device that computes in f16 (`FPI_TEST_DEVICE=wgpu`: lavapipe has shader-f16). A device that
//! cannot (the CPU backends) must refuse f16 and run `auto` in f32.

mod common;

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Distribution, FloatDType, Tensor, TensorData};
use common::*;
use fpi_models::ModelFolder;
use fpi_models::precision::Precision;
use fpi_models::source::Directory;

const TOL: f64 = 1e-2;

fn f16_references() -> References {
    References::open(&fixtures().join("reference/models-f16.safetensors"))
}

/// Asserts `actual` is within [`TOL`] of diffusers' f16 output `key`, and reports its distance from the f32 one.
fn assert_close_f16<const D: usize>(actual: Tensor<D>, key: &str) {
    assert_eq!(actual.dtype(), DType::F32, "{key}: outputs are f32");
    let (f32_reference, _) = model_references().floats(key);
    eprintln!("{key}: relative L2 error {:.3e} from diffusers in f32", rel_l2(&values(actual.clone()), &f32_reference));
    assert_close(actual, &f16_references(), key, TOL);
}

/// The tiny model's folder, loading in f16; `None` where the test device cannot compute in f16 (after checking
/// that it refuses f16 and that `auto` is f32 there).
fn half_precision_folder() -> Option<ModelFolder<Directory>> {
    let device = device();
    match Precision::F16.resolve(&device) {
        Ok(dtype) => {
            assert_eq!(dtype, FloatDType::F16);
            assert_eq!(Precision::Auto.resolve(&device).unwrap(), FloatDType::F16, "auto takes f16 where it can");
            let mut folder = folder(&tiny_model());
            folder.dtype = dtype;
            Some(folder)
        }
        Err(e) => {
            assert!(e.to_string().contains("shader-f16"), "{e}");
            assert_eq!(Precision::Auto.resolve(&device).unwrap(), FloatDType::F32);
            eprintln!("this device computes in f32 only: f16 refused, auto is f32");
            None
        }
    }
}

#[test]
fn weights_load_in_f16_with_norms_in_f32() {
    let Some(folder) = half_precision_folder() else { return };
    let unet = load_unet(&folder).unwrap();
    assert_eq!(unet.dtype(), FloatDType::F16);
    assert_eq!(unet.conv_in.weight.val().dtype(), DType::F16);
    assert_eq!(unet.conv_norm_out.gamma.as_ref().unwrap().val().dtype(), DType::F32);
    let clip = load_clip(&folder).unwrap();
    assert_eq!(clip.dtype(), FloatDType::F16);
    assert_eq!(clip.final_layer_norm.gamma.val().dtype(), DType::F32);
}

#[test]
fn clip_in_f16_matches_transformers_in_f16() {
    let Some(folder) = half_precision_folder() else { return };
    let (refs, device) = (model_references(), device());
    let clip = load_clip(&folder).unwrap();
    let ids: Vec<Vec<u32>> = refs.ints("clip.ids").chunks(77).map(|r| r.iter().map(|&i| i as u32).collect()).collect();
    assert_close_f16(clip.forward(&ids, &device).unwrap(), "clip.hidden");
}

fn unet_eps(batch: &str) {
    let Some(folder) = half_precision_folder() else { return };
    let (refs, device) = (model_references(), device());
    let unet = load_unet(&folder).unwrap();
    let sample: Tensor<4> = refs.tensor(&format!("unet.{batch}.sample"), &device);
    let context: Tensor<3> = refs.tensor(&format!("unet.{batch}.context"), &device);
    let t = refs.ints(&format!("unet.{batch}.timestep"))[0] as f32;
    let timesteps = Tensor::<1>::from_data(TensorData::new(vec![t; sample.dims()[0]], [sample.dims()[0]]), &device);
    assert_close_f16(unet.forward(sample, timesteps, &context), &format!("unet.{batch}.eps"));
}

#[test]
fn unet_in_f16_matches_diffusers_in_f16_batch_1() {
    unet_eps("b1");
}

#[test]
fn unet_in_f16_matches_diffusers_in_f16_batch_2() {
    unet_eps("b2");
}

fn check_vae(band_bytes: Option<usize>) {
    let Some(folder) = half_precision_folder() else { return };
    let (refs, device) = (model_references(), device());
    let mut vae = load_vae(&folder).unwrap();
    if let Some(bytes) = band_bytes {
        vae.band_bytes = bytes;
    }
    let posterior = vae.encode(refs.tensor("vae.image", &device));
    assert_close_f16(posterior.mean, "vae.mean");
    assert_close_f16(posterior.logvar, "vae.logvar");
    assert_close_f16(vae.decode(refs.tensor("vae.latent", &device)), "vae.decoded");
}

#[test]
fn vae_in_f16_matches_diffusers_in_f16() {
    check_vae(None);
}

/// The banded path's group norm (statistics summed over bands in f32) and halos in f16.
#[test]
fn vae_in_f16_in_bands_of_rows_matches_diffusers_in_f16() {
    check_vae(Some(4 << 10));
}

/// f16 convolutions (3×3 stride 1 and 2, 1×1, with padding) are summed in f32: within 1e-3 of the f32 convolution
/// of the same f16 values even over 320 channels (burn's direct convolution, summing in f16, is off by 8e-3).
#[test]
fn f16_convolutions_sum_in_f32() {
    if half_precision_folder().is_none() {
        return;
    }
    let device = device();
    let half = |t: Tensor<4>| t.cast(FloatDType::F16);
    let cases =
        [(64, 3, 1, [1; 4]), (320, 3, 1, [1; 4]), (64, 3, 2, [0, 0, 1, 1]), (64, 3, 2, [1; 4]), (320, 1, 1, [0; 4])];
    for (c, k, stride, padding) in cases {
        let random = |shape: [usize; 4]| half(Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device));
        let x = random([2, c, 16, 16]);
        let weight = half(random([c / 2, c, k, k]).cast(FloatDType::F32).mul_scalar(1.0 / ((k * k * c) as f64).sqrt()));
        let bias = Tensor::<1>::random([c / 2], Distribution::Normal(0.0, 1.0), &device).cast(FloatDType::F16);
        let [top, left, bottom, right] = padding;
        let options = ConvOptions::new_with_padding([stride, stride], [(top, bottom), (left, right)], [1, 1], 1);
        let f32 = |t: Tensor<4>| t.cast(FloatDType::F32);
        let exact = conv2d(f32(x.clone()), f32(weight.clone()), Some(bias.clone().cast(FloatDType::F32)), options);
        let ours = fpi_models::conv::conv2d(x, weight, Some(bias), stride, padding);
        assert_eq!(ours.dtype(), DType::F16);
        let err = rel_l2(&values(ours), &values(exact));
        eprintln!("{c} channels, {k}×{k}, stride {stride}: relative L2 error {err:.2e}");
        assert!(err <= 1e-3, "{c} channels, {k}×{k}, stride {stride}: {err:.2e}");
    }
}
