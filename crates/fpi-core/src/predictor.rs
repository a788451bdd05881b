//! The noise predictor the solvers work through, and classifier-free guidance over any predictor.

use burn::tensor::Tensor;

/// ε(latents, t): the model's noise estimate for latents `[B, C, h, w]` at training timestep `t`, with whatever
/// conditioning the predictor carries.
pub trait NoisePredictor {
    /// The noise estimate, shaped like `latents`.
    fn predict(&self, latents: Tensor<4>, timestep: usize) -> Tensor<4>;
}

/// Classifier-free guidance: ε_u + g·(ε_c − ε_u), from one batch-of-2 call to a predictor conditioned on
/// `[unconditional; conditional]` in that order.
pub struct Guided<P> {
    /// Conditioned on the empty prompt (batch row 0) and the prompt (batch row 1).
    pub inner: P,
    /// The guidance scale g.
    pub scale: f64,
}

impl<P: NoisePredictor> NoisePredictor for Guided<P> {
    fn predict(&self, latents: Tensor<4>, timestep: usize) -> Tensor<4> {
        let eps = self.inner.predict(Tensor::cat(vec![latents.clone(), latents], 0), timestep);
        let [unconditional, conditional] = eps.chunk(2, 0).try_into().expect("a batch of 2");
        unconditional.clone() + (conditional - unconditional).mul_scalar(self.scale)
    }
}
