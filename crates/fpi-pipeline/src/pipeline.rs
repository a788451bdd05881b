//! The SD1.5 pipeline around the inversion core: prompt → text states, image → latents → seed, seed → image.
//! The entry points that run the UNet check their inputs against the model before any model runs.

use std::ops::ControlFlow;
use std::path::PathBuf;

use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use fpi_core::adjust::adjust;
use fpi_core::metrics::{psnr, relative_error};
use fpi_core::predictor::{Guided, NoisePredictor};
use fpi_core::schedule::{DdimSchedule, SchedulerConfig, SchedulerConfigError};
use fpi_core::seed::{Seed, SeedInfo};
use fpi_core::settings::{InvertSettings, SettingsError, check_guidance};
use fpi_core::solver::{self, Observer, Progress, RunError, StepReport, to_host};
use fpi_models::ModelFolder;
use fpi_models::clip::{ClipTextModel, TokenTable};
use fpi_models::config::{ClipConfig, UNetConfig, VaeConfig, parse_config};
use fpi_models::folder::LoadProgress;
use fpi_models::precision::{self, cast_parameters};
use fpi_models::sd1;
use fpi_models::source::ModelSource;
use fpi_models::tokenizer::ClipTokenizer;
use fpi_models::unet::UNet2DConditionModel;
use fpi_models::vae::AutoencoderKL;

use crate::image_io::{self, RgbImage};
use crate::predictor::UNetPredictor;

/// Why a pipeline call failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Loading or running a model part failed.
    #[error(transparent)]
    Model(#[from] fpi_models::Error),
    /// The scheduler config cannot drive the DDIM schedule.
    #[error("{path}: {source}")]
    SchedulerConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        source: SchedulerConfigError,
    },
    /// The run was cancelled or the device failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A setting out of range for the model.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// An edit that cannot run.
    #[error(transparent)]
    Edit(#[from] crate::edit::EditError),
    /// Latents from a file that the UNet cannot take.
    #[error(
        "latents of shape {shape:?} do not fit this model: expected [1, {channels}, h, w] with h and w positive \
         multiples of {multiple}"
    )]
    Latents {
        /// Their shape.
        shape: [usize; 4],
        /// The UNet's latent channels.
        channels: usize,
        /// What the UNet needs the sides to be multiples of.
        multiple: usize,
    },
    /// Bytes that are not a PNG, JPEG or WebP image.
    #[error("cannot read the image: {0}")]
    Image(#[from] image::ImageError),
}

/// The loaded model: tokenizer, text encoder, UNet, VAE and schedule settings, on one device.
pub struct Pipeline {
    device: Device,
    tokenizer: ClipTokenizer,
    clip: ClipTextModel,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    scheduler: SchedulerConfig,
}

/// Clean latents inverted into a seed.
pub struct LatentInversion {
    /// z_T: the noise from which DDIM sampling regenerates `start`.
    pub seed: Tensor<4>,
    /// The latents that were inverted: the image's, after the prompt-aware adjustment.
    pub start: Tensor<4>,
    /// One report per step.
    pub reports: Vec<StepReport>,
}

/// An image inverted into a seed, with what checking its reconstruction needs.
pub struct InvertedImage {
    /// The square image that was inverted (the input, centre-cropped and resized).
    pub image: RgbImage,
    /// The seed and the settings that made it.
    pub seed: Seed,
    /// UNet evaluations made (adjustment and inversion).
    pub evaluations: usize,
    /// The settings it was inverted with.
    settings: InvertSettings,
    /// The image's VAE latents.
    latents: Tensor<4>,
    /// The latents and seed on the device.
    inversion: LatentInversion,
}

impl InvertedImage {
    /// One report per inversion step.
    pub fn reports(&self) -> &[StepReport] {
        &self.inversion.reports
    }
}

