//! The SD1.5 UNet as the inversion core's noise predictor.

use burn::tensor::{Tensor, TensorData};
use fpi_core::predictor::NoisePredictor;
use fpi_models::unet::UNet2DConditionModel;

/// ε from the UNet, conditioned on fixed text states.
pub struct UNetPredictor<'a> {
    /// The UNet.
    pub unet: &'a UNet2DConditionModel,
    /// `[B, 77, C]`: one row per latent in a batch, or one row shared by all.
    pub context: Tensor<3>,
}

impl NoisePredictor for UNetPredictor<'_> {
    fn predict(&self, latents: Tensor<4>, timestep: usize) -> Tensor<4> {
        let batch = latents.dims()[0];
        let device = latents.device();
        let timesteps = Tensor::<1>::from_data(TensorData::new(vec![timestep as f32; batch], [batch]), &device);
        let context = match self.context.dims()[0] {
            1 if batch > 1 => self.context.clone().repeat_dim(0, batch),
            _ => self.context.clone(),
        };
        self.unet.forward(latents, timesteps, &context)
    }
}
