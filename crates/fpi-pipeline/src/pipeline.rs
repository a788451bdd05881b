//! The SD1.5 pipeline around the inversion core: prompt → text states, image → latents → seed, seed → image.

use std::ops::ControlFlow;

use burn::tensor::{Device, Tensor, TensorData};
use fpi_core::adjust::adjust;
use fpi_core::metrics::{psnr, relative_error};
use fpi_core::predictor::{Guided, NoisePredictor};
use fpi_core::schedule::{DdimSchedule, SchedulerConfig};
use fpi_core::seed::SeedInfo;
use fpi_core::solver::{self, Method, Observer, Progress, RunError, StepReport};
use fpi_models::ModelFolder;
use fpi_models::clip::ClipTextModel;
use fpi_models::folder::LoadProgress;
use fpi_models::source::ModelSource;
use fpi_models::tokenizer::ClipTokenizer;
use fpi_models::unet::UNet2DConditionModel;
use fpi_models::vae::AutoencoderKL;

use crate::image_io::{self, Rgb};
use crate::predictor::UNetPredictor;

/// Why a pipeline call failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Loading or running a model part failed.
    #[error(transparent)]
    Model(#[from] fpi_models::Error),
    /// The run was cancelled or the device failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Settings or inputs that do not fit the model.
    #[error("{0}")]
    Invalid(String),
}

/// The loaded model: tokenizer, text encoder, UNet, VAE and schedule settings, on one device.
pub struct Pipeline {
    pub device: Device,
    pub tokenizer: ClipTokenizer,
    pub clip: ClipTextModel,
    pub unet: UNet2DConditionModel,
    pub vae: AutoencoderKL,
    pub scheduler: SchedulerConfig,
    /// Pixels per latent cell along a side (8 for SD1.5).
    pub vae_factor: usize,
}

/// How to invert: the prompt, the schedule, guidance, the solver and the adjustment.
#[derive(Debug, Clone)]
pub struct InvertSettings {
    pub prompt: String,
    pub steps: usize,
    pub guidance: f64,
    pub method: Method,
    /// Steps of the prompt-aware adjustment (0: none).
    pub adjust: usize,
}

/// The result of an inversion.
pub struct Inversion {
    /// z_T: the noise from which DDIM sampling regenerates `start`.
    pub seed: Tensor<4>,
    /// The latents that were inverted: the image's, after the prompt-aware adjustment.
    pub start: Tensor<4>,
    /// One report per step.
    pub reports: Vec<StepReport>,
}

impl InvertSettings {
    /// Checks the settings that do not depend on the model.
    pub fn validate(&self) -> Result<(), String> {
        check_guidance(self.guidance)?;
        if self.steps == 0 {
            return Err("--steps must be at least 1".into());
        }
        if self.adjust > self.steps {
            return Err(format!("--adjust {} is more than --steps {}", self.adjust, self.steps));
        }
        if let Method::FixedPoint { iterations, tolerance } = self.method {
            if iterations == 0 {
                return Err("--iterations must be at least 1".into());
            }
            if tolerance.is_some_and(|t| !(t > 0.0 && t.is_finite())) {
                return Err("--tolerance must be a positive number".into());
            }
        }
        Ok(())
    }

