//! DDIM sampling and its inversion: plain DDIM inversion, or fixed-point iterations of the implicit step.
//!
//! A sampling step from timestep t to the step before it (ā_t → ā_prev) is
//! `z_prev = √(ā_prev/ā_t)·z_t + √ā_prev·(ψ(ā_prev) − ψ(ā_t))·ε(z_t, t)`, ψ(ā) = √(1/ā − 1).
//! Inverting it means solving `z_t = f(z_t)` with `f(z) = √(ā_t/ā_prev)·z_prev + √ā_t·(ψ(ā_t) − ψ(ā_prev))·ε(z, t)`:
//! ε at the destination timestep t. DDIM inversion is one evaluation of f from z_prev; fixed-point inversion
//! iterates it.

use std::ops::ControlFlow;

use burn::tensor::Tensor;
use serde::Serialize;

use crate::predictor::NoisePredictor;
use crate::schedule::{DdimSchedule, ddim_coefficients};
use crate::settings::Method;

/// What one inversion step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Step index, 0 for the least noisy.
    pub step: usize,
    /// The destination timestep t.
    pub timestep: usize,
    /// ‖f(zⁱ) − zⁱ‖/‖zⁱ‖ for each evaluation i of f (z⁰ = z_prev).
    pub residuals: Vec<f64>,
    /// k of the kept iterate zᵏ: the last (k = evaluations) unless the residual grew after an earlier minimum.
    pub kept: usize,
}

impl StepReport {
    /// Evaluations of f made.
    pub fn iterations(&self) -> usize {
        self.residuals.len()
    }

    /// True when the residual grew, so an earlier iterate than the last was kept.
    pub fn diverged(&self) -> bool {
        self.kept < self.iterations()
    }
}

/// Progress of a long run, given to the caller's observer after each evaluation of the model.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Step index within the current phase.
    pub step: usize,
    /// Steps in the current phase.
    pub steps: usize,
    /// The step's (destination) timestep.
    pub timestep: usize,
    /// 1-based iteration within the step (1 when sampling).
    pub iteration: usize,
    /// The residual of this iteration, when inverting.
    pub residual: Option<f64>,
}

/// The observer of a run: `ControlFlow::Break` cancels it.
pub type Observer<'a> = dyn FnMut(&Progress) -> ControlFlow<()> + 'a;

/// Why a run stopped without a result.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The observer asked to stop.
    #[error("cancelled")]
    Cancelled,
    /// The device failed while reading back a value.
    #[error("device error: {0}")]
    Device(String),
}

/// A tensor's values in host memory (async, as the web requires).
pub async fn to_host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, RunError> {
    let data = t.into_data_async().await.map_err(|e| RunError::Device(format!("{e:?}")))?;
    data.convert::<f32>().try_into_vec::<f32>().map_err(|e| RunError::Device(format!("{e:?}")))
}

/// ‖a − b‖ / ‖b‖, read back from the device in one transfer.
async fn relative_residual(a: Tensor<4>, b: Tensor<4>) -> Result<f64, RunError> {
    let sums = to_host(Tensor::cat(vec![(a - b.clone()).powi_scalar(2).sum(), b.powi_scalar(2).sum()], 0)).await?;
    Ok((sums[0] as f64 / (sums[1] as f64).max(f64::MIN_POSITIVE)).sqrt())
}

