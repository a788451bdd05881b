//! The inversion core: the DDIM schedule against diffusers, sampling and inversion against a PyTorch reference on the
//! tiny model, the method's behaviour (error falls as K grows), and closed-form answers from an analytic predictor.

mod common;

use std::ops::ControlFlow;

use burn::tensor::{Tensor, TensorData};
use common::*;
use fpi_core::predictor::{Guided, NoisePredictor};
use fpi_core::schedule::{DdimSchedule, SchedulerConfig, ddim_coefficients};
use fpi_core::solver::{Method, Observer, invert, invert_step, sample};
use fpi_models::unet::UNet2DConditionModel;
use fpi_pipeline::predictor::UNetPredictor;

const STEPS: usize = 50;

fn refs() -> References {
    References::open(&fixtures().join("reference/inversion.safetensors"))
}

fn schedule() -> DdimSchedule {
    let path = tiny_model().join("scheduler/scheduler_config.json");
    DdimSchedule::new(&SchedulerConfig::from_file(&path).unwrap(), STEPS).unwrap()
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

/// ε(z, t) = λ·z: the implicit step z = a·z_prev + b·λ·z has the fixed point z* = a·z_prev / (1 − bλ).
struct Linear(f32);

impl NoisePredictor for Linear {
    fn predict(&self, latents: Tensor<4>, _timestep: usize) -> Tensor<4> {
        latents.mul_scalar(self.0)
    }
}

fn analytic_case() -> (DdimSchedule, usize, f64, f64) {
    let schedule = schedule();
    let i = 0; // the noisiest step: from ā(961) to ā(981), where b is largest
    let t = schedule.timesteps[i];
    (schedule.clone(), t, schedule.alpha_cumprod_prev(i), schedule.alphas_cumprod[t])
}

fn z_prev() -> Tensor<4> {
    let values: Vec<f32> = (0..4 * 8 * 8).map(|i| ((i as f32) * 0.37).sin()).collect();
    Tensor::from_data(TensorData::new(values, [1, 4, 8, 8]), &device())
}

#[test]
fn fixed_point_iterations_converge_to_the_closed_form_solution() {
    let (_, t, alpha_prev, alpha_t) = analytic_case();
    let (a, b) = ddim_coefficients(alpha_prev, alpha_t);
    let lambda = 3.0;
    let scale = a / (1.0 - b * lambda as f64);
    let run = pollster::block_on(invert_step(&Linear(lambda), z_prev(), alpha_prev, alpha_t, t, fpi(60), |_, _| {
        ControlFlow::Continue(())
    }));
    let solution = run.unwrap();
    let expected: Vec<f32> = values(z_prev()).iter().map(|v| (*v as f64 * scale) as f32).collect();
    let err = rel_l2(&values(solution.z), &expected);
    assert!(err < 1e-5, "relative error {err:.2e} to the fixed point (bλ = {:.3})", b * lambda as f64);
    // Geometric convergence down to float rounding.
    let residuals = &solution.residuals;
    assert!(residuals[..6].windows(2).all(|w| w[1] < w[0]), "{residuals:?}");
    assert!(residuals.iter().copied().fold(f64::INFINITY, f64::min) < 1e-6, "{residuals:?}");
}

#[test]
fn tolerance_stops_at_the_first_iteration_below_it() {
    let (_, t, alpha_prev, alpha_t) = analytic_case();
    let (a, b) = ddim_coefficients(alpha_prev, alpha_t);
    let lambda = 3.0f64;
    // zⁱ = sᵢ·z_prev with s₀ = 1, sᵢ₊₁ = a + bλ·sᵢ; the residual of iteration i is |sᵢ₊₁ − sᵢ| / |sᵢ|.
    let mut s = vec![1.0f64];
    for _ in 0..20 {
        s.push(a + b * lambda * s.last().unwrap());
    }
    let closed_form: Vec<f64> = s.windows(2).map(|w| (w[1] - w[0]).abs() / w[0].abs()).collect();
    let tolerance = 1e-3;
    let expected_iterations = closed_form.iter().position(|&r| r < tolerance).unwrap() + 1;
    assert!(expected_iterations > 2, "the case should need a few iterations");

    let method = Method::FixedPoint { iterations: 20, tolerance: Some(tolerance) };
    let run =
        pollster::block_on(invert_step(&Linear(lambda as f32), z_prev(), alpha_prev, alpha_t, t, method, |_, _| {
            ControlFlow::Continue(())
        }));
    let solution = run.unwrap();
    let (z, residuals) = (solution.z, solution.residuals);
    assert_eq!(residuals.len(), expected_iterations, "{residuals:?} vs {closed_form:?}");
    for (ours, theirs) in residuals.iter().zip(&closed_form) {
        assert!((ours - theirs).abs() <= 1e-4 * theirs.max(1e-3), "{ours} vs {theirs}");
    }
    let expected: Vec<f32> = values(z_prev()).iter().map(|v| (*v as f64 * s[expected_iterations]) as f32).collect();
    assert!(rel_l2(&values(z), &expected) < 1e-6);
}

#[test]
fn a_growing_residual_keeps_the_best_iterate() {
    let (_, t, alpha_prev, alpha_t) = analytic_case();
    let (a, b) = ddim_coefficients(alpha_prev, alpha_t);
    // ε = λ·z with bλ = −1.5 diverges: zⁱ = sᵢ·z_prev, sᵢ₊₁ = a + bλ·sᵢ, residual of zⁱ = |sᵢ₊₁ − sᵢ| / |sᵢ|.
    let lambda = -1.5 / b;
    let mut s = vec![1.0f64];
    for _ in 0..6 {
        s.push(a + b * lambda * s.last().unwrap());
    }
    let closed_form: Vec<f64> = s.windows(2).map(|w| (w[1] - w[0]).abs() / w[0].abs()).collect();
    let best = (1..6).min_by(|&i, &j| closed_form[i].total_cmp(&closed_form[j])).unwrap();
    assert!(closed_form[5] > closed_form[best], "the case must diverge: {closed_form:?}");

    let run =
        pollster::block_on(invert_step(&Linear(lambda as f32), z_prev(), alpha_prev, alpha_t, t, fpi(6), |_, _| {
            ControlFlow::Continue(())
        }));
    let solution = run.unwrap();
    assert_eq!(solution.kept, best, "residuals {:?}", solution.residuals);
    let expected: Vec<f32> = values(z_prev()).iter().map(|v| (*v as f64 * s[best]) as f32).collect();
    assert!(rel_l2(&values(solution.z), &expected) < 1e-5);
}

/// With an exactly invertible step (the analytic predictor), sampling undoes converged inversion over all 50 steps.
#[test]
fn sampling_undoes_converged_inversion_with_the_analytic_predictor() {
    let p = Linear(0.5);
    let z0 = z_prev();
    let method = Method::FixedPoint { iterations: 100, tolerance: Some(1e-7) };
    let back = run_sample(&p, run_invert(&p, z0.clone(), method));
    let err = rel_l2(&values(back), &values(z0.clone()));
    assert!(err < 1e-4, "{err:.2e}");
    // DDIM inversion (ε at the previous latent) does not undo sampling exactly.
    let ddim = run_sample(&p, run_invert(&p, z0.clone(), Method::Ddim));
    assert!(rel_l2(&values(ddim), &values(z0)) > 10.0 * err);
}

#[test]
fn guidance_of_an_unconditional_predictor_changes_nothing() {
    let guided = Guided { inner: Linear(0.7), scale: 7.5 };
    let z = z_prev();
    let err = rel_l2(&values(guided.predict(z.clone(), 981)), &values(Linear(0.7).predict(z, 981)));
    assert!(err < 1e-6);
}

#[test]
fn cancelling_stops_a_run() {
    let observer: &mut Observer<'_> =
        &mut |p| if p.step == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) };
    let result = pollster::block_on(invert(&Linear(0.5), &schedule(), z_prev(), STEPS, fpi(2), observer));
    assert!(matches!(result, Err(fpi_core::solver::RunError::Cancelled)));
}

