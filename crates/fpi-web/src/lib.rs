//! fpi in the browser: the same models, pipeline and inversion core as the `fpi` CLI, compiled to wasm32 and run
//! on the page's WebGPU. A page (see the repository's `web/`) calls [`Model::load`] with the model's files, then
//! [`Model::invert`], [`Model::edit`], [`Model::interpolate`] and [`Model::reconstruct`]; progress reaches a JS
//! callback, which can also cancel.
#![cfg(target_family = "wasm")]
#![warn(missing_docs)]

mod files;

use std::cell::RefCell;
use std::ops::ControlFlow;

use burn::tensor::Device;
use fpi_core::seed::{Derivation, Sampling, Seed, SeedInfo};
use fpi_core::seed_space::{self, CentroidMethod, PathMethod};
use fpi_core::settings::{InvertSettings, Setting, check_guidance};
use fpi_core::solver::Progress;
use fpi_models::precision::{self, Precision, computes_in_f16};
use fpi_models::{ModelFiles, ModelFolder};
use fpi_pipeline::edit::EditSettings;
use fpi_pipeline::{Phase, Pipeline, PipelineError, image_io};
use js_sys::{Array, Function, Map, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use crate::files::{BlobFiles, describe};

/// The page's WebGPU device and what the page says of its adapter.
#[derive(Clone)]
struct Gpu {
    device: Device,
    /// The adapter's name.
    adapter: String,
    /// A CPU (software) adapter, such as SwiftShader.
    software: bool,
}

thread_local! {
    /// The page's one WebGPU device (a second init fails: every load shares it).
    static GPU: RefCell<Option<Gpu>> = const { RefCell::new(None) };
}

/// Opens WebGPU once per page.
async fn gpu() -> Result<Gpu, JsError> {
    if let Some(open) = GPU.with_borrow(|g| g.clone()) {
        return Ok(open);
    }
    let (device, setup) = Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map_err(|e| JsError::new(&format!("no usable WebGPU adapter: {e}")))?;
    let info = setup.adapter.get_info();
    let adapter = if info.name.is_empty() { "WebGPU adapter".to_owned() } else { info.name };
    let software = info.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu;
    let gpu = Gpu { device, adapter, software };
    GPU.with_borrow_mut(|g| *g = Some(gpu.clone()));
    Ok(gpu)
}

/// The page's WebGPU device (opened on first use, then shared with every model): for tests and benchmarks of single
/// operations on it.
pub async fn webgpu_device() -> Result<Device, JsError> {
    Ok(gpu().await?.device)
}

/// How the page's form labels each setting, for error messages.
fn label(setting: Setting) -> String {
    match setting {
        Setting::Size => "Size (px)",
        Setting::Steps => "Steps",
        Setting::Guidance => "Guidance",
        Setting::Method => "Method",
        Setting::Iterations => "Iterations",
        Setting::Tolerance => "Tolerance",
        Setting::Adjust => "Adjustment steps",
    }
    .to_owned()
}

/// A pipeline error for the page: settings named by the form's labels.
fn error(e: PipelineError) -> JsError {
    match e {
        PipelineError::Settings(e) => JsError::new(&e.describe(label)),
        other => JsError::new(&other.to_string()),
    }
}

/// A model loading error for the page.
fn load_error(e: fpi_models::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// A loaded model on the page's WebGPU device.
#[wasm_bindgen]
pub struct Model {
    pipeline: Pipeline,
    gpu: Gpu,
    name: String,
}

/// The result of [`Model::invert`].
#[wasm_bindgen]
pub struct Inversion {
    seed: Vec<u8>,
    original: Vec<u8>,
    reconstruction: Vec<u8>,
    psnr: f64,
    vae_psnr: f64,
    latent_error: f64,
    evaluations: usize,
    dropped_tokens: usize,
}

#[wasm_bindgen]
impl Inversion {
    /// The seed file (safetensors: `latents` `[1, C, h, w]` f32 and the settings), as the CLI writes it.
    #[wasm_bindgen(getter)]
    pub fn seed(&self) -> Vec<u8> {
        self.seed.clone()
    }

    /// PNG of the square image that was inverted (the input, cropped and resized).
    #[wasm_bindgen(getter)]
    pub fn original(&self) -> Vec<u8> {
        self.original.clone()
    }

    /// PNG of the image DDIM sampling makes from the seed.
    #[wasm_bindgen(getter)]
    pub fn reconstruction(&self) -> Vec<u8> {
        self.reconstruction.clone()
    }

    /// PSNR (dB) of the reconstruction against the original.
    #[wasm_bindgen(getter)]
    pub fn psnr(&self) -> f64 {
        self.psnr
    }

    /// PSNR of the VAE alone: the most a seed can reach.
    #[wasm_bindgen(getter)]
    pub fn vae_psnr(&self) -> f64 {
        self.vae_psnr
    }

    /// Relative L2 error of the sampled latents against the inverted ones.
    #[wasm_bindgen(getter)]
    pub fn latent_error(&self) -> f64 {
        self.latent_error
    }

    /// UNet evaluations of the whole run: adjustment, inversion and the sampling back.
    #[wasm_bindgen(getter)]
    pub fn evaluations(&self) -> usize {
        self.evaluations
    }

    /// Tokens of the prompt past CLIP's 77, which were ignored.
    #[wasm_bindgen(getter)]
    pub fn dropped_tokens(&self) -> usize {
        self.dropped_tokens
    }
}

/// What the page asks [`Model::edit`] for: the edit, and the steps and guidance when not the seed's.
#[derive(serde::Deserialize)]
struct EditRequest {
    #[serde(flatten)]
    edit: EditSettings,
    steps: Option<usize>,
    guidance: Option<f64>,
}

/// The prompt, steps and guidance to sample with, when not the seed's ([`Model::interpolate`]'s `options`).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SamplingRequest {
    prompt: Option<String>,
    steps: Option<usize>,
    guidance: Option<f64>,
}

/// The most frames [`Model::interpolate`] makes.
const MAX_FRAMES: usize = 1000;

/// The result of [`Model::edit`].
#[wasm_bindgen]
pub struct Edit {
    edit: Vec<u8>,
    source: Vec<u8>,
}

#[wasm_bindgen]
impl Edit {
    /// PNG of the edited image (the target prompt's branch).
    #[wasm_bindgen(getter)]
    pub fn edit(&self) -> Vec<u8> {
        self.edit.clone()
    }

    /// PNG of the source prompt's branch: the seed's reconstruction.
    #[wasm_bindgen(getter)]
    pub fn source(&self) -> Vec<u8> {
        self.source.clone()
    }
}

#[wasm_bindgen]
impl Model {
    /// Loads a model given as a `Map` of relative path → `Blob`: a diffusers folder (`unet/config.json`, …), or
    /// one checkpoint file at the map's root (SD1.x's configs built in, or a diffusers folder's configs beside it
    /// in the map), streaming the weights to the GPU in chunks. `vae`, when given, replaces the model's VAE: a
    /// `Map` of a VAE's folder (`config.json` and its weights), a model folder, or one checkpoint file. `name` is
    /// recorded in seed files. `on_status(text, done, total)` hears the weight bytes of each part as they load
    /// (`text` is `loading {part}`). `precision` is the CLI's `--precision`: `auto` (the default: f16 where the
    /// adapter has `shader-f16`, else f32), `f32` or `f16`.
    pub async fn load(
        files: Map,
        name: String,
        on_status: Option<Function>,
        vae: Option<Map>,
        precision: Option<String>,
    ) -> Result<Model, JsError> {
        let precision: Precision =
            precision.as_deref().unwrap_or("auto").parse().map_err(|e| JsError::new(&format!("{e}")))?;
        let model = BlobFiles::from_map(&files)?.into_form().await.map_err(load_error)?;
        let vae = match vae {
            Some(map) => Some(BlobFiles::from_map(&map)?.into_form().await.map_err(load_error)?),
            None => None,
        };
        let source = ModelFiles::new(model, vae).map_err(load_error)?;
        let gpu = gpu().await?;
        let mut folder = ModelFolder::new(source);
        folder.dtype = precision.resolve(&gpu.device).map_err(|_| {
            JsError::new("f16 needs a WebGPU adapter with shader-f16, which this one lacks: choose f32 or auto")
        })?;
        let mut progress = |part: &str, done: u64, total: u64| {
            if let Some(f) = &on_status {
                let text = JsValue::from(format!("loading {part}"));
                let _ = f.call3(&JsValue::NULL, &text, &(done as f64).into(), &(total as f64).into());
            }
        };
        let pipeline = Pipeline::load(&folder, gpu.device.clone(), &mut progress).await.map_err(error)?;
        Ok(Model { pipeline, gpu, name })
    }

    /// The name of the WebGPU adapter the model runs on.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        self.gpu.adapter.clone()
    }

    /// The float type the networks compute in: `f16` or `f32`.
    #[wasm_bindgen(getter)]
    pub fn precision(&self) -> String {
        precision::name(self.pipeline.dtype()).to_owned()
    }

    /// Whether the adapter can compute in f16 (`shader-f16`).
    #[wasm_bindgen(getter)]
    pub fn shader_f16(&self) -> bool {
        computes_in_f16(&self.gpu.device)
    }

    /// Whether the adapter is a CPU (software) one, such as SwiftShader: far slower than a GPU.
    #[wasm_bindgen(getter)]
    pub fn software_adapter(&self) -> bool {
        self.gpu.software
    }

    /// Image sides must be multiples of this (64 for SD1.5).
    #[wasm_bindgen(getter)]
    pub fn size_step(&self) -> usize {
        self.pipeline.size_step()
    }

    /// Inverts an image (PNG, JPEG or WebP bytes) with `settings` = `{prompt, size, steps, method: "fpi"|"ddim",
    /// iterations, tolerance?, guidance, adjust}` (the CLI's settings, as a seed file records them), then samples
    /// the seed back to measure the reconstruction. `on_progress(p)` hears every UNet evaluation; returning `false`
    /// from it cancels (the promise rejects with "cancelled").
    pub async fn invert(
        &self,
        image: Vec<u8>,
        settings: JsValue,
        on_progress: Option<Function>,
    ) -> Result<Inversion, JsError> {
        let json = js_sys::JSON::stringify(&settings).map_err(|e| JsError::new(&describe(e)))?;
        let settings: InvertSettings =
            serde_json::from_str(&String::from(json)).map_err(|e| JsError::new(&format!("settings: {e}")))?;
        let pipeline = &self.pipeline;
        let image = image_io::decode(&image).map_err(|e| error(e.into()))?;
        let dropped_tokens = pipeline.dropped_tokens(&settings.prompt).map_err(error)?;
        let mut observer = observer(on_progress);
        let inverted = pipeline.invert_image(&image, &settings, &self.name, &mut observer).await.map_err(error)?;
        let check = pipeline.check_reconstruction(&inverted, &mut observer).await.map_err(error)?;
        Ok(Inversion {
            seed: inverted.seed.to_bytes(),
            original: image_io::encode_png(&inverted.image),
            reconstruction: image_io::encode_png(&check.image),
            psnr: check.psnr,
            vae_psnr: check.vae_psnr,
            latent_error: check.latent_error,
            evaluations: inverted.evaluations + check.evaluations,
            dropped_tokens,
        })
    }

    /// Edits a seed file (from [`Model::invert`]) with Prompt-to-Prompt: `settings` = `{prompt, mode?: "replace" |
    /// "refine", cross_steps?, cross_word_steps?: [[word, fraction]], self_steps?, blend?: [words], blend_threshold?,
    /// blend_start?, reweight?: [[word, factor]], steps?, guidance?}` (absent: Prompt-to-Prompt's defaults; steps and guidance: the seed's). The
    /// source prompt is the seed's. `on_progress` as in [`Model::invert`].
    pub async fn edit(&self, seed: Vec<u8>, settings: JsValue, on_progress: Option<Function>) -> Result<Edit, JsError> {
        let seed = Seed::from_bytes(&seed).map_err(|e| JsError::new(&format!("seed file: {e}")))?;
        let Some(info) = &seed.info else {
            return Err(JsError::new("seed file: no fpi metadata (prompt, steps, guidance)"));
        };
        let json = js_sys::JSON::stringify(&settings).map_err(|e| JsError::new(&describe(e)))?;
        let bad = |e: String| JsError::new(&format!("edit settings: {e}"));
        let value: serde_json::Value = serde_json::from_str(&String::from(json)).map_err(|e| bad(e.to_string()))?;
        if !value.get("prompt").is_some_and(serde_json::Value::is_string) {
            return Err(bad("missing the target `prompt`".into()));
        }
        let request: EditRequest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let (edit, source) = (&request.edit, &info.settings);
        let (steps, guidance) = (request.steps.unwrap_or(source.steps), request.guidance.unwrap_or(source.guidance));
        let pipeline = &self.pipeline;
        let latents = pipeline.seed_tensor(&seed).map_err(error)?;
        let mut observer = observer(on_progress);
        let edited =
            pipeline.edit(latents, &source.prompt, edit, steps, guidance, &mut observer).await.map_err(error)?;
        Ok(Edit {
            edit: image_io::encode_png(&pipeline.decode(edited.target).await.map_err(error)?),
            source: image_io::encode_png(&pipeline.decode(edited.source).await.map_err(error)?),
        })
    }

    /// `points` seeds on a path from the seed file `seed_a` to `seed_b` (both included, `points` ≥ 2) by `method`
    /// (`"nao"`, `"slerp"` or `"lerp"`), as seed files that record how they were made, as `fpi interpolate` writes
    /// them: the first seed's settings with the prompt, steps and guidance to sample them with (`options` =
    /// `{prompt?, steps?, guidance?}`; absent: the first seed's, or for a file without fpi's metadata no prompt, 50
    /// steps and guidance 1), this model's name, and the derivation (the method, `names` = the two files' names,
    /// the frame and the count). [`Model::reconstruct`] renders each. Errors (one line): a file that is not a seed,
    /// seeds of different shapes, latents that do not fit the model, fewer than 2 points, an unknown method, bad
    /// steps or guidance.
    pub fn interpolate(
        &self,
        seed_a: Vec<u8>,
        seed_b: Vec<u8>,
        names: Vec<String>,
        points: usize,
        method: String,
        options: JsValue,
    ) -> Result<Array, JsError> {
        let [name_a, name_b]: [String; 2] = names
            .try_into()
            .map_err(|n: Vec<String>| JsError::new(&format!("names: 2 file names, got {}", n.len())))?;
        if !(2..=MAX_FRAMES).contains(&points) {
            return Err(JsError::new(&format!(
                "points must be from 2 to {MAX_FRAMES} (both seeds are frames), got {points}"
            )));
        }
        let method: PathMethod = method.parse().map_err(|e: String| JsError::new(&format!("method: {e}")))?;
        let seeds = self.read_seeds(&[seed_a, seed_b], &[name_a.clone(), name_b.clone()])?;
        let first = &seeds[0];
        let (second, settings) = (&seeds[1], self.derived_settings(first, options)?);
        let frames = Array::new();
        for (frame, latents) in
            seed_space::interpolate(&first.latents, &second.latents, points, method).into_iter().enumerate()
        {
            let sources = [name_a.clone(), name_b.clone()];
            let derivation = Derivation::Interpolation { method, sources, frame, frames: points };
            let info = SeedInfo::derived(settings.clone(), &self.name, derivation);
            let seed = Seed { latents, shape: first.shape, info: Some(info) };
            frames.push(&Uint8Array::from(seed.to_bytes().as_slice()));
        }
        Ok(frames)
    }

    /// The centre of 2 or more seed files (`seeds`, named `names`) by `method` (`"nao"`, `"mean"` or `"shell"`), as
    /// a seed file that records how it was made, as `fpi centroid` writes it: the first seed's settings with the
    /// prompt, steps and guidance to sample it with (`options` as in [`Model::interpolate`]), this model's name,
    /// and the derivation (the method and `names`). [`Model::reconstruct`] renders it. Errors (one line): fewer
    /// than 2 seeds, a file that is not a seed, seeds of different shapes, latents that do not fit the model, an
    /// unknown method, bad steps or guidance, a centroid that is not finite.
    pub fn centroid(
        &self,
        seeds: Vec<Uint8Array>,
        names: Vec<String>,
        method: String,
        options: JsValue,
    ) -> Result<Vec<u8>, JsError> {
        if seeds.len() < 2 {
            return Err(JsError::new(&format!("a centroid needs at least 2 seeds, got {}", seeds.len())));
        }
        if names.len() != seeds.len() {
            return Err(JsError::new(&format!("names: {} file names for {} seeds", names.len(), seeds.len())));
        }
        let method: CentroidMethod = method.parse().map_err(|e: String| JsError::new(&format!("method: {e}")))?;
        let bytes: Vec<Vec<u8>> = seeds.iter().map(Uint8Array::to_vec).collect();
        let seeds = self.read_seeds(&bytes, &names)?;
        let settings = self.derived_settings(&seeds[0], options)?;
        let vectors: Vec<&[f32]> = seeds.iter().map(|s| s.latents.as_slice()).collect();
        let latents = seed_space::centroid(&vectors, method);
        if !latents.iter().all(|x| x.is_finite()) {
            return Err(JsError::new("the centroid is not finite (the seeds cancel out); try another method"));
        }
        let derivation = Derivation::Centroid { method, sources: names };
        let info = SeedInfo::derived(settings, &self.name, derivation);
        Ok(Seed { latents, shape: seeds[0].shape, info: Some(info) }.to_bytes())
    }

    /// Samples a seed file (prompt, steps and guidance from its metadata) and returns the image as PNG bytes.
    pub async fn reconstruct(&self, seed: Vec<u8>, on_progress: Option<Function>) -> Result<Vec<u8>, JsError> {
        let seed = Seed::from_bytes(&seed).map_err(|e| JsError::new(&format!("seed file: {e}")))?;
        let Some(info) = &seed.info else {
            return Err(JsError::new("seed file: no fpi metadata (prompt, steps, guidance)"));
        };
        let pipeline = &self.pipeline;
        let latents = pipeline.seed_tensor(&seed).map_err(error)?;
        let settings = &info.settings;
        let z0 = pipeline
            .sample(latents, &settings.prompt, settings.steps, settings.guidance, &mut observer(on_progress))
            .await
            .map_err(error)?;
        Ok(image_io::encode_png(&pipeline.decode(z0).await.map_err(error)?))
    }
}