/// Solves inversion step `step` (0 for the least noisy) of `schedule`: from `z_prev` at the step's ā_prev to its
/// timestep t. Returns the kept iterate and the step's report; `on_iteration(i, residual)` hears each evaluation.
///
/// The residual of evaluation i measures how far zⁱ is from a fixed point. The last iterate z^K (whose residual
/// is not measured) is kept unless an earlier zⁱ (i ≥ 1) had the smallest residual and later ones grew: then zⁱ
/// is kept. z⁰ = z_prev is never a candidate.
pub async fn invert_step(
    predictor: &impl NoisePredictor,
    schedule: &DdimSchedule,
    step: usize,
    z_prev: Tensor<4>,
    method: Method,
    mut on_iteration: impl FnMut(usize, f64) -> ControlFlow<()>,
) -> Result<(Tensor<4>, StepReport), RunError> {
    let i = schedule.timesteps.len() - 1 - step;
    let t = schedule.timesteps[i];
    let (a, b) = ddim_coefficients(schedule.alpha_cumprod_prev(i), schedule.alphas_cumprod[t]);
    let anchor = z_prev.clone().mul_scalar(a);
    let mut iterates = vec![z_prev];
    let mut residuals = Vec::new();
    for i in 0..method.iterations() {
        let z = iterates[i].clone();
        let next = anchor.clone() + predictor.predict(z.clone(), t).mul_scalar(b);
        let residual = relative_residual(next.clone(), z).await?;
        residuals.push(residual);
        iterates.push(next);
        if on_iteration(i + 1, residual).is_break() {
            return Err(RunError::Cancelled);
        }
        if method.tolerance().is_some_and(|tol| residual < tol) {
            break;
        }
    }
    let last = residuals.len();
    let kept = match (1..last).min_by(|&i, &j| residuals[i].total_cmp(&residuals[j])) {
        Some(best) if best + 1 < last => best,
        _ => last,
    };
    Ok((iterates.swap_remove(kept), StepReport { step, timestep: t, residuals, kept }))
}

/// Inverts the first `steps` sampling steps in reverse, from clean latents `z0` towards noise. Returns the latents at
/// `schedule.timesteps[len - steps]` (all steps: the seed z_T) and a report per step.
pub async fn invert(
    predictor: &impl NoisePredictor,
    schedule: &DdimSchedule,
    z0: Tensor<4>,
    steps: usize,
    method: Method,
    observer: &mut Observer<'_>,
) -> Result<(Tensor<4>, Vec<StepReport>), RunError> {
    let n = schedule.timesteps.len();
    let mut z = z0;
    let mut reports = Vec::with_capacity(steps);
    for step in 0..steps.min(n) {
        let timestep = schedule.timesteps[n - 1 - step];
        let observe =
            |iteration, residual| observer(&Progress { step, steps, timestep, iteration, residual: Some(residual) });
        let (next, report) = invert_step(predictor, schedule, step, z, method, observe).await?;
        reports.push(report);
        z = next;
    }
    Ok((z, reports))
}

/// DDIM sampling (η = 0) over the last `steps` sampling steps: from latents at `schedule.timesteps[n - steps]`
/// (all steps: the seed z_T) down to clean latents.
pub async fn sample(
    predictor: &impl NoisePredictor,
    schedule: &DdimSchedule,
    z: Tensor<4>,
    steps: usize,
    observer: &mut Observer<'_>,
) -> Result<Tensor<4>, RunError> {
    sample_steered(predictor, schedule, z, steps, observer, &mut |_, z| z).await
}