    /// The seed file's record of these settings, for an image of side `size` and the model named `model`.
    pub fn seed_info(&self, size: usize, model: &str) -> SeedInfo {
        let (method, tolerance) = match self.method {
            Method::Ddim => ("ddim", None),
            Method::FixedPoint { tolerance, .. } => ("fpi", tolerance),
        };
        SeedInfo {
            prompt: self.prompt.clone(),
            steps: self.steps,
            guidance: self.guidance,
            method: method.into(),
            iterations: self.method.iterations(),
            tolerance,
            adjust: self.adjust,
            size,
            model: model.into(),
            fpi_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// How well a seed regenerates the image it was inverted from.
pub struct Reconstruction {
    /// The image DDIM sampling makes from the seed.
    pub image: Rgb,
    /// PSNR (dB) of `image` against the inverted image.
    pub psnr: f64,
    /// PSNR of the VAE alone (encode then decode): the most any seed can reach.
    pub vae_psnr: f64,
    /// ‖sampled latents − inverted latents‖ / ‖inverted latents‖.
    pub latent_error: f64,
}

/// Guidance must be finite and at least 1 (below 1 diffusers turns guidance off, so seeds would not transfer).
pub fn check_guidance(guidance: f64) -> Result<(), String> {
    if guidance.is_finite() && guidance >= 1.0 {
        Ok(())
    } else {
        Err(format!("--guidance must be a number ≥ 1, got {guidance}"))
    }
}

/// Which phase a progress report belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The prompt-aware adjustment.
    Adjust,
    /// Inverting to the seed.
    Invert,
    /// DDIM sampling.
    Sample,
}

/// Text states for classifier-free guidance: `[2, 77, C]` = (empty prompt, prompt).
pub struct Conditioning {
    pub states: Tensor<3>,
}

enum Predictor<'a> {
    Conditional(UNetPredictor<'a>),
    Guided(Guided<UNetPredictor<'a>>),
}

impl NoisePredictor for Predictor<'_> {
    fn predict(&self, latents: Tensor<4>, timestep: usize) -> Tensor<4> {
        match self {
            Predictor::Conditional(p) => p.predict(latents, timestep),
            Predictor::Guided(p) => p.predict(latents, timestep),
        }
    }
}

impl Pipeline {
    /// Loads every part of a diffusers folder onto `device`; `progress` hears each part's weight bytes.
    pub async fn load<S: ModelSource>(
        folder: &ModelFolder<S>,
        device: Device,
        progress: &mut LoadProgress<'_>,
    ) -> Result<Self, PipelineError> {
        folder.check_parts().await?;
        let (text, path) = folder.scheduler_config().await?;
        let scheduler = SchedulerConfig::parse(&text, &path).map_err(PipelineError::Invalid)?;
        let vae_factor = folder.vae_config().await?.downsampling_factor();
        Ok(Self {
            tokenizer: folder.load_tokenizer().await?,
            clip: folder.load_clip(&device, progress).await?,
            unet: folder.load_unet(&device, progress).await?,
            vae: folder.load_vae(&device, progress).await?,
            scheduler,
            vae_factor,
            device,
        })
    }

    /// The image sides this model accepts: multiples of 8 × the VAE's factor (64 for SD1.5).
    pub fn size_step(&self) -> usize {
        8 * self.vae_factor
    }

    /// Checks latents from a file against the model: its channels, and sides the UNet can halve at each level.
    pub fn check_latents(&self, shape: [usize; 4]) -> Result<(), PipelineError> {
        let channels = self.unet.conv_in.weight.dims()[1];
        let step = 1 << (self.unet.down_blocks.len() - 1);
        let [b, c, h, w] = shape;
        if b != 1 || c != channels || h == 0 || w == 0 || h % step != 0 || w % step != 0 {
            return Err(PipelineError::Invalid(format!(
                "latents of shape {shape:?} do not fit this model: expected [1, {channels}, h, w] with h and w \
                 positive multiples of {step}"
            )));
        }
        Ok(())
    }

    /// Checks an image side.
    pub fn check_size(&self, size: usize) -> Result<(), PipelineError> {
        let step = self.size_step();
        if size == 0 || size % step != 0 {
            return Err(PipelineError::Invalid(format!("--size must be a positive multiple of {step}, got {size}")));
        }
        Ok(())
    }

    /// CLIP's states for the empty prompt and `prompt`.
    pub fn condition(&self, prompt: &str) -> Result<Conditioning, PipelineError> {
        let empty = self.tokenizer.encode("")?;
        let tokens = self.tokenizer.encode(prompt)?;
        let states = self.clip.forward(&[empty.ids, tokens.ids], &self.device).map_err(PipelineError::Invalid)?;
        Ok(Conditioning { states })
    }

    fn predictor<'a>(&'a self, conditioning: &Conditioning, guidance: f64) -> Predictor<'a> {
        if guidance == 1.0 {
            let conditional = conditioning.states.clone().narrow(0, 1, 1);
            return Predictor::Conditional(UNetPredictor { unet: &self.unet, context: conditional });
        }
        Predictor::Guided(Guided {
            inner: UNetPredictor { unet: &self.unet, context: conditioning.states.clone() },
            scale: guidance,
        })
    }

    fn schedule(&self, steps: usize) -> Result<DdimSchedule, PipelineError> {
        DdimSchedule::new(&self.scheduler, steps).map_err(PipelineError::Invalid)
    }

