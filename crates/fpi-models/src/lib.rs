//! Stable Diffusion 1.5's networks in burn, numerically equal to diffusers, loaded from diffusers model folders.
//!
//! - [`clip::ClipTextModel`]: prompt token ids → text states `[B, 77, 768]`.
//! - [`unet::UNet2DConditionModel`]: ε(latents, timestep, text states).
//! - [`vae::AutoencoderKL`]: images ↔ latents.
//! - [`tokenizer::ClipTokenizer`]: prompts → 77 token ids.
//! - [`folder::ModelFolder`]: reads configs and weights of each part, with errors that name file, key and shapes,
//!   from a [`source::ModelSource`]: a directory on disk, or the files a web page was given.
//!
//! No tensor on the device exceeds 128 MiB at SD1.5 size: CLIP's token table stays on the host, attention runs
//! in blocks of query rows, and the VAE holds its large feature maps as bands of rows ([`feature_map::Bands`]).

#![warn(missing_docs)]

pub mod attention;
pub mod clip;
pub mod config;
pub mod device;
pub mod error;
pub mod feature_map;
pub mod folder;
pub mod hook;
pub mod resnet;
pub mod source;
pub mod tokenizer;
pub mod transformer;
pub mod unet;
pub mod vae;
pub mod weights;

pub use error::{Error, Result};
pub use folder::ModelFolder;
