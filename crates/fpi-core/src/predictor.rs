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

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};

    use super::*;

    /// ε = (row + 1)·z for batch row `row`, so the unconditional (row 0) and conditional (row 1) rows differ.
    struct ByRow;

    impl NoisePredictor for ByRow {
        fn predict(&self, latents: Tensor<4>, _timestep: usize) -> Tensor<4> {
            let rows = latents.dims()[0];
            let scales: Vec<f32> = (1..=rows).map(|r| r as f32).collect();
            let scales = Tensor::<1>::from_data(TensorData::new(scales, [rows]), &latents.device());
            latents * scales.reshape([rows, 1, 1, 1])
        }
    }

    #[test]
    fn guidance_combines_the_rows_as_diffusers_does() {
        #[allow(deprecated)]
        let device = Device::ndarray();
        let values: Vec<f32> = (0..8).map(|i| i as f32 - 3.5).collect();
        let z = Tensor::<4>::from_data(TensorData::new(values.clone(), [1, 2, 2, 2]), &device);
        let eps = Guided { inner: ByRow, scale: 7.5 }.predict(z, 981);
        // ε_u = z, ε_c = 2z: ε_u + g·(ε_c − ε_u) = (1 + g)·z.
        let got = eps.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        let expected: Vec<f32> = values.iter().map(|v| v * 8.5).collect();
        assert_eq!(got, expected);
    }
}