impl Model {
    /// Reads seed files (`names` their names, for errors): all of one shape, which the model can sample.
    fn read_seeds(&self, seeds: &[Vec<u8>], names: &[String]) -> Result<Vec<Seed>, JsError> {
        let seeds = seeds
            .iter()
            .zip(names)
            .map(|(bytes, name)| {
                Seed::from_bytes(bytes).map_err(|e| JsError::new(&format!("{name}: not a seed file: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let first = &seeds[0];
        if let Some((seed, name)) = seeds.iter().zip(names).skip(1).find(|(s, _)| s.shape != first.shape) {
            return Err(JsError::new(&format!(
                "{} has latents {:?} and {name} {:?}: seeds of different sizes cannot be combined",
                names[0], first.shape, seed.shape
            )));
        }
        self.pipeline.check_latents(first.shape).map_err(|e| JsError::new(&format!("{}: {e}", names[0])))?;
        Ok(seeds)
    }

    /// The settings a seed derived from `first` records: `first`'s, with the prompt, steps and guidance of
    /// `options` (`{prompt?, steps?, guidance?}`; absent: `first`'s, or for a file without fpi's metadata no
    /// prompt, 50 steps and guidance 1), checked.
    fn derived_settings(&self, first: &Seed, options: JsValue) -> Result<InvertSettings, JsError> {
        let request: SamplingRequest = if options.is_undefined() || options.is_null() {
            SamplingRequest::default()
        } else {
            let json = js_sys::JSON::stringify(&options).map_err(|e| JsError::new(&describe(e)))?;
            serde_json::from_str(&String::from(json)).map_err(|e| JsError::new(&format!("options: {e}")))?
        };
        let Sampling { prompt, steps, guidance } = first.sampling(request.prompt, request.steps, request.guidance);
        check_guidance(guidance).map_err(|e| error(e.into()))?;
        self.pipeline.check_steps(steps).map_err(|e| error(e.into()))?;
        Ok(SeedInfo::derived_settings(first, self.pipeline.vae().downsampling_factor(), prompt, steps, guidance))
    }
}

/// Calls `on_progress` with `{phase, step, steps, timestep, iteration, residual}`; `false` back cancels.
fn observer(on_progress: Option<Function>) -> impl FnMut(Phase, &Progress) -> ControlFlow<()> {
    move |phase, p| {
        let Some(f) = &on_progress else {
            return ControlFlow::Continue(());
        };
        let report = Object::new();
        let fields: [(&str, JsValue); 6] = [
            ("phase", phase.name().into()),
            ("step", p.step.into()),
            ("steps", p.steps.into()),
            ("timestep", p.timestep.into()),
            ("iteration", p.iteration.into()),
            ("residual", p.residual.map_or(JsValue::NULL, JsValue::from)),
        ];
        for (key, value) in fields {
            let _ = Reflect::set(&report, &key.into(), &value);
        }
        match f.call1(&JsValue::NULL, &report) {
            Ok(answer) if answer == JsValue::FALSE => ControlFlow::Break(()),
            Ok(_) => ControlFlow::Continue(()),
            Err(e) => {
                web_sys::console::error_1(&format!("progress callback failed: {}", describe(e)).into());
                ControlFlow::Continue(())
            }
        }
    }
}
