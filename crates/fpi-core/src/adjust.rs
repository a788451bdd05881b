//! Prompt-aware adjustment: nudge the encoded latent toward the prompt before inverting it.
//!
//! The authors run an img2img pass at strength 0.05 (noise to t ≈ 21, then two DDIM steps with guidance) on the VAE
//! latent before inverting. fpi replaces that pass's random noise with inversion: `N` inversion steps take the
//! latent up to `timesteps[n − N]`, and `N` DDIM steps with the same prompt and guidance bring it back. The result
//! is deterministic (no per-image noise to store with the seed), lies on the model's own sampling trajectory for
//! the prompt, and `N = 2` at 50 steps matches the authors' strength of 0.05.

use burn::tensor::Tensor;

use crate::predictor::NoisePredictor;
use crate::schedule::DdimSchedule;
use crate::settings::Method;
use crate::solver::{Observer, RunError, invert, sample};

/// `N` inversion steps with `method`, then `N` sampling steps, from clean latents `z0`. `N = 0` returns `z0`.
pub async fn adjust(
    predictor: &impl NoisePredictor,
    schedule: &DdimSchedule,
    z0: Tensor<4>,
    steps: usize,
    method: Method,
    observer: &mut Observer<'_>,
) -> Result<Tensor<4>, RunError> {
    if steps == 0 {
        return Ok(z0);
    }
    let (noisy, _) = invert(predictor, schedule, z0, steps, method, observer).await?;
    sample(predictor, schedule, noisy, steps, observer).await
}
