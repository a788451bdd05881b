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

/// How each inversion step solves its implicit equation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// One evaluation of f from z_prev (ε taken at z_prev).
    Ddim,
    /// Up to `iterations` evaluations of f from z_prev, stopping early once the relative residual
    /// ‖f(z) − z‖/‖z‖ falls below `tolerance`. One iteration is exactly [`Method::Ddim`].
    FixedPoint { iterations: usize, tolerance: Option<f64> },
}

impl Method {
    /// The most evaluations of f per step.
    pub fn iterations(&self) -> usize {
        match *self {
            Method::Ddim => 1,
            Method::FixedPoint { iterations, .. } => iterations.max(1),
        }
    }

    fn tolerance(&self) -> Option<f64> {
        match *self {
            Method::Ddim => None,
            Method::FixedPoint { tolerance, .. } => tolerance,
        }
    }
}

/// What one inversion step did.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Step index, 0 for the least noisy.
    pub step: usize,
    /// The destination timestep t.
    pub timestep: usize,
    /// Evaluations of f made.
    pub iterations: usize,
    /// ‖f(zⁱ) − zⁱ‖/‖zⁱ‖ for each evaluation i (z⁰ = z_prev).
    pub residuals: Vec<f64>,
    /// k of the kept iterate zᵏ: the last (k = iterations) unless the residual grew after an earlier minimum.
    pub kept: usize,
}

impl StepReport {
    /// True when the residual grew, so an earlier iterate than the last was kept.
    pub fn diverged(&self) -> bool {
        self.kept < self.iterations
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

/// ‖a − b‖ / ‖b‖, read back from the device in one transfer.
async fn relative_residual(a: Tensor<4>, b: Tensor<4>) -> Result<f64, RunError> {
    let sums = Tensor::cat(vec![(a - b.clone()).powi_scalar(2).sum(), b.powi_scalar(2).sum()], 0);
    let data = sums.into_data_async().await.map_err(|e| RunError::Device(format!("{e:?}")))?;
    let sums = data.convert::<f32>().try_into_vec::<f32>().map_err(|e| RunError::Device(format!("{e:?}")))?;
    Ok((sums[0] as f64 / (sums[1] as f64).max(f64::MIN_POSITIVE)).sqrt())
}

/// One inversion step's result: the kept iterate and how it was found.
pub struct StepSolution {
    pub z: Tensor<4>,
    /// ‖f(zⁱ) − zⁱ‖/‖zⁱ‖ for each evaluation i (z⁰ = z_prev).
    pub residuals: Vec<f64>,
    /// k of the kept iterate zᵏ (1 ≤ k ≤ evaluations).
    pub kept: usize,
}

/// Solves one inversion step from `z_prev` (at ā_prev) to timestep `t`.
///
/// The residual of evaluation i measures how far zⁱ is from a fixed point. The last iterate z^K (whose residual
/// is not measured) is kept unless an earlier zⁱ (i ≥ 1) had the smallest residual and later ones grew: then zⁱ
/// is kept. z⁰ = z_prev is never a candidate.
pub async fn invert_step(
    predictor: &impl NoisePredictor,
    z_prev: Tensor<4>,
    alpha_prev: f64,
    alpha_t: f64,
    t: usize,
    method: Method,
    mut on_iteration: impl FnMut(usize, f64) -> ControlFlow<()>,
) -> Result<StepSolution, RunError> {
    let (a, b) = ddim_coefficients(alpha_prev, alpha_t);
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
    Ok(StepSolution { z: iterates.swap_remove(kept), residuals, kept })
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
        let i = n - 1 - step;
        let t = schedule.timesteps[i];
        let (alpha_prev, alpha_t) = (schedule.alpha_cumprod_prev(i), schedule.alphas_cumprod[t]);
        let observe =
            |iteration, residual| observer(&Progress { step, steps, timestep: t, iteration, residual: Some(residual) });
        let solution = invert_step(predictor, z, alpha_prev, alpha_t, t, method, observe).await?;
        reports.push(StepReport {
            step,
            timestep: t,
            iterations: solution.residuals.len(),
            residuals: solution.residuals,
            kept: solution.kept,
        });
        z = solution.z;
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
    let n = schedule.timesteps.len();
    let mut z = z;
    for (k, i) in (n - steps.min(n)..n).enumerate() {
        let t = schedule.timesteps[i];
        let (a, b) = ddim_coefficients(schedule.alphas_cumprod[t], schedule.alpha_cumprod_prev(i));
        z = z.clone().mul_scalar(a) + predictor.predict(z, t).mul_scalar(b);
        let progress = Progress { step: k, steps, timestep: t, iteration: 1, residual: None };
        if observer(&progress).is_break() {
            return Err(RunError::Cancelled);
        }
    }
    Ok(z)
}
