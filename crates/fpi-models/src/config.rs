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
    /// The value of down block `i` (checked to exist by the configs' `validate`).
    pub fn get(&self, i: usize) -> T {
        match self {
            PerBlock::All(v) => *v,
            PerBlock::Each(v) => v[i],
        }
    }

    fn check(&self, name: &str, levels: usize) -> std::result::Result<(), String> {
        match self {
            PerBlock::Each(v) if v.len() != levels => {
                Err(format!("{name} has {} entries for {levels} levels", v.len()))
            }
            _ => Ok(()),
        }
    }
}

/// Checks that the per-level lists agree and that channels split into `groups` groups.
fn check_levels(down: &[String], up: &[String], channels: &[usize], groups: usize) -> std::result::Result<(), String> {
    let n = channels.len();
    if n == 0 || down.len() != n || up.len() != n {
        return Err("down_block_types, up_block_types and block_out_channels must have one entry per level".into());
    }
    if groups == 0 {
        return Err("norm_num_groups must be positive".into());
    }
    match channels.iter().find(|&&c| c == 0 || c % groups != 0) {
        Some(c) => Err(format!("block_out_channels entry {c} is not a positive multiple of norm_num_groups")),
        None => Ok(()),
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
}

impl UNetConfig {
    /// Heads of the attention in down block `i` (SD1.x: `attention_head_dim`).
    pub fn heads(&self, i: usize) -> usize {
        self.num_attention_heads.as_ref().or(self.attention_head_dim.as_ref()).map_or(8, |h| h.get(i))
    }

    /// Checks what the model code supports, so a bad config is an error and not a panic later.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.block_out_channels.len();
        check_levels(&self.down_block_types, &self.up_block_types, &self.block_out_channels, self.norm_num_groups)?;
        self.layers_per_block.check("layers_per_block", n)?;
        self.transformer_layers_per_block.check("transformer_layers_per_block", n)?;
        for heads in [&self.attention_head_dim, &self.num_attention_heads].into_iter().flatten() {
            heads.check("attention_head_dim", n)?;
        }
        if self.block_out_channels[0] % 2 != 0 {
            return Err("block_out_channels[0] must be even (it is the width of the timestep features)".into());
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.cross_attention_dim == 0 {
            return Err("in_channels, out_channels and cross_attention_dim must be positive".into());
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
            Some("UNetMidBlock2DCrossAttn") => {}
            t => return Err(format!("unsupported mid block type {t:?}")),
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
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
}

impl VaeConfig {
    /// How many pixels one latent cell spans along each side.
    pub fn downsampling_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// Checks what the model code supports.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_levels(&self.down_block_types, &self.up_block_types, &self.block_out_channels, self.norm_num_groups)?;
        if self.down_block_types.iter().any(|t| t != "DownEncoderBlock2D") {
            return Err("only DownEncoderBlock2D encoder blocks are supported".into());
        }
        if self.up_block_types.iter().any(|t| t != "UpDecoderBlock2D") {
            return Err("only UpDecoderBlock2D decoder blocks are supported".into());
        }
        if self.latent_channels == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return Err("latent_channels, in_channels and out_channels must be positive".into());
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
        if self.num_attention_heads == 0 || self.hidden_size == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err("hidden_size must split into num_attention_heads".into());
        }
        if self.hidden_act != "quick_gelu" && self.hidden_act != "gelu" {
            return Err(format!("unsupported hidden_act {:?}", self.hidden_act));
        }
        Ok(())
    }
}

/// Options of diffusers' UNet that change its arithmetic, with the values the model code implements.
const UNET_FIXED_OPTIONS: &[(&str, &str)] = &[
    ("center_input_sample", "false"),
    ("resnet_time_scale_shift", "\"default\""),
    ("time_embedding_type", "\"positional\""),
    ("class_embed_type", "null"),
    ("addition_embed_type", "null"),
    ("encoder_hid_dim", "null"),
    ("conv_in_kernel", "3"),
    ("conv_out_kernel", "3"),
    ("mid_block_scale_factor", "1"),
    ("only_cross_attention", "false"),
    ("dual_cross_attention", "false"),
    ("act_fn", "\"silu\""),
    ("timestep_post_act", "null"),
    ("time_cond_proj_dim", "null"),
    ("attention_type", "\"default\""),
];

/// Rejects a UNet config that sets an option the model code does not implement to another value.
pub fn check_unet_options(json: &serde_json::Value) -> std::result::Result<(), String> {
    for (key, supported) in UNET_FIXED_OPTIONS {
        let supported: serde_json::Value = serde_json::from_str(supported).expect("valid JSON");
        match json.get(key) {
            Some(value) if value != &supported && !(value.is_number() && value.as_f64() == supported.as_f64()) => {
                return Err(format!("{key} = {value} is not supported (only {supported})"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses the JSON config `text` (read from `path`); `validate` checks the values the models rely on, `check_raw`
/// the raw JSON.
pub fn parse_config<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    check_raw: impl Fn(&serde_json::Value) -> std::result::Result<(), String>,
    validate: impl Fn(&T) -> std::result::Result<(), String>,
) -> Result<T> {
    let bad = |message: String| Error::Config { path: path.to_owned(), message };
    let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    check_raw(&raw).map_err(bad)?;
    let config: T =
        serde_json::from_value(raw).map_err(|e| Error::Config { path: path.to_owned(), message: e.to_string() })?;
    validate(&config).map_err(|message| Error::Config { path: path.to_owned(), message })?;
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
