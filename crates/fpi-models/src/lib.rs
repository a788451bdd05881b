//! Stable Diffusion 1.5's networks in burn, numerically equal to diffusers, loaded from diffusers folders, single
//! checkpoint files and the Hugging Face cache.
//!
//! - [`clip::ClipTextModel`]: prompt token ids → text states `[B, 77, 768]`.
//! - [`unet::UNet2DConditionModel`]: ε(latents, timestep, text states).
//! - [`vae::AutoencoderKL`]: images ↔ latents.
//! - [`tokenizer::ClipTokenizer`]: prompts → 77 token ids.
//! - [`folder::ModelFolder`]: reads configs and weights of each part, with errors that name file, key and shapes,
//!   from a [`source::ModelSource`]: a directory on disk, or the files a web page was given.
//! - [`model_files::ModelFiles`]: a model in the form the user has it — a diffusers folder, or one original
//!   (LDM-keyed) checkpoint file ([`checkpoint::Checkpoint`], renamed by the tables of [`ldm`], configured by
//!   [`sd1`]'s built-in SD1.x configs) — with an optional replacement VAE, seen as one diffusers folder.
//! - `hub` (native): hub ids `ORG/NAME[@REVISION]` found in the Hugging Face cache, downloaded into it when missing
//!   (feature `download`).
//!
//! [`precision`]: f16 on wgpu adapters with `shader-f16` (`auto`), norms and softmax kept in f32. [`profile`]: a
//! forward pass's device time by kind of operation, natively and in the browser.
//!
//! No tensor on the device exceeds 128 MiB at SD1.5 size: CLIP's token table stays on the host, attention runs
//! in blocks of query rows, and on wgpu the VAE holds its large feature maps as bands of rows
//! ([`feature_map::Bands`]).
//!
//! On flex, our own CPU kernels replace burn's for the ops that dominate: [`conv`], [`group_norm`] (fused with
//! SiLU) and attention ([`attention::cpu`]), reaching the tensors' memory through [`flex`] (native only). On wgpu,
//! [`wgsl`] launches our own WGSL kernels from `shaders/` (group norm fused with SiLU).

#![warn(missing_docs)]

pub mod attention;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod conv;
pub mod device;
pub mod error;
pub mod feature_map;
#[cfg(not(target_family = "wasm"))]
pub mod flex;
pub mod folder;
pub mod group_norm;
pub mod hook;
#[cfg(not(target_family = "wasm"))]
pub mod hub;
pub mod ldm;
pub mod model_files;
pub mod precision;
pub mod profile;
pub mod resnet;
pub mod sd1;
pub mod source;
pub mod tokenizer;
pub mod transformer;
pub mod unet;
pub mod vae;
pub mod weights;
pub mod wgsl;

pub use error::{Error, Result};
pub use folder::ModelFolder;
pub use model_files::ModelFiles;