    /// The VAE latents of an image (posterior mean × scaling factor).
    pub fn encode(&self, image: &Rgb) -> Tensor<4> {
        let x = image_io::to_tensor(image, &self.device);
        self.vae.encode(x).mean.mul_scalar(self.vae.scaling_factor)
    }

    /// The image of latents.
    pub async fn decode(&self, latents: Tensor<4>) -> Result<Rgb, PipelineError> {
        let pixels = self.vae.decode(latents.div_scalar(self.vae.scaling_factor));
        let [_, _, h, w] = pixels.dims();
        let values = read(pixels).await?;
        Ok(image_io::from_values(&values, h, w))
    }

    /// Adjusts and inverts clean latents `z0` into a seed; reports per step.
    pub async fn invert(
        &self,
        z0: Tensor<4>,
        settings: &InvertSettings,
        observer: &mut dyn FnMut(Phase, &Progress) -> ControlFlow<()>,
    ) -> Result<Inversion, PipelineError> {
        let conditioning = self.condition(&settings.prompt)?;
        let predictor = self.predictor(&conditioning, settings.guidance);
        settings.validate().map_err(PipelineError::Invalid)?;
        let schedule = self.schedule(settings.steps)?;
        let mut on_adjust = |p: &Progress| observer(Phase::Adjust, p);
        let start = adjust(&predictor, &schedule, z0, settings.adjust, settings.method, &mut on_adjust).await?;
        let mut on_invert = |p: &Progress| observer(Phase::Invert, p);
        let on_invert: &mut Observer<'_> = &mut on_invert;
        let (seed, reports) =
            solver::invert(&predictor, &schedule, start.clone(), settings.steps, settings.method, on_invert).await?;
        Ok(Inversion { seed, start, reports })
    }

    /// DDIM sampling from a seed with `prompt` and `guidance`.
    pub async fn sample(
        &self,
        seed: Tensor<4>,
        prompt: &str,
        steps: usize,
        guidance: f64,
        observer: &mut dyn FnMut(Phase, &Progress) -> ControlFlow<()>,
    ) -> Result<Tensor<4>, PipelineError> {
        self.check_latents(seed.dims())?;
        check_guidance(guidance).map_err(PipelineError::Invalid)?;
        let conditioning = self.condition(prompt)?;
        let predictor = self.predictor(&conditioning, guidance);
        let schedule = self.schedule(steps)?;
        let mut on_sample = |p: &Progress| observer(Phase::Sample, p);
        Ok(solver::sample(&predictor, &schedule, seed, steps, &mut on_sample).await?)
    }

    /// Samples an inversion's seed back with its settings and compares the result with `original`, the image whose
    /// latents `z0` were inverted.
    pub async fn check_reconstruction(
        &self,
        inversion: &Inversion,
        z0: Tensor<4>,
        original: &Rgb,
        settings: &InvertSettings,
        observer: &mut dyn FnMut(Phase, &Progress) -> ControlFlow<()>,
    ) -> Result<Reconstruction, PipelineError> {
        let (prompt, steps, guidance) = (&settings.prompt, settings.steps, settings.guidance);
        let latents = self.sample(inversion.seed.clone(), prompt, steps, guidance, observer).await?;
        let latent_error = relative_error(&read(latents.clone()).await?, &read(inversion.start.clone()).await?);
        let image = self.decode(latents).await?;
        let vae_only = self.decode(z0).await?;
        let pixels = |image: &Rgb| image.as_raw().iter().map(|&v| v as f32).collect::<Vec<_>>();
        let original = pixels(original);
        Ok(Reconstruction {
            psnr: psnr(&pixels(&image), &original, 255.0),
            vae_psnr: psnr(&pixels(&vae_only), &original, 255.0),
            latent_error,
            image,
        })
    }

    /// A tensor of latents from host values `[1, C, h, w]`.
    pub fn latents(&self, values: Vec<f32>, shape: [usize; 4]) -> Tensor<4> {
        Tensor::from_data(TensorData::new(values, shape), &self.device)
    }
}

/// A tensor's values in host memory (async, as the web requires).
pub async fn read<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, PipelineError> {
    let data = t.into_data_async().await.map_err(|e| PipelineError::Run(RunError::Device(format!("{e:?}"))))?;
    data.convert::<f32>().try_into_vec::<f32>().map_err(|e| PipelineError::Run(RunError::Device(format!("{e:?}"))))
}