/// The browser case (`tests/fixtures/web-case.json`): settings and a photo. The web build must give the seed and
/// PSNR recorded in `reference/web-case.*`; this test checks that the native build gives them too (so the browser
/// tests compare the browser with native), and rewrites them when `FPI_WRITE_WEB_REFERENCE=1`.
#[test]
fn the_browser_case_matches_its_native_reference() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("web-case.json")).unwrap()).unwrap();
    let case: fpi_pipeline::InvertRequest = serde_json::from_value(json.clone()).unwrap();
    let settings = case.settings().unwrap();
    let pipeline =
        pollster::block_on(fpi_pipeline::Pipeline::load(&folder(&tiny_model()), device(), &mut |_, _, _| {})).unwrap();
    let bytes = std::fs::read(fixtures().join(json["image"].as_str().unwrap())).unwrap();
    let image = fpi_pipeline::image_io::square(fpi_pipeline::image_io::decode(&bytes).unwrap(), case.size);
    let z0 = pipeline.encode(&image);
    let mut observe = |_: fpi_pipeline::pipeline::Phase, _: &fpi_core::solver::Progress| ControlFlow::Continue(());
    let inversion = pollster::block_on(pipeline.invert(z0.clone(), &settings, &mut observe)).unwrap();
    let check =
        pollster::block_on(pipeline.check_reconstruction(&inversion, z0, &image, &settings, &mut observe)).unwrap();
    let seed = fpi_core::seed::Seed {
        latents: values(inversion.seed.clone()),
        shape: inversion.seed.dims(),
        info: settings.seed_info(case.size, "tiny-sd"),
    };

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
    assert_eq!(seed.info.prompt, reference.info.prompt);
    let err = rel_l2(&seed.latents, &reference.latents);
    assert!(err <= 1e-4, "seed differs from the reference by {err:.2e}");
    let psnr = results["psnr"].as_f64().unwrap();
    assert!((check.psnr - psnr).abs() <= 0.05, "PSNR {:.3} dB, reference {psnr:.3} dB", check.psnr);
}