/// How well a seed regenerates the image it was inverted from.
pub struct Reconstruction {
    /// The image DDIM sampling makes from the seed.
    pub image: RgbImage,
    /// PSNR (dB) of `image` against the inverted image.
    pub psnr: f64,
    /// PSNR of the VAE alone (encode then decode): the most any seed can reach.
    pub vae_psnr: f64,
    /// ‖sampled latents − inverted latents‖ / ‖inverted latents‖.
    pub latent_error: f64,
    /// UNet evaluations made (the sampling).
    pub evaluations: usize,
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

impl Phase {
    /// `adjust`, `invert` or `sample`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Adjust => "adjust",
            Phase::Invert => "invert",
            Phase::Sample => "sample",
        }
    }
}

/// Hears every UNet evaluation of a run with its phase; `ControlFlow::Break` cancels the run.
pub type PhaseObserver<'a> = dyn FnMut(Phase, &Progress) -> ControlFlow<()> + 'a;

/// Text states for classifier-free guidance: `[2, 77, C]` = (empty prompt, prompt).
pub struct Conditioning {
    /// The states, unconditional row first.
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
        let scheduler =
            SchedulerConfig::parse(&text).map_err(|source| PipelineError::SchedulerConfig { path, source })?;
        Ok(Self {
            tokenizer: folder.load_tokenizer().await?,
            clip: folder.load_clip(&device, progress).await?,
            unet: folder.load_unet(&device, progress).await?,
            vae: folder.load_vae(&device, progress).await?,
            scheduler,
            device,
        })
    }

    /// SD1.x, in the configuration fpi has built in for checkpoint files, with random weights in `dtype` (see
    /// [`fpi_models::precision`]): for timing the model without its files (`fpi bench --random`). Its tokenizer is
    /// CLIP's; its outputs mean nothing.
    pub fn random(device: Device, dtype: FloatDType) -> Result<Self, PipelineError> {
        let at = |name: &str| PathBuf::from(format!("SD1.x's built-in {name}"));
        let unet: UNetConfig = parse_config(sd1::UNET_CONFIG, &at("UNet config"))?;
        let vae: VaeConfig = parse_config(sd1::VAE_CONFIG, &at("VAE config"))?;
        let clip: ClipConfig = parse_config(sd1::CLIP_CONFIG, &at("CLIP config"))?;
        let scheduler = SchedulerConfig::parse(sd1::SCHEDULER_CONFIG)
            .map_err(|source| PipelineError::SchedulerConfig { path: at("scheduler config"), source })?;
        let merges = sd1::merges_txt();
        let tokenizer =
            ClipTokenizer::from_vocab_merges(&sd1::vocab_json(&merges), &merges, &[at("vocab"), at("merges")])?;
        // A fixed pseudo-random table (CLIP's token embeddings have a spread of about 0.02).
        let rows = (0..clip.vocab_size * clip.hidden_size)
            .map(|i| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32 * 0.04 - 0.02)
            .collect();
        let table = TokenTable { rows, dim: clip.hidden_size };
        // Each weight in a device allocation of its own size, as a loaded model's are (`fpi_models::weights`).
        let (clip, unet, vae) = device.memory_persistent_allocations(table, |table| {
            (
                cast_parameters(ClipTextModel::new(&clip, table, &device), dtype),
                cast_parameters(UNet2DConditionModel::new(&unet, &device), dtype),
                cast_parameters(AutoencoderKL::new(&vae, &device), dtype),
            )
        });
        // The weights were made in f32 and cast: once that has run, give the f32 copies' memory back.
        device.sync().map_err(|e| RunError::Device(format!("{e:?}")))?;
        device.memory_cleanup();
        Ok(Self { tokenizer, clip, unet, vae, scheduler, device })
    }

    /// The device the model is on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The float type the networks compute in (the solver's arithmetic stays f32).
    pub fn dtype(&self) -> FloatDType {
        self.unet.dtype()
    }

    /// The UNet (for timing it alone).
    pub fn unet(&self) -> &UNet2DConditionModel {
        &self.unet
    }

    /// The VAE (for timing it alone).
    pub fn vae(&self) -> &AutoencoderKL {
        &self.vae
    }

    /// Image sides must be multiples of this: the VAE's factor times the UNet's latent multiple (64 for SD1.5).
    pub fn size_step(&self) -> usize {
        self.vae.downsampling_factor() * self.unet.latent_multiple()
    }

    /// Checks an image side against the model.
    pub fn check_size(&self, size: usize) -> Result<(), SettingsError> {
        let multiple = self.size_step();
        if size == 0 || !size.is_multiple_of(multiple) {
            return Err(SettingsError::Size { size, multiple });
        }
        Ok(())
    }

    /// The shape of the latents of a `size`×`size` image.
    pub fn latent_shape(&self, size: usize) -> [usize; 4] {
        let side = size / self.vae.downsampling_factor();
        [1, self.unet.latent_channels(), side, side]
    }

    /// Checks latents against the model: its channels, and sides the UNet can halve at each level.
    pub fn check_latents(&self, shape: [usize; 4]) -> Result<(), PipelineError> {
        let (channels, multiple) = (self.unet.latent_channels(), self.unet.latent_multiple());
        let [b, c, h, w] = shape;
        if b != 1 || c != channels || h == 0 || w == 0 || h % multiple != 0 || w % multiple != 0 {
            return Err(PipelineError::Latents { shape, channels, multiple });
        }
        Ok(())
    }

    /// Checks inversion settings against the model and returns their schedule.
    pub fn check(&self, settings: &InvertSettings) -> Result<DdimSchedule, PipelineError> {
        settings.validate()?;
        self.check_size(settings.size)?;
        Ok(self.check_steps(settings.steps)?)
    }

    /// The schedule of `steps` sampling steps, if the model's schedule has that many.
    pub fn check_steps(&self, steps: usize) -> Result<DdimSchedule, SettingsError> {
        DdimSchedule::new(&self.scheduler, steps)
    }

    /// How many of the prompt's tokens CLIP's 77 positions leave out.
    pub fn dropped_tokens(&self, prompt: &str) -> Result<usize, PipelineError> {
        Ok(self.tokenizer.encode(prompt)?.dropped)
    }

    /// CLIP's states for the empty prompt and `prompt`.
    pub fn condition(&self, prompt: &str) -> Result<Conditioning, PipelineError> {
        Ok(Conditioning { states: self.condition_all(&["", prompt])? })
    }

    /// CLIP's states `[n, 77, C]` for `n` prompts.
    pub fn condition_all(&self, prompts: &[&str]) -> Result<Tensor<3>, PipelineError> {
        let ids =
            prompts.iter().map(|p| Ok(self.tokenizer.encode(p)?.ids)).collect::<Result<Vec<_>, PipelineError>>()?;
        Ok(self.clip.forward(&ids, &self.device)?)
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
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

    /// The VAE latents of an image (posterior mean × scaling factor).
    pub fn encode(&self, image: &RgbImage) -> Tensor<4> {
        let x = image_io::to_tensor(image, &self.device);
        self.vae.encode(x).mean.mul_scalar(self.vae.scaling_factor)
    }

    /// The image of latents.
    pub async fn decode(&self, latents: Tensor<4>) -> Result<RgbImage, PipelineError> {
        let pixels = self.vae.decode(latents.div_scalar(self.vae.scaling_factor));
        let [_, _, h, w] = pixels.dims();
        let values = to_host(pixels).await?;
        Ok(image_io::from_values(&values, h, w))
    }

    /// A seed's latents on the device, checked against the model.
    pub fn seed_tensor(&self, seed: &Seed) -> Result<Tensor<4>, PipelineError> {
        self.check_latents(seed.shape)?;
        Ok(Tensor::from_data(TensorData::new(seed.latents.clone(), seed.shape), &self.device))
    }

    /// Adjusts and inverts clean latents `z0` into a seed; reports per step.
    pub async fn invert(
        &self,
        z0: Tensor<4>,
        settings: &InvertSettings,
        observer: &mut PhaseObserver<'_>,
    ) -> Result<LatentInversion, PipelineError> {
        let schedule = self.check(settings)?;
        self.check_latents(z0.dims())?;
        self.invert_checked(z0, settings, &schedule, observer).await
    }

    async fn invert_checked(
        &self,
        z0: Tensor<4>,
        settings: &InvertSettings,
        schedule: &DdimSchedule,
        observer: &mut PhaseObserver<'_>,
    ) -> Result<LatentInversion, PipelineError> {
        let conditioning = self.condition(&settings.prompt)?;
        let predictor = self.predictor(&conditioning, settings.guidance);
        let mut on_adjust = |p: &Progress| observer(Phase::Adjust, p);
        let start = adjust(&predictor, schedule, z0, settings.adjust, settings.method, &mut on_adjust).await?;
        let on_invert: &mut Observer<'_> = &mut |p: &Progress| observer(Phase::Invert, p);
        let (seed, reports) =
            solver::invert(&predictor, schedule, start.clone(), settings.steps, settings.method, on_invert).await?;
        Ok(LatentInversion { seed, start, reports })
    }

    /// Inverts an image (centre-cropped and resized to `settings.size`) into a seed recorded as made with the model
    /// called `model`.
    pub async fn invert_image(
        &self,
        image: &RgbImage,
        settings: &InvertSettings,
        model: &str,
        observer: &mut PhaseObserver<'_>,
    ) -> Result<InvertedImage, PipelineError> {
        let schedule = self.check(settings)?;
        let image = image_io::square(image, settings.size);
        let latents = self.encode(&image);
        let mut evaluations = 0;
        let mut counting = |phase, p: &Progress| {
            evaluations += 1;
            observer(phase, p)
        };
        let inversion = self.invert_checked(latents.clone(), settings, &schedule, &mut counting).await?;
        let seed = Seed {
            latents: to_host(inversion.seed.clone()).await?,
            shape: inversion.seed.dims(),
            info: Some(SeedInfo::new(settings.clone(), model).with_precision(precision::name(self.dtype()))),
        };
        let settings = settings.clone();
        Ok(InvertedImage { image, seed, evaluations, settings, latents, inversion })
    }

    /// DDIM sampling from a seed with `prompt`, `steps` and `guidance`.
    pub async fn sample(
        &self,
        seed: Tensor<4>,
        prompt: &str,
        steps: usize,
        guidance: f64,
        observer: &mut PhaseObserver<'_>,
    ) -> Result<Tensor<4>, PipelineError> {
        self.check_latents(seed.dims())?;
        check_guidance(guidance)?;
        let schedule = self.check_steps(steps)?;
        let conditioning = self.condition(prompt)?;
        let predictor = self.predictor(&conditioning, guidance);
        let mut on_sample = |p: &Progress| observer(Phase::Sample, p);
        Ok(solver::sample(&predictor, &schedule, seed, steps, &mut on_sample).await?)
    }

    /// Samples an inverted image's seed back with its settings and compares the result with the image.
    pub async fn check_reconstruction(
        &self,
        inverted: &InvertedImage,
        observer: &mut PhaseObserver<'_>,
    ) -> Result<Reconstruction, PipelineError> {
        let settings = &inverted.settings;
        let (seed, start) = (inverted.inversion.seed.clone(), &inverted.inversion.start);
        let latents = self.sample(seed, &settings.prompt, settings.steps, settings.guidance, observer).await?;
        let latent_error = relative_error(&to_host(latents.clone()).await?, &to_host(start.clone()).await?);
        let image = self.decode(latents).await?;
        let vae_only = self.decode(inverted.latents.clone()).await?;
        let pixels = |image: &RgbImage| image.as_raw().iter().map(|&v| v as f32).collect::<Vec<_>>();
        let original = pixels(&inverted.image);
        Ok(Reconstruction {
            psnr: psnr(&pixels(&image), &original, 255.0),
            vae_psnr: psnr(&pixels(&vae_only), &original, 255.0),
            latent_error,
            image,
            evaluations: settings.steps,
        })
    }
}