/// [`sample`], with `steer(k, z)` changing the latents after each step `k` (0-based), as Prompt-to-Prompt's local
/// blend does.
pub async fn sample_steered(
    predictor: &impl NoisePredictor,
    schedule: &DdimSchedule,
    z: Tensor<4>,
    steps: usize,
    observer: &mut Observer<'_>,
    steer: &mut dyn FnMut(usize, Tensor<4>) -> Tensor<4>,
) -> Result<Tensor<4>, RunError> {
    let n = schedule.timesteps.len();
    let mut z = z;
    for (k, i) in (n - steps.min(n)..n).enumerate() {
        let t = schedule.timesteps[i];
        let (a, b) = ddim_coefficients(schedule.alphas_cumprod[t], schedule.alpha_cumprod_prev(i));
        z = steer(k, z.clone().mul_scalar(a) + predictor.predict(z, t).mul_scalar(b));
        let progress = Progress { step: k, steps, timestep: t, iteration: 1, residual: None };
        if observer(&progress).is_break() {
            return Err(RunError::Cancelled);
        }
    }
    Ok(z)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use burn::tensor::{Device, TensorData};

    use super::*;
    use crate::schedule::SchedulerConfig;

    /// ε(z, t) = λ·z: the implicit step z = a·z_prev + b·λ·z has the fixed point z* = a·z_prev / (1 − bλ).
    struct Linear(f32);

    impl NoisePredictor for Linear {
        fn predict(&self, latents: Tensor<4>, _timestep: usize) -> Tensor<4> {
            latents.mul_scalar(self.0)
        }
    }

    /// [`Linear`] that counts its evaluations.
    struct Counted<'a>(Linear, &'a Cell<usize>);

    impl NoisePredictor for Counted<'_> {
        fn predict(&self, latents: Tensor<4>, timestep: usize) -> Tensor<4> {
            self.1.set(self.1.get() + 1);
            self.0.predict(latents, timestep)
        }
    }

    #[allow(deprecated)]
    fn device() -> Device {
        Device::ndarray()
    }

    const STEPS: usize = 50;

    fn schedule() -> DdimSchedule {
        DdimSchedule::new(&SchedulerConfig::default(), STEPS).unwrap()
    }

    /// The noisiest step (from ā(961) to ā(981), where b is largest): its step index and coefficients (a, b).
    fn noisiest() -> (usize, f64, f64) {
        let schedule = schedule();
        let t = schedule.timesteps[0];
        let (a, b) = ddim_coefficients(schedule.alpha_cumprod_prev(0), schedule.alphas_cumprod[t]);
        (STEPS - 1, a, b)
    }

    fn z_prev() -> Tensor<4> {
        let values: Vec<f32> = (0..4 * 8 * 8).map(|i| ((i as f32) * 0.37).sin()).collect();
        Tensor::from_data(TensorData::new(values, [1, 4, 8, 8]), &device())
    }

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
    }

    /// z_prev scaled by `s`.
    fn scaled(s: f64) -> Vec<f32> {
        values(z_prev()).iter().map(|v| (*v as f64 * s) as f32).collect()
    }

    fn fpi(iterations: usize, tolerance: Option<f64>) -> Method {
        Method::FixedPoint { iterations, tolerance }
    }

    fn step(p: &impl NoisePredictor, method: Method) -> (Tensor<4>, StepReport) {
        let (step, ..) = noisiest();
        pollster::block_on(invert_step(p, &schedule(), step, z_prev(), method, |_, _| ControlFlow::Continue(())))
            .unwrap()
    }

    /// The scales sᵢ of the iterates zⁱ = sᵢ·z_prev under ε = λz (s₀ = 1, sᵢ₊₁ = a + bλ·sᵢ) and the residual of
    /// each evaluation, |sᵢ₊₁ − sᵢ| / |sᵢ|.
    fn closed_form(lambda: f64, evaluations: usize) -> (Vec<f64>, Vec<f64>) {
        let (_, a, b) = noisiest();
        let mut s = vec![1.0f64];
        for _ in 0..evaluations {
            s.push(a + b * lambda * s.last().unwrap());
        }
        let residuals = s.windows(2).map(|w| (w[1] - w[0]).abs() / w[0].abs()).collect();
        (s, residuals)
    }

    fn observe_nothing() -> impl FnMut(&Progress) -> ControlFlow<()> {
        |_| ControlFlow::Continue(())
    }

    #[test]
    fn fixed_point_iterations_converge_to_the_closed_form_solution() {
        let (_, a, b) = noisiest();
        let lambda = 3.0;
        let (z, report) = step(&Linear(lambda), fpi(60, None));
        let err = crate::metrics::relative_error(&values(z), &scaled(a / (1.0 - b * lambda as f64)));
        assert!(err < 1e-5, "relative error {err:.2e} to the fixed point (bλ = {:.3})", b * lambda as f64);
        // Geometric convergence down to float rounding.
        let residuals = &report.residuals;
        assert!(residuals[..6].windows(2).all(|w| w[1] < w[0]), "{residuals:?}");
        assert!(residuals.iter().copied().fold(f64::INFINITY, f64::min) < 1e-6, "{residuals:?}");
        assert_eq!((report.step, report.timestep, report.iterations()), (STEPS - 1, 981, 60));
    }

    #[test]
    fn tolerance_stops_at_the_first_iteration_below_it() {
        let lambda = 3.0f64;
        let (s, residuals) = closed_form(lambda, 20);
        let tolerance = 1e-3;
        let expected = residuals.iter().position(|&r| r < tolerance).unwrap() + 1;
        assert!(expected > 2, "the case should need a few iterations");
        let (z, report) = step(&Linear(lambda as f32), fpi(20, Some(tolerance)));
        assert_eq!(report.iterations(), expected, "{:?} vs {residuals:?}", report.residuals);
        for (ours, theirs) in report.residuals.iter().zip(&residuals) {
            assert!((ours - theirs).abs() <= 1e-4 * theirs.max(1e-3), "{ours} vs {theirs}");
        }
        assert!(crate::metrics::relative_error(&values(z), &scaled(s[expected])) < 1e-6);
    }

    #[test]
    fn a_growing_residual_keeps_the_best_iterate() {
        // bλ = −1.5 diverges.
        let (_, _, b) = noisiest();
        let lambda = -1.5 / b;
        let (s, residuals) = closed_form(lambda, 6);
        let best = (1..6).min_by(|&i, &j| residuals[i].total_cmp(&residuals[j])).unwrap();
        assert!(residuals[5] > residuals[best], "the case must diverge: {residuals:?}");
        let (z, report) = step(&Linear(lambda as f32), fpi(6, None));
        assert_eq!(report.kept, best, "residuals {:?}", report.residuals);
        assert!(report.diverged());
        assert!(crate::metrics::relative_error(&values(z), &scaled(s[best])) < 1e-5);
    }

    #[test]
    fn ddim_is_one_evaluation_at_z_prev() {
        let (_, a, b) = noisiest();
        let (z, report) = step(&Linear(3.0), Method::Ddim);
        assert_eq!((report.iterations(), report.kept), (1, 1));
        assert!(crate::metrics::relative_error(&values(z), &scaled(a + b * 3.0)) < 1e-6);
    }

    /// With an exactly invertible step (the analytic predictor), sampling undoes converged inversion over all
    /// 50 steps; DDIM inversion (ε at the previous latent) does not.
    #[test]
    fn sampling_undoes_converged_inversion() {
        let (p, schedule, z0) = (Linear(0.5), schedule(), z_prev());
        let round_trip = |method| {
            let (seed, _) =
                pollster::block_on(invert(&p, &schedule, z0.clone(), STEPS, method, &mut observe_nothing())).unwrap();
            let back = pollster::block_on(sample(&p, &schedule, seed, STEPS, &mut observe_nothing())).unwrap();
            crate::metrics::relative_error(&values(back), &values(z0.clone()))
        };
        let converged = round_trip(fpi(100, Some(1e-7)));
        assert!(converged < 1e-4, "{converged:.2e}");
        assert!(round_trip(Method::Ddim) > 10.0 * converged);
    }

    #[test]
    fn cancelling_stops_a_run_at_once() {
        let evaluations = Cell::new(0);
        let p = Counted(Linear(0.5), &evaluations);
        let mut heard = 0;
        let mut observer = |progress: &Progress| {
            heard += 1;
            if progress.step == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        };
        let result = pollster::block_on(invert(&p, &schedule(), z_prev(), STEPS, fpi(2, None), &mut observer));
        assert!(matches!(result, Err(RunError::Cancelled)));
        // Steps 0–2 make 2 evaluations each; the first of step 3 is answered with a break, and nothing follows it.
        assert_eq!((heard, evaluations.get()), (7, 7));

        evaluations.set(0);
        let mut stop =
            |progress: &Progress| if progress.step == 1 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) };
        let result = pollster::block_on(sample(&p, &schedule(), z_prev(), STEPS, &mut stop));
        assert!(matches!(result, Err(RunError::Cancelled)));
        assert_eq!(evaluations.get(), 2);
    }
}
