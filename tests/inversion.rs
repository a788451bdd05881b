//! The inversion core on the tiny model: the DDIM schedule against diffusers, sampling and inversion against a
//! PyTorch reference, the method's behaviour (error falls as K grows), and the browser case's native reference.
//! (The model-free tests against closed-form answers are `fpi-core`'s own.)

mod common;

use std::ops::ControlFlow;

use burn::tensor::Tensor;
use common::*;
use fpi_core::predictor::{Guided, NoisePredictor};
use fpi_core::schedule::{DdimSchedule, SchedulerConfig};
use fpi_core::settings::{InvertSettings, Method};
use fpi_core::solver::{Observer, invert, sample};
use fpi_models::unet::UNet2DConditionModel;
use fpi_pipeline::predictor::UNetPredictor;

const STEPS: usize = 50;

fn refs() -> References {
    References::open(&fixtures().join("reference/inversion.safetensors"))
}

fn schedule() -> DdimSchedule {
    let text = std::fs::read_to_string(tiny_model().join("scheduler/scheduler_config.json")).unwrap();
    DdimSchedule::new(&SchedulerConfig::parse(&text).unwrap(), STEPS).unwrap()
}

fn quiet() -> impl FnMut(&fpi_core::solver::Progress) -> ControlFlow<()> {
    |_| ControlFlow::Continue(())
}

#[test]
fn ddim_schedule_matches_diffusers() {
    let (refs, schedule) = (refs(), schedule());
    let timesteps: Vec<usize> = refs.ints("schedule.timesteps").iter().map(|&t| t as usize).collect();
    assert_eq!(schedule.timesteps, timesteps);
    assert_eq!(&schedule.timesteps[..3], &[981, 961, 941]);
    let (alphas, _) = refs.floats("schedule.alphas_cumprod");
    for (ours, theirs) in schedule.alphas_cumprod.iter().zip(&alphas) {
        assert!((ours - *theirs as f64).abs() <= 1e-6 * *theirs as f64, "{ours} vs {theirs}");
    }
    let (last, _) = refs.floats("schedule.final_alpha_cumprod");
    assert!((schedule.final_alpha_cumprod - last[0] as f64).abs() < 1e-7);
    assert!((schedule.final_alpha_cumprod - 0.99915).abs() < 1e-6);
}

/// The tiny UNet conditioned as the reference: the prompt alone at guidance 1, [empty; prompt] otherwise.
struct Tiny {
    unet: UNet2DConditionModel,
    context: Tensor<3>,
}

impl Tiny {
    fn load() -> Self {
        let device = device();
        Self { unet: load_unet(&folder(&tiny_model())).unwrap(), context: refs().tensor("context", &device) }
    }

    fn with<R>(&self, guidance: f64, f: impl FnOnce(&dyn Fn(Tensor<4>, usize) -> Tensor<4>) -> R) -> R {
        if guidance == 1.0 {
            let p = UNetPredictor { unet: &self.unet, context: self.context.clone().narrow(0, 1, 1) };
            f(&|z, t| p.predict(z, t))
        } else {
            let p =
                Guided { inner: UNetPredictor { unet: &self.unet, context: self.context.clone() }, scale: guidance };
            f(&|z, t| p.predict(z, t))
        }
    }
}

/// Any closure as a predictor.
struct Closure<'a>(&'a dyn Fn(Tensor<4>, usize) -> Tensor<4>);

impl NoisePredictor for Closure<'_> {
    fn predict(&self, latents: Tensor<4>, timestep: usize) -> Tensor<4> {
        (self.0)(latents, timestep)
    }
}

fn run_invert(p: &impl NoisePredictor, z0: Tensor<4>, method: Method) -> Tensor<4> {
    let observer: &mut Observer<'_> = &mut quiet();
    pollster::block_on(invert(p, &schedule(), z0, STEPS, method, observer)).unwrap().0
}

fn run_sample(p: &impl NoisePredictor, z: Tensor<4>) -> Tensor<4> {
    let observer: &mut Observer<'_> = &mut quiet();
    pollster::block_on(sample(p, &schedule(), z, STEPS, observer)).unwrap()
}

fn fpi(iterations: usize) -> Method {
    Method::FixedPoint { iterations, tolerance: None }
}

