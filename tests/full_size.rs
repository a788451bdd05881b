//! SD1.5-sized random models (written by `make_fixtures.py --full DIR`) against diffusers, one forward pass each,
//! with the largest device allocation checked against 128 MiB where the backend reports it (wgpu).
//!
//! `FPI_FULL_MODEL=DIR FPI_TEST_DEVICE=wgpu cargo test --release --test full_size -- --ignored --nocapture`

mod common;

use burn::tensor::{FloatDType, Tensor, TensorData};
use common::*;

const LIMIT: u64 = 128 << 20;

fn largest_allocation(device: &burn::tensor::Device) -> Option<u64> {
    device.sync().unwrap();
    let report = device.memory_pool_report()?;
    report.iter().map(|pool| pool.largest_alloc).max()
}

#[test]
#[ignore = "needs FPI_FULL_MODEL: an SD1.5-sized model from make_fixtures.py --full"]
fn sd15_sized_models_match_diffusers_within_128_mib_tensors() {
    check_sd15_sized(FloatDType::F32, "reference.safetensors", 1e-4);
}

/// In f16 (a wgpu adapter with shader-f16) against diffusers in f16 (`make_f16_reference.py --full DIR`).
#[test]
#[ignore = "needs FPI_FULL_MODEL with reference-f16.safetensors (make_f16_reference.py --full) and shader-f16"]
fn sd15_sized_models_in_f16_match_diffusers_in_f16_within_128_mib_tensors() {
    check_sd15_sized(FloatDType::F16, "reference-f16.safetensors", 1e-2);
}

/// Each network in `dtype` against the references `outputs` (inputs from `reference.safetensors`) to `tol`.
fn check_sd15_sized(dtype: FloatDType, outputs: &str, tol: f64) {
    let dir = std::env::var("FPI_FULL_MODEL").expect("set FPI_FULL_MODEL to the folder written by --full");
    let dir = std::path::Path::new(&dir);
    let refs = References::open(&dir.join("reference.safetensors"));
    let expected = References::open(&dir.join(outputs));
    let device = device();
    let mut folder = folder(dir);
    folder.dtype = dtype;
    let check_memory = |what: &str| {
        if let Some(bytes) = largest_allocation(&device) {
            eprintln!("{what}: largest device allocation {:.1} MiB", bytes as f64 / (1 << 20) as f64);
            assert!(bytes <= LIMIT, "{what}: a device allocation of {bytes} bytes exceeds 128 MiB");
        }
    };

    let clip = load_clip(&folder).unwrap();
    let ids: Vec<Vec<u32>> = refs.ints("clip.ids").chunks(77).map(|r| r.iter().map(|&i| i as u32).collect()).collect();
    assert_close(clip.forward(&ids, &device).unwrap(), &expected, "clip.hidden", tol);
    check_memory("CLIP");
    drop(clip);

    let unet = load_unet(&folder).unwrap();
    let sample: Tensor<4> = refs.tensor("unet.b1.sample", &device);
    let context: Tensor<3> = refs.tensor("unet.b1.context", &device);
    let t = refs.ints("unet.b1.timestep")[0] as f32;
    let eps = unet.forward(sample, Tensor::from_data(TensorData::new(vec![t], [1]), &device), &context);
    assert_close(eps, &expected, "unet.b1.eps", tol);
    check_memory("UNet");
    drop(unet);

    let vae = load_vae(&folder).unwrap();
    let posterior = vae.encode(refs.tensor("vae.image", &device));
    assert_close(posterior.mean, &expected, "vae.mean", tol);
    assert_close(vae.decode(refs.tensor("vae.latent", &device)), &expected, "vae.decoded", tol);
    check_memory("VAE");
}

/// One Prompt-to-Prompt step at 512² (batch 4, the attention hook on every cross-attention layer and on the
/// self-attention of 16×16 layers, a local blend) keeps every device allocation within 128 MiB.
#[test]
#[ignore = "needs FPI_FULL_MODEL: an SD1.5-sized model from make_fixtures.py --full"]
fn one_edit_step_at_512_stays_within_128_mib() {
    use fpi_pipeline::edit::EditSettings;
    let dir = std::env::var("FPI_FULL_MODEL").expect("set FPI_FULL_MODEL to the folder written by --full");
    let device = device();
    let pipeline = pollster::block_on(fpi_pipeline::Pipeline::load(
        &folder(std::path::Path::new(&dir)),
        device.clone(),
        &mut |_, _, _| {},
    ))
    .unwrap();
    let seed = Tensor::<4>::random([1, 4, 64, 64], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let edit = EditSettings {
        prompt: "a photograph of a dog".into(),
        blend: vec!["cat".into(), "dog".into()],
        ..EditSettings::default()
    };
    let started = std::time::Instant::now();
    let edited = pollster::block_on(
        pipeline.edit(seed, "a photograph of a cat", &edit, 1, 2.0, &mut |_, _| std::ops::ControlFlow::Continue(())),
    )
    .unwrap();
    assert!(values(edited.target).iter().all(|v| v.is_finite()));
    eprintln!("one edit step at 512²: {:.1} s", started.elapsed().as_secs_f64());
    if let Some(bytes) = largest_allocation(&device) {
        eprintln!("edit: largest device allocation {:.1} MiB", bytes as f64 / (1 << 20) as f64);
        assert!(bytes <= LIMIT, "edit: a device allocation of {bytes} bytes exceeds 128 MiB");
    }
    if let Some(usage) = device.memory_pool_usage() {
        eprintln!("edit: device memory reserved {:.0} MiB", usage.bytes_reserved as f64 / (1 << 20) as f64);
    }
}
