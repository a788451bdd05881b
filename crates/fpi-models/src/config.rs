//! The models' shapes and options, read from diffusers' and transformers' `config.json` files.
//!
//! Field names and defaults follow diffusers, so a tiny test config, SD1.5 and SD1.x fine-tunes load alike.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// One value for every block, or one per block (diffusers accepts both).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// The same value for all blocks.
    All(T),
    /// A value per down block; up blocks read it reversed.
    Each(Vec<T>),
}

impl<T: Copy> PerBlock<T> {
    /// The value of down block `i`.
    pub fn get(&self, i: usize) -> T {
        match self {
            PerBlock::All(v) => *v,
            PerBlock::Each(v) => v[i.min(v.len() - 1)],
        }
    }
}

/// `UNet2DConditionModel`'s config.
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: PerBlock<usize>,
    /// In SD1.x configs this is the number of heads (a diffusers naming quirk).
    #[serde(default)]
    pub attention_head_dim: Option<PerBlock<usize>>,
    /// The number of heads, when a config says it under its own name.
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    pub cross_attention_dim: usize,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: usize,
    #[serde(default = "default_one")]
    pub downsample_padding: usize,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "default_one_per_block")]
    pub transformer_layers_per_block: PerBlock<usize>,
    #[serde(default = "default_mid_block")]
    pub mid_block_type: Option<String>,
    #[serde(default)]
    pub sample_size: Option<usize>,
}

impl UNetConfig {
    /// Heads of the attention in down block `i` (SD1.x: `attention_head_dim`).
    pub fn heads(&self, i: usize) -> usize {
        self.num_attention_heads
            .as_ref()
            .or(self.attention_head_dim.as_ref())
            .map_or(8, |h| h.get(i))
    }

    /// Checks what the model code supports, so a bad config is an error and not a panic later.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err("down_block_types, up_block_types and block_out_channels must have one entry per level".into());
        }
        for t in &self.down_block_types {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return Err(format!("unsupported down block type {t:?}"));
            }
        }
        for t in &self.up_block_types {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return Err(format!("unsupported up block type {t:?}"));
            }
        }
        match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") | None => {}
            Some(t) => return Err(format!("unsupported mid block type {t:?}")),
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c % self.norm_num_groups != 0 {
                return Err(format!("block_out_channels[{i}] = {c} is not a multiple of norm_num_groups"));
            }
            let heads = self.heads(i);
            if heads == 0 || c % heads != 0 {
                return Err(format!("block_out_channels[{i}] = {c} does not split into {heads} heads"));
            }
        }
        Ok(())
    }
}

/// `AutoencoderKL`'s config.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f64,
    #[serde(default = "default_true")]
    pub mid_block_add_attention: bool,
    #[serde(default = "default_true")]
    pub use_quant_conv: bool,
    #[serde(default = "default_true")]
    pub use_post_quant_conv: bool,
    #[serde(default)]
    pub sample_size: Option<usize>,
}

impl VaeConfig {
    /// How many pixels one latent cell spans along each side.
    pub fn downsampling_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// Checks what the model code supports.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err("down_block_types, up_block_types and block_out_channels must have one entry per level".into());
        }
        if self.down_block_types.iter().any(|t| t != "DownEncoderBlock2D") {
            return Err("only DownEncoderBlock2D encoder blocks are supported".into());
        }
        if self.up_block_types.iter().any(|t| t != "UpDecoderBlock2D") {
            return Err("only UpDecoderBlock2D decoder blocks are supported".into());
        }
        if let Some(c) = self.block_out_channels.iter().find(|&&c| c % self.norm_num_groups != 0) {
            return Err(format!("channel count {c} is not a multiple of norm_num_groups"));
        }
        Ok(())
    }
}

/// The CLIP text model's config (transformers' `CLIPTextConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_norm_eps")]
    pub layer_norm_eps: f64,
}

impl ClipConfig {
    /// Checks what the model code supports.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err("hidden_size must split into num_attention_heads".into());
        }
        if self.hidden_act != "quick_gelu" && self.hidden_act != "gelu" {
            return Err(format!("unsupported hidden_act {:?}", self.hidden_act));
        }
        Ok(())
    }
}

/// Reads a JSON config file; `validate` checks the values the models rely on.
pub fn read_config<T: DeserializeOwned>(
    path: &Path,
    validate: impl Fn(&T) -> std::result::Result<(), String>,
) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let config: T = serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    validate(&config).map_err(|message| Error::Config {
        path: path.to_owned(),
        message,
    })?;
    Ok(config)
}

fn default_groups() -> usize {
    32
}
fn default_norm_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_one() -> usize {
    1
}
fn default_one_per_block() -> PerBlock<usize> {
    PerBlock::All(1)
}
fn default_mid_block() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn default_scaling_factor() -> f64 {
    0.18215
}
fn default_act() -> String {
    "quick_gelu".into()
}
