//! fpi in the browser: the same models, pipeline and inversion core as the `fpi` CLI, compiled to wasm32 and run
//! on the page's WebGPU. A page (see the repository's `web/`) calls [`Model::load`] with the model's files, then
//! [`Model::invert`] and [`Model::reconstruct`]; progress reaches a JS callback, which can also cancel.
#![cfg(target_family = "wasm")]

mod files;

use std::cell::RefCell;
use std::ops::ControlFlow;

use burn::tensor::Device;
use fpi_core::seed::Seed;
use fpi_core::solver::Progress;
use fpi_models::ModelFolder;
use fpi_pipeline::pipeline::{Phase, read};
use fpi_pipeline::{InvertRequest, Pipeline, image_io};
use js_sys::{Function, Map, Object, Reflect};
use wasm_bindgen::prelude::*;

use crate::files::{BlobFiles, describe};

thread_local! {
    /// The page's one WebGPU device and its adapter's description (a second init fails: every load shares it).
    static DEVICE: RefCell<Option<(Device, String)>> = const { RefCell::new(None) };
}

/// Opens WebGPU once per page.
async fn device() -> Result<(Device, String), JsError> {
    if let Some(open) = DEVICE.with_borrow(|d| d.clone()) {
        return Ok(open);
    }
    let (device, setup) = Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map_err(|e| JsError::new(&format!("no usable WebGPU adapter: {e}")))?;
    let info = setup.adapter.get_info();
    let name = if info.name.is_empty() { "WebGPU adapter".to_owned() } else { info.name };
    let adapter = format!("{name} ({:?}; weights in f32)", info.device_type);
    DEVICE.with_borrow_mut(|d| *d = Some((device.clone(), adapter.clone())));
    Ok((device, adapter))
}

/// A loaded model on the page's WebGPU device.
#[wasm_bindgen]
pub struct Model {
    pipeline: Pipeline,
    adapter: String,
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

    /// UNet evaluations of the implicit step, over all steps.
    #[wasm_bindgen(getter)]
    pub fn evaluations(&self) -> usize {
        self.evaluations
    }
}

#[wasm_bindgen]
impl Model {
    /// Loads a diffusers folder given as a `Map` of relative path → `Blob` (`unet/config.json`, …), streaming the
    /// weights to the GPU in chunks. `name` is recorded in seed files. `on_status(text, done, total)` hears the
    /// weight bytes of each part as they load.
    pub async fn load(files: Map, name: String, on_status: Option<Function>) -> Result<Model, JsError> {
        let source = BlobFiles::from_map(&files).map_err(|e| JsError::new(&e))?;
        let (device, adapter) = device().await?;
        let folder = ModelFolder::new(source);
        let mut progress = |part: &str, done: u64, total: u64| {
            if let Some(f) = &on_status {
                let text = JsValue::from(format!("loading {part}"));
                let _ = f.call3(&JsValue::NULL, &text, &(done as f64).into(), &(total as f64).into());
            }
        };
        let pipeline = Pipeline::load(&folder, device, &mut progress).await.map_err(error)?;
        Ok(Model { pipeline, adapter, name })
    }

    /// The WebGPU adapter the model runs on.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        self.adapter.clone()
    }

    /// Image sides must be multiples of this (64 for SD1.5).
    #[wasm_bindgen(getter)]
    pub fn size_step(&self) -> usize {
        self.pipeline.size_step()
    }

    /// Inverts an image (PNG, JPEG or WebP bytes) with `settings` = `{prompt, size, steps, method: "fpi"|"ddim",
    /// iterations, tolerance?, guidance, adjust}`, then samples the seed back to measure the reconstruction.
    /// `on_progress(p)` hears every evaluation; returning `false` from it cancels (the promise rejects with
    /// "cancelled").
    pub async fn invert(
        &self,
        image: Vec<u8>,
        settings: JsValue,
        on_progress: Option<Function>,
    ) -> Result<Inversion, JsError> {
        let raw: InvertRequest =
            serde_wasm_bindgen::from_value(settings).map_err(|e| JsError::new(&format!("settings: {e}")))?;
        let settings = raw.settings().map_err(|e| JsError::new(&e))?;
        let pipeline = &self.pipeline;
        pipeline.check_size(raw.size).map_err(error)?;
        let image = image_io::square(image_io::decode(&image).map_err(|e| JsError::new(&e))?, raw.size);
        let mut observer = observer(on_progress);

        let z0 = pipeline.encode(&image);
        let inversion = pipeline.invert(z0.clone(), &settings, &mut observer).await.map_err(error)?;
        let shape = inversion.seed.dims();
        let seed = Seed {
            latents: read(inversion.seed.clone()).await.map_err(error)?,
            shape,
            info: settings.seed_info(raw.size, &self.name),
        };
        let check =
            pipeline.check_reconstruction(&inversion, z0, &image, &settings, &mut observer).await.map_err(error)?;
        Ok(Inversion {
            seed: seed.to_bytes(),
            original: image_io::encode_png(&image),
            reconstruction: image_io::encode_png(&check.image),
            psnr: check.psnr,
            vae_psnr: check.vae_psnr,
            latent_error: check.latent_error,
            evaluations: inversion.reports.iter().map(|r| r.iterations).sum(),
        })
    }

    /// Samples a seed file (prompt, steps and guidance from its metadata) and returns the image as PNG bytes.
    pub async fn reconstruct(&self, seed: Vec<u8>, on_progress: Option<Function>) -> Result<Vec<u8>, JsError> {
        let seed = Seed::from_bytes(&seed).map_err(|e| JsError::new(&format!("seed file: {e}")))?;
        let pipeline = &self.pipeline;
        pipeline.check_latents(seed.shape).map_err(error)?;
        let latents = pipeline.latents(seed.latents, seed.shape);
        let info = &seed.info;
        let z0 = pipeline
            .sample(latents, &info.prompt, info.steps, info.guidance, &mut observer(on_progress))
            .await
            .map_err(error)?;
        Ok(image_io::encode_png(&pipeline.decode(z0).await.map_err(error)?))
    }
}

fn error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// Calls `on_progress` with `{phase, step, steps, timestep, iteration, residual}`; `false` back cancels.
fn observer(on_progress: Option<Function>) -> impl FnMut(Phase, &Progress) -> ControlFlow<()> {
    move |phase, p| {
        let Some(f) = &on_progress else {
            return ControlFlow::Continue(());
        };
        let report = Object::new();
        let phase = match phase {
            Phase::Adjust => "adjust",
            Phase::Invert => "invert",
            Phase::Sample => "sample",
        };
        let fields: [(&str, JsValue); 6] = [
            ("phase", phase.into()),
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