#[test]
fn sampling_and_inversion_match_pytorch() {
    let (tiny, refs, device) = (Tiny::load(), refs(), device());
    for (guidance, tag) in [(1.0, "g1"), (7.5, "g7.5")] {
        tiny.with(guidance, |p| {
            let p = Closure(p);
            let noise: Tensor<4> = refs.tensor("noise", &device);
            assert_close(run_sample(&p, noise), &refs, &format!("sample.{tag}"), 1e-4);
            for (method, k) in [(Method::Ddim, 1), (fpi(2), 2), (fpi(5), 5)] {
                let seed = run_invert(&p, refs.tensor("z0", &device), method);
                assert_close(seed, &refs, &format!("invert.{tag}.k{k}"), 1e-4);
            }
        });
    }
}

/// On random weights DDIM inversion is visibly wrong and fixed-point iterations fix it: the error of
/// sample(invert(z0)) against z0 falls as K grows (PyTorch on the same model: 0.91, 0.35, 7.4e-3).
#[test]
fn reconstruction_error_falls_as_iterations_grow() {
    let (tiny, refs, device) = (Tiny::load(), refs(), device());
    let z0: Tensor<4> = refs.tensor("z0", &device);
    let expected = values(z0.clone());
    let errors: Vec<f64> = tiny.with(1.0, |p| {
        let p = Closure(p);
        [1, 2, 5]
            .into_iter()
            .map(|k| {
                let back = run_sample(&p, run_invert(&p, z0.clone(), fpi(k)));
                rel_l2(&values(back), &expected)
            })
            .collect()
    });
    eprintln!("invert -> sample relative error at K = 1, 2, 5: {errors:?}");
    assert!(errors[0] > 0.5, "DDIM inversion should be visibly wrong here: {}", errors[0]);
    assert!(errors[0] > 2.0 * errors[1] && errors[1] > 10.0 * errors[2], "{errors:?}");
    assert!(errors[2] < 0.02, "{errors:?}");
}

/// The browser case (`tests/fixtures/web-case.json`): settings and a photo. The web build must give the seed and
/// PSNR recorded in `reference/web-case.*`; this test checks that the native build gives them too (so the browser
/// tests compare the browser with native), and rewrites them when `FPI_WRITE_WEB_REFERENCE=1`.
#[test]
fn the_browser_case_matches_its_native_reference() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("web-case.json")).unwrap()).unwrap();
    let settings: InvertSettings = serde_json::from_value(json.clone()).unwrap();
    let pipeline =
        pollster::block_on(fpi_pipeline::Pipeline::load(&folder(&tiny_model()), device(), &mut |_, _, _| {})).unwrap();
    let bytes = std::fs::read(fixtures().join(json["image"].as_str().unwrap())).unwrap();
    let image = fpi_pipeline::image_io::decode(&bytes).unwrap();
    let mut observe = |_: fpi_pipeline::Phase, _: &fpi_core::solver::Progress| ControlFlow::Continue(());
    let inverted = pollster::block_on(pipeline.invert_image(&image, &settings, "tiny-sd", &mut observe)).unwrap();
    let check = pollster::block_on(pipeline.check_reconstruction(&inverted, &mut observe)).unwrap();
    let seed = inverted.seed;

    let (seed_path, json_path) =
        (fixtures().join("reference/web-case.safetensors"), fixtures().join("reference/web-case.json"));
    if std::env::var("FPI_WRITE_WEB_REFERENCE").is_ok_and(|v| v == "1") {
        std::fs::write(&seed_path, seed.to_bytes()).unwrap();
        let results =
            serde_json::json!({ "psnr": check.psnr, "vae_psnr": check.vae_psnr, "latent_error": check.latent_error });
        std::fs::write(&json_path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    }
    let reference = fpi_core::seed::Seed::from_bytes(&std::fs::read(&seed_path).unwrap()).unwrap();
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(seed.shape, reference.shape);
    assert_eq!(seed.info, reference.info);
    let err = rel_l2(&seed.latents, &reference.latents);
    assert!(err <= 1e-4, "seed differs from the reference by {err:.2e}");
    let psnr = results["psnr"].as_f64().unwrap();
    assert!((check.psnr - psnr).abs() <= 0.05, "PSNR {:.3} dB, reference {psnr:.3} dB", check.psnr);
}
