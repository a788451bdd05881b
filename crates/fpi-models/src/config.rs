//! The models' shapes and options, read from diffusers' and transformers' `config.json` files.
//!
//! Field names and defaults follow diffusers, so a tiny test config, SD1.5 and SD1.x fine-tunes load alike. A
//! config's shape (channels, block types) is required; its options take diffusers' defaults when absent. Choices
//! are enums, so serde rejects an unknown value with the list of known ones; options the model code does not
//! implement are rejected against the raw JSON ([`PartConfig::FIXED_OPTIONS`]) when set to another value than
//! the one it implements.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;

/// Why a config cannot be built; each names the option and its value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, or a required field missing.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// An option of the wrong type, or a choice not among the known ones (serde lists them).
    #[error("{option}: {source}")]
    Field {
        /// The option's key (its path, for nested values).
        option: String,
        /// What is wrong with its value.
        source: serde_json::Error,
    },
    /// An option set to a value the model code does not implement.
    #[error("{option} = {value} is not supported (only {supported})")]
    Unsupported {
        /// The option's key.
        option: String,
        /// Its value in the config.
        value: Value,
        /// The values that are, as JSON.
        supported: String,
    },
    /// A size that must be positive is 0.
    #[error("{option} = 0 must be positive")]
    NotPositive {
        /// The option's key.
        option: &'static str,
    },
    /// The per-level lists have different lengths, or none.
    #[error(
        "down_block_types, up_block_types and block_out_channels must have one entry per level (they have {down}, \
         {up} and {channels})"
    )]
    Levels {
        /// Entries of `down_block_types`.
        down: usize,
        /// Entries of `up_block_types`.
        up: usize,
        /// Entries of `block_out_channels`.
        channels: usize,
    },
    /// A per-block list with another length than the number of levels.
    #[error("{option} has {entries} entries for {levels} levels")]
    PerBlockLength {
        /// The option's key.
        option: &'static str,
        /// Its entries.
        entries: usize,
        /// Levels of the model.
        levels: usize,
    },
    /// A channel count that group norm cannot split into `norm_num_groups` groups.
    #[error("block_out_channels entry {channels} is not a positive multiple of norm_num_groups = {groups}")]
    Groups {
        /// The channel count.
        channels: usize,
        /// `norm_num_groups`.
        groups: usize,
    },
    /// The UNet's first level is odd, and its width is the sines' and cosines' of the timestep features.
    #[error("block_out_channels[0] = {0} must be even (it is the width of the timestep features)")]
    OddTimeFeatures(usize),
    /// Channels that do not split into the number of heads.
    #[error("{channels_option} = {channels} does not split into {heads_option} = {heads} heads")]
    Heads {
        /// The channels' key (with the level, for a UNet).
        channels_option: String,
        /// The channel count.
        channels: usize,
        /// The option that gives the heads.
        heads_option: &'static str,
        /// The head count.
        heads: usize,
    },
    /// The UNet's latent channels differ from the VAE's.
    #[error(
        "the UNet takes {unet_in} and gives {unet_out} channels (in_channels, out_channels) but the VAE's latents \
         have {vae} (latent_channels)"
    )]
    LatentChannels {
        /// The UNet's `in_channels`.
        unet_in: usize,
        /// The UNet's `out_channels`.
        unet_out: usize,
        /// The VAE's `latent_channels`.
        vae: usize,
    },
    /// The UNet attends to text states of another width than CLIP gives.
    #[error("the UNet attends to text states {unet} wide (cross_attention_dim) but CLIP gives {clip} (hidden_size)")]
    TextWidth {
        /// The UNet's `cross_attention_dim`.
        unet: usize,
        /// CLIP's `hidden_size`.
        clip: usize,
    },
    /// CLIP does not take SD1.x's 77 tokens.
    #[error("CLIP has max_position_embeddings = {0}; SD1.x prompts are 77 tokens")]
    Positions(usize),
}

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

    fn check(&self, option: &'static str, levels: usize) -> Result<(), ConfigError> {
        match self {
            PerBlock::Each(v) if v.len() != levels => {
                Err(ConfigError::PerBlockLength { option, entries: v.len(), levels })
            }
            _ => Ok(()),
        }
    }
}

/// A UNet level on the way down (diffusers' `down_block_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DownBlockType {
    /// Resnets, each followed by a spatial transformer.
    CrossAttnDownBlock2D,
    /// Resnets only.
    DownBlock2D,
}

/// A UNet level on the way up (diffusers' `up_block_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum UpBlockType {
    /// Resnets, each followed by a spatial transformer.
    CrossAttnUpBlock2D,
    /// Resnets only.
    UpBlock2D,
}

/// The UNet's bottom block (diffusers' `mid_block_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MidBlockType {
    /// Resnet, spatial transformer, resnet.
    UNetMidBlock2DCrossAttn,
}

/// A VAE encoder level (the only kind SD's VAEs use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum VaeDownBlockType {
    /// Resnets, then a downsampler.
    DownEncoderBlock2D,
}

/// A VAE decoder level (the only kind SD's VAEs use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum VaeUpBlockType {
    /// Resnets, then an upsampler.
    UpDecoderBlock2D,
}

/// CLIP's MLP activation (transformers' `hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// x·σ(1.702x) (SD1.x).
    #[default]
    QuickGelu,
    /// The exact, erf-based GELU (SD2.x).
    Gelu,
}

/// An option of a diffusers or transformers class, and the values (as JSON) the model code implements: any other
/// value changes the arithmetic in a way it does not.
pub type FixedOption = (&'static str, &'static [&'static str]);

/// A part's config: parsed from its `config.json`, then checked against what the model code implements.
pub trait PartConfig: DeserializeOwned {
    /// The struct's flattened options, read first on their own so that a bad one is named (serde loses the
    /// field's name inside a flattened struct).
    type Options: DeserializeOwned;

    /// Options the struct does not read because the model code implements only one value of them.
    const FIXED_OPTIONS: &'static [FixedOption];

    /// Checks the values the model code relies on, so a bad config is an error and not a panic later.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Parses and checks the config `text`, read from `path` (which errors name).
pub fn parse_config<T: PartConfig>(text: &str, path: &Path) -> crate::Result<T> {
    parse(text).map_err(|source| Error::Config { path: path.to_owned(), source })
}

fn parse<T: PartConfig>(text: &str) -> Result<T, ConfigError> {
    let raw: Value = serde_json::from_str(text)?;
    check_fixed_options(&raw, T::FIXED_OPTIONS)?;
    deserialize::<T::Options>(raw.clone())?;
    let config: T = deserialize(raw)?;
    config.validate()?;
    Ok(config)
}

/// `raw` as a `T`, naming the option at fault.
fn deserialize<T: DeserializeOwned>(raw: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(raw).map_err(|e| match e.path().to_string() {
        // A missing field is the whole config's error; serde's message names the field.
        root if root == "." => ConfigError::Json(e.into_inner()),
        option => ConfigError::Field { option, source: e.into_inner() },
    })
}

/// Rejects a config that sets one of `options` to a value the model code does not implement (absent is fine).
fn check_fixed_options(json: &Value, options: &[FixedOption]) -> Result<(), ConfigError> {
    for &(option, supported) in options {
        let supported: Vec<Value> = supported.iter().map(|v| serde_json::from_str(v).expect("valid JSON")).collect();
        // Numbers compare by value: diffusers writes 1.0 and 1 alike.
        let same = |value: &Value, s: &Value| value == s || (value.is_number() && value.as_f64() == s.as_f64());
        match json.get(option) {
            Some(value) if !supported.iter().any(|s| same(value, s)) => {
                let supported = supported.iter().map(Value::to_string).collect::<Vec<_>>().join(" or ");
                return Err(ConfigError::Unsupported { option: option.into(), value: value.clone(), supported });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks that the per-level lists agree and that channels split into `groups` groups.
fn check_levels(down: usize, up: usize, channels: &[usize], groups: usize) -> Result<(), ConfigError> {
    let n = channels.len();
    if n == 0 || down != n || up != n {
        return Err(ConfigError::Levels { down, up, channels: n });
    }
    if groups == 0 {
        return Err(ConfigError::NotPositive { option: "norm_num_groups" });
    }
    match channels.iter().find(|&&c| c == 0 || c % groups != 0) {
        Some(&channels) => Err(ConfigError::Groups { channels, groups }),
        None => Ok(()),
    }
}

/// Checks that each named size is positive.
fn check_positive(sizes: &[(&'static str, usize)]) -> Result<(), ConfigError> {
    match sizes.iter().find(|(_, size)| *size == 0) {
        Some(&(option, _)) => Err(ConfigError::NotPositive { option }),
        None => Ok(()),
    }
}

/// `UNet2DConditionModel`'s config.
#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    /// Channels of the latents it reads.
    pub in_channels: usize,
    /// Channels of the noise it predicts.
    pub out_channels: usize,
    /// The levels on the way down.
    pub down_block_types: Vec<DownBlockType>,
    /// The levels on the way up (the deepest first).
    pub up_block_types: Vec<UpBlockType>,
    /// Channels of each level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    pub layers_per_block: PerBlock<usize>,
    /// Width of the text states it attends to.
    pub cross_attention_dim: usize,
    /// The options, with diffusers' defaults.
    #[serde(flatten)]
    pub options: UNetOptions,
}

/// The options of [`UNetConfig`], each with diffusers' default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UNetOptions {
    /// In SD1.x configs this is the number of heads (a diffusers naming quirk).
    pub attention_head_dim: Option<PerBlock<usize>>,
    /// The number of heads, when a config says it under its own name.
    pub num_attention_heads: Option<PerBlock<usize>>,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Epsilon of the resnets' and the output's group norms.
    pub norm_eps: f64,
    /// Timestep features as cosines then sines (else sines then cosines).
    pub flip_sin_to_cos: bool,
    /// Shifts the timestep frequencies' denominator (`half − freq_shift`).
    pub freq_shift: usize,
    /// Padding of the downsampling convolutions.
    pub downsample_padding: usize,
    /// Linear layers (SD2.x) instead of 1×1 convolutions in and out of the spatial transformers.
    pub use_linear_projection: bool,
    /// Transformer blocks in each spatial transformer of a level.
    pub transformer_layers_per_block: PerBlock<usize>,
    /// The bottom block (`null`: none, which the model code does not implement).
    pub mid_block_type: Option<MidBlockType>,
}

impl Default for UNetOptions {
    fn default() -> Self {
        Self {
            attention_head_dim: None,
            num_attention_heads: None,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0,
            downsample_padding: 1,
            use_linear_projection: false,
            transformer_layers_per_block: PerBlock::All(1),
            mid_block_type: Some(MidBlockType::UNetMidBlock2DCrossAttn),
        }
    }
}

impl UNetConfig {
    /// The option that gives the head counts and its value: `num_attention_heads`, else `attention_head_dim`
    /// (as diffusers reads them), else none (8 heads).
    fn heads_option(&self) -> (&'static str, Option<&PerBlock<usize>>) {
        match &self.options.num_attention_heads {
            Some(heads) => ("num_attention_heads", Some(heads)),
            None => ("attention_head_dim", self.options.attention_head_dim.as_ref()),
        }
    }

    /// Heads of the attention in down block `i` (SD1.x: `attention_head_dim`).
    pub fn heads(&self, i: usize) -> usize {
        self.heads_option().1.map_or(8, |heads| heads.get(i))
    }
}

impl PartConfig for UNetConfig {
    type Options = UNetOptions;
    const FIXED_OPTIONS: &'static [FixedOption] = &[
        ("center_input_sample", &["false"]),
        ("resnet_time_scale_shift", &["\"default\""]),
        ("resnet_skip_time_act", &["false"]),
        ("resnet_out_scale_factor", &["1"]),
        ("time_embedding_type", &["\"positional\""]),
        ("time_embedding_dim", &["null"]),
        ("time_embedding_act_fn", &["null"]),
        ("timestep_post_act", &["null"]),
        ("time_cond_proj_dim", &["null"]),
        ("class_embed_type", &["null"]),
        ("num_class_embeds", &["null"]),
        ("class_embeddings_concat", &["false"]),
        ("projection_class_embeddings_input_dim", &["null"]),
        ("addition_embed_type", &["null"]),
        ("addition_time_embed_dim", &["null"]),
        ("encoder_hid_dim", &["null"]),
        ("encoder_hid_dim_type", &["null"]),
        ("conv_in_kernel", &["3"]),
        ("conv_out_kernel", &["3"]),
        ("mid_block_scale_factor", &["1"]),
        ("only_cross_attention", &["false"]),
        // null takes `only_cross_attention`'s value, which must be false.
        ("mid_block_only_cross_attention", &["null", "false"]),
        ("dual_cross_attention", &["false"]),
        ("cross_attention_norm", &["null"]),
        ("reverse_transformer_layers_per_block", &["null"]),
        ("act_fn", &["\"silu\""]),
        ("attention_type", &["\"default\""]),
    ];

    fn validate(&self) -> Result<(), ConfigError> {
        let (o, channels) = (&self.options, &self.block_out_channels);
        let n = channels.len();
        check_levels(self.down_block_types.len(), self.up_block_types.len(), channels, o.norm_num_groups)?;
        check_positive(&[
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("cross_attention_dim", self.cross_attention_dim),
        ])?;
        self.layers_per_block.check("layers_per_block", n)?;
        o.transformer_layers_per_block.check("transformer_layers_per_block", n)?;
        if let Some(heads) = &o.attention_head_dim {
            heads.check("attention_head_dim", n)?;
        }
        if let Some(heads) = &o.num_attention_heads {
            heads.check("num_attention_heads", n)?;
        }
        if channels[0] % 2 != 0 {
            return Err(ConfigError::OddTimeFeatures(channels[0]));
        }
        if o.mid_block_type.is_none() {
            return Err(ConfigError::Unsupported {
                option: "mid_block_type".into(),
                value: Value::Null,
                supported: "\"UNetMidBlock2DCrossAttn\"".into(),
            });
        }
        for (i, &c) in channels.iter().enumerate() {
            let heads = self.heads(i);
            if heads == 0 || c % heads != 0 {
                let (heads_option, _) = self.heads_option();
                let channels_option = format!("block_out_channels[{i}]");
                return Err(ConfigError::Heads { channels_option, channels: c, heads_option, heads });
            }
        }
        Ok(())
    }
}

/// `AutoencoderKL`'s config.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    /// Channels of the images it encodes (3: the pipeline's images are RGB).
    pub in_channels: usize,
    /// Channels of the images it decodes (3).
    pub out_channels: usize,
    /// The encoder's levels.
    pub down_block_types: Vec<VaeDownBlockType>,
    /// The decoder's levels.
    pub up_block_types: Vec<VaeUpBlockType>,
    /// Channels of each level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder level (decoder levels have one more).
    pub layers_per_block: usize,
    /// Channels of the latents.
    pub latent_channels: usize,
    /// The options, with diffusers' defaults.
    #[serde(flatten)]
    pub options: VaeOptions,
}

/// The options of [`VaeConfig`], each with diffusers' default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct VaeOptions {
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Latents are `scaling_factor` × the posterior mean.
    pub scaling_factor: f64,
    /// Attention in the encoder's and decoder's mid blocks.
    pub mid_block_add_attention: bool,
    /// A 1×1 convolution on the encoder's moments.
    pub use_quant_conv: bool,
    /// A 1×1 convolution on the latents before decoding.
    pub use_post_quant_conv: bool,
}

impl Default for VaeOptions {
    fn default() -> Self {
        Self {
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            mid_block_add_attention: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
        }
    }
}

impl PartConfig for VaeConfig {
    type Options = VaeOptions;
    /// The latents' shift and per-channel statistics (SD3, Flux) would change how images become latents.
    const FIXED_OPTIONS: &'static [FixedOption] = &[
        ("act_fn", &["\"silu\""]),
        ("shift_factor", &["null"]),
        ("latents_mean", &["null"]),
        ("latents_std", &["null"]),
    ];

    fn validate(&self) -> Result<(), ConfigError> {
        let groups = self.options.norm_num_groups;
        check_levels(self.down_block_types.len(), self.up_block_types.len(), &self.block_out_channels, groups)?;
        check_positive(&[("latent_channels", self.latent_channels)])?;
        // Images in and out are RGB (the pipeline's image code), so other channel counts would fail at the first use.
        for (option, value) in [("in_channels", self.in_channels), ("out_channels", self.out_channels)] {
            if value != 3 {
                let supported = "3 (RGB images)".into();
                return Err(ConfigError::Unsupported { option: option.into(), value: value.into(), supported });
            }
        }
        Ok(())
    }
}

/// The CLIP text model's config (transformers' `CLIPTextConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipConfig {
    /// Rows of the token table.
    pub vocab_size: usize,
    /// Width of the text states.
    pub hidden_size: usize,
    /// Width of the MLPs' hidden layer.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Positions: tokens per prompt (77).
    pub max_position_embeddings: usize,
    /// The options, with transformers' defaults.
    #[serde(flatten)]
    pub options: ClipOptions,
}

/// The options of [`ClipConfig`], each with transformers' default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClipOptions {
    /// The MLPs' activation.
    pub hidden_act: Activation,
    /// Epsilon of the layer norms.
    pub layer_norm_eps: f64,
}

impl Default for ClipOptions {
    fn default() -> Self {
        Self { hidden_act: Activation::QuickGelu, layer_norm_eps: 1e-5 }
    }
}

impl PartConfig for ClipConfig {
    type Options = ClipOptions;
    /// None: the rest of `CLIPTextConfig` is dropout, initialisation, token ids and the projection, none of which
    /// changes the last hidden state; `hidden_act` is checked by [`Activation`].
    const FIXED_OPTIONS: &'static [FixedOption] = &[];

    fn validate(&self) -> Result<(), ConfigError> {
        check_positive(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ])?;
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(ConfigError::Heads {
                channels_option: "hidden_size".into(),
                channels: self.hidden_size,
                heads_option: "num_attention_heads",
                heads: self.num_attention_heads,
            });
        }
        Ok(())
    }
}

/// Checks that the parts fit together: the UNet reads the VAE's latents and CLIP's states, CLIP takes the
/// tokenizer's 77 tokens.
pub fn check_fit(unet: &UNetConfig, vae: &VaeConfig, clip: &ClipConfig) -> Result<(), ConfigError> {
    if unet.in_channels != vae.latent_channels || unet.out_channels != vae.latent_channels {
        return Err(ConfigError::LatentChannels {
            unet_in: unet.in_channels,
            unet_out: unet.out_channels,
            vae: vae.latent_channels,
        });
    }
    if unet.cross_attention_dim != clip.hidden_size {
        return Err(ConfigError::TextWidth { unet: unet.cross_attention_dim, clip: clip.hidden_size });
    }
    if clip.max_position_embeddings != 77 {
        return Err(ConfigError::Positions(clip.max_position_embeddings));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TINY_UNET: &str = include_str!("../../../tests/fixtures/tiny-sd/unet/config.json");
    const TINY_VAE: &str = include_str!("../../../tests/fixtures/tiny-sd/vae/config.json");
    const TINY_CLIP: &str = include_str!("../../../tests/fixtures/tiny-sd/text_encoder/config.json");

    /// SD1.5's `unet/config.json` (runwayml/stable-diffusion-v1-5), written by diffusers 0.6.
    const SD15_UNET: &str = r#"{
        "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu",
        "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
        "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    }"#;
    /// SD1.5's `vae/config.json`.
    const SD15_VAE: &str = r#"{
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0", "act_fn": "silu",
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
        "sample_size": 512, "force_upcast": true,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
    }"#;
    /// SD1.5's `text_encoder/config.json`, written by transformers 4.22.
    const SD15_CLIP: &str = r#"{
        "_name_or_path": "openai/clip-vit-large-patch14", "architectures": ["CLIPTextModel"],
        "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": "quick_gelu",
        "hidden_size": 768, "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 3072,
        "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "model_type": "clip_text_model",
        "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1, "projection_dim": 768,
        "torch_dtype": "float32", "transformers_version": "4.22.0.dev0", "vocab_size": 49408
    }"#;

    const PATH: &str = "model/part/config.json";

    fn load<T: PartConfig>(text: &str) -> T {
        parse_config(text, Path::new(PATH)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `base` with `changes` merged in.
    fn edit(base: &str, changes: Value) -> String {
        let mut json: Value = serde_json::from_str(base).unwrap();
        for (key, value) in changes.as_object().unwrap() {
            json[key] = value.clone();
        }
        json.to_string()
    }

    /// `base` without `key`.
    fn without(base: &str, key: &str) -> String {
        let mut json: Value = serde_json::from_str(base).unwrap();
        json.as_object_mut().unwrap().remove(key).expect("the key to remove");
        json.to_string()
    }

    /// The message of the error `text` gives as a `T` config; it must be a config error naming the file.
    fn error<T: PartConfig + std::fmt::Debug>(text: &str) -> String {
        let err = parse_config::<T>(text, Path::new(PATH)).expect_err("the config must be rejected");
        assert!(matches!(err, Error::Config { .. }), "{err}");
        let message = err.to_string();
        assert!(message.starts_with(&format!("{PATH}: bad config: ")), "{message}");
        message
    }

    /// Asserts the message names every one of `parts`.
    fn assert_names(message: &str, parts: &[&str]) {
        for part in parts {
            assert!(message.contains(part), "{message:?} does not name {part:?}");
        }
    }

    #[test]
    fn sd15_configs_load_with_their_values_and_diffusers_defaults() {
        let unet: UNetConfig = load(SD15_UNET);
        assert_eq!((unet.in_channels, unet.out_channels, unet.cross_attention_dim), (4, 4, 768));
        assert_eq!(unet.block_out_channels, [320, 640, 1280, 1280]);
        assert_eq!(unet.down_block_types[3], DownBlockType::DownBlock2D);
        assert_eq!(unet.up_block_types[1], UpBlockType::CrossAttnUpBlock2D);
        assert_eq!((0..4).map(|i| unet.heads(i)).collect::<Vec<_>>(), [8; 4]);
        let o = &unet.options;
        assert_eq!((o.norm_num_groups, o.norm_eps, o.flip_sin_to_cos, o.freq_shift), (32, 1e-5, true, 0));
        assert_eq!((o.downsample_padding, o.use_linear_projection), (1, false));
        assert_eq!(o.transformer_layers_per_block, PerBlock::All(1));
        assert_eq!(o.mid_block_type, Some(MidBlockType::UNetMidBlock2DCrossAttn));

        let vae: VaeConfig = load(SD15_VAE);
        assert_eq!((vae.latent_channels, vae.layers_per_block, vae.options.norm_num_groups), (4, 2, 32));
        let o = &vae.options;
        assert_eq!(o.scaling_factor, 0.18215);
        assert!(o.mid_block_add_attention && o.use_quant_conv && o.use_post_quant_conv);

        let clip: ClipConfig = load(SD15_CLIP);
        assert_eq!((clip.vocab_size, clip.hidden_size, clip.num_attention_heads), (49408, 768, 12));
        assert_eq!((clip.options.hidden_act, clip.options.layer_norm_eps), (Activation::QuickGelu, 1e-5));
        check_fit(&unet, &vae, &clip).unwrap();
    }

    /// The configs built in for single-file checkpoints read the same as SD1.5's own files.
    #[test]
    fn the_built_in_sd1_configs_equal_sd15s_files() {
        use crate::sd1;
        let same = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| assert_eq!(format!("{a:?}"), format!("{b:?}"));
        same(&load::<UNetConfig>(sd1::UNET_CONFIG), &load::<UNetConfig>(SD15_UNET));
        same(&load::<VaeConfig>(sd1::VAE_CONFIG), &load::<VaeConfig>(SD15_VAE));
        same(&load::<ClipConfig>(sd1::CLIP_CONFIG), &load::<ClipConfig>(SD15_CLIP));
    }

    #[test]
    fn tiny_configs_load_with_their_values() {
        let unet: UNetConfig = load(TINY_UNET);
        assert_eq!((unet.heads(0), unet.options.norm_num_groups, unet.layers_per_block.get(1)), (2, 8, 2));
        let vae: VaeConfig = load(TINY_VAE);
        assert_eq!((vae.options.scaling_factor, vae.block_out_channels.as_slice()), (3.7227, &[16, 32][..]));
        let clip: ClipConfig = load(TINY_CLIP);
        assert_eq!(clip.hidden_size, 32);
        check_fit(&unet, &vae, &clip).unwrap();
    }

    #[test]
    fn options_left_out_take_diffusers_defaults_and_shapes_are_required() {
        let minimal = r#"{"in_channels": 4, "out_channels": 4, "down_block_types": ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"], "block_out_channels": [64], "layers_per_block": 1,
            "cross_attention_dim": 32}"#;
        let unet: UNetConfig = load(minimal);
        assert_eq!(unet.heads(0), 8);
        assert_eq!((unet.options.norm_num_groups, unet.options.flip_sin_to_cos), (32, true));
        assert_names(&error::<UNetConfig>(&without(minimal, "in_channels")), &["missing field `in_channels`"]);
        let message = error::<VaeConfig>(&without(TINY_VAE, "latent_channels"));
        assert_names(&message, &["missing field `latent_channels`"]);
        assert_names(&error::<ClipConfig>(&without(TINY_CLIP, "vocab_size")), &["missing field `vocab_size`"]);
    }

    /// Each option of diffusers' UNet that the model code does not implement, with a value that changes the
    /// arithmetic; each must be rejected, naming the option and the value.
    #[test]
    fn unet_options_the_code_does_not_implement_are_rejected() {
        let cases = json!({
            "center_input_sample": true,
            "resnet_time_scale_shift": "scale_shift",
            "resnet_skip_time_act": true,
            "resnet_out_scale_factor": 2.0,
            "time_embedding_type": "fourier",
            "time_embedding_dim": 256,
            "time_embedding_act_fn": "silu",
            "timestep_post_act": "silu",
            "time_cond_proj_dim": 256,
            "class_embed_type": "timestep",
            "num_class_embeds": 10,
            "class_embeddings_concat": true,
            "projection_class_embeddings_input_dim": 2816,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "encoder_hid_dim": 1024,
            "encoder_hid_dim_type": "text_proj",
            "conv_in_kernel": 5,
            "conv_out_kernel": 1,
            "mid_block_scale_factor": 1.5,
            "only_cross_attention": true,
            "mid_block_only_cross_attention": true,
            "dual_cross_attention": true,
            "cross_attention_norm": "group_norm",
            "reverse_transformer_layers_per_block": [[1, 1], [1, 1]],
            "act_fn": "gelu",
            "attention_type": "gated",
        });
        let cases = cases.as_object().unwrap();
        assert_eq!(cases.len(), UNetConfig::FIXED_OPTIONS.len());
        for (option, value) in cases {
            let message = error::<UNetConfig>(&edit(TINY_UNET, json!({ option: value })));
            assert_names(&message, &[&format!("{option} = {value} is not supported")]);
        }
    }

    #[test]
    fn implemented_values_of_fixed_options_load() {
        let same = json!({"resnet_out_scale_factor": 1, "mid_block_scale_factor": 1.0,
            "mid_block_only_cross_attention": false, "time_embedding_act_fn": null});
        load::<UNetConfig>(&edit(TINY_UNET, same));
        load::<UNetConfig>(&without(TINY_UNET, "act_fn"));
    }

    #[test]
    fn vae_options_the_code_does_not_implement_are_rejected() {
        let cases = json!({
            "act_fn": "gelu",
            "shift_factor": 0.1159,
            "latents_mean": [0.0, 0.0, 0.0, 0.0],
            "latents_std": [1.0, 1.0, 1.0, 1.0],
        });
        for (option, value) in cases.as_object().unwrap() {
            let message = error::<VaeConfig>(&edit(TINY_VAE, json!({ option: value })));
            assert_names(&message, &[&format!("{option} = {value} is not supported")]);
        }
    }

    #[test]
    fn vae_images_must_be_rgb() {
        for (option, value) in [("in_channels", 4), ("out_channels", 1)] {
            let message = error::<VaeConfig>(&edit(TINY_VAE, json!({ option: value })));
            assert_names(&message, &[&format!("{option} = {value} is not supported"), "RGB"]);
        }
    }

    #[test]
    fn clip_activations_other_than_gelu_and_quick_gelu_are_rejected() {
        let clip: ClipConfig = load(&edit(TINY_CLIP, json!({"hidden_act": "gelu"})));
        assert_eq!(clip.options.hidden_act, Activation::Gelu);
        let message = error::<ClipConfig>(&edit(TINY_CLIP, json!({"hidden_act": "gelu_new"})));
        assert_names(&message, &["gelu_new", "quick_gelu", "`gelu`"]);
    }

    #[test]
    fn clip_width_must_split_into_heads() {
        let message = error::<ClipConfig>(&edit(TINY_CLIP, json!({"num_attention_heads": 5})));
        assert_names(&message, &["hidden_size = 32", "num_attention_heads = 5"]);
        let message = error::<ClipConfig>(&edit(TINY_CLIP, json!({"num_attention_heads": 0})));
        assert_names(&message, &["num_attention_heads = 0 must be positive"]);
    }

    #[test]
    fn unknown_block_types_are_rejected_with_the_known_ones() {
        let cases: [(&str, Value, &str, &[&str]); 3] = [
            (
                "down_block_types",
                json!(["CrossAttnDownBlock2D", "SimpleDown"]),
                "SimpleDown",
                &["CrossAttnDownBlock2D", "DownBlock2D"],
            ),
            (
                "up_block_types",
                json!(["AttnUpBlock2D", "UpBlock2D"]),
                "AttnUpBlock2D",
                &["CrossAttnUpBlock2D", "UpBlock2D"],
            ),
            ("mid_block_type", json!("UNetMidBlock2D"), "UNetMidBlock2D", &["UNetMidBlock2DCrossAttn"]),
        ];
        for (option, value, unknown, known) in cases {
            let message = error::<UNetConfig>(&edit(TINY_UNET, json!({ option: value })));
            assert_names(&message, &[&format!("unknown variant `{unknown}`"), option]);
            assert_names(&message, known);
        }
        let message = error::<UNetConfig>(&edit(TINY_UNET, json!({"mid_block_type": null})));
        assert_names(&message, &["mid_block_type = null is not supported"]);
        let vae = edit(TINY_VAE, json!({"down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]}));
        assert_names(&error::<VaeConfig>(&vae), &["unknown variant `AttnDownEncoderBlock2D`", "DownEncoderBlock2D"]);
        let vae = edit(TINY_VAE, json!({"up_block_types": ["UpDecoderBlock2D", "AttnUpDecoderBlock2D"]}));
        assert_names(&error::<VaeConfig>(&vae), &["unknown variant `AttnUpDecoderBlock2D`", "UpDecoderBlock2D"]);
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_option() {
        let cases = [
            (json!({"cross_attention_dim": [32, 32]}), "cross_attention_dim: invalid type: sequence"),
            (json!({"transformer_layers_per_block": [[1], [1]]}), "transformer_layers_per_block:"),
            (json!({"norm_eps": "small"}), "norm_eps: invalid type: string"),
        ];
        for (change, expected) in cases {
            assert_names(&error::<UNetConfig>(&edit(TINY_UNET, change)), &[expected]);
        }
    }

    #[test]
    fn per_block_lists_need_one_entry_per_level() {
        let cases = json!({
            "layers_per_block": [2],
            "transformer_layers_per_block": [1, 1, 1],
            "attention_head_dim": [2],
            "num_attention_heads": [1, 2, 4],
        });
        for (option, value) in cases.as_object().unwrap() {
            let entries = value.as_array().unwrap().len();
            let message = error::<UNetConfig>(&edit(TINY_UNET, json!({ option: value })));
            assert_names(&message, &[&format!("{option} has {entries} entries for 2 levels")]);
        }
    }

    #[test]
    fn level_lists_must_agree() {
        let message = error::<UNetConfig>(&edit(TINY_UNET, json!({"up_block_types": ["UpBlock2D"]})));
        assert_names(&message, &["up_block_types", "they have 2, 1 and 2"]);
        let message = error::<VaeConfig>(&edit(TINY_VAE, json!({"block_out_channels": [16, 32, 64]})));
        assert_names(&message, &["block_out_channels", "they have 2, 2 and 3"]);
    }

    #[test]
    fn heads_must_split_the_channels() {
        let message = error::<UNetConfig>(&edit(TINY_UNET, json!({"attention_head_dim": 3})));
        assert_names(&message, &["block_out_channels[0] = 32 does not split into attention_head_dim = 3 heads"]);
        let message = error::<UNetConfig>(&edit(TINY_UNET, json!({"num_attention_heads": [2, 5]})));
        assert_names(&message, &["block_out_channels[1] = 64 does not split into num_attention_heads = 5 heads"]);
        let message = error::<UNetConfig>(&edit(TINY_UNET, json!({"attention_head_dim": 0})));
        assert_names(&message, &["attention_head_dim = 0 heads"]);
    }

    #[test]
    fn group_norms_need_channels_in_whole_groups() {
        let message = error::<UNetConfig>(&edit(TINY_UNET, json!({"norm_num_groups": 7})));
        assert_names(&message, &["block_out_channels entry 32", "norm_num_groups = 7"]);
        let message = error::<VaeConfig>(&edit(TINY_VAE, json!({"norm_num_groups": 0})));
        assert_names(&message, &["norm_num_groups = 0 must be positive"]);
    }

    #[test]
    fn unet_sizes_must_be_positive_and_time_features_even() {
        for option in ["in_channels", "out_channels", "cross_attention_dim"] {
            let message = error::<UNetConfig>(&edit(TINY_UNET, json!({ option: 0 })));
            assert_names(&message, &[&format!("{option} = 0 must be positive")]);
        }
        let odd = json!({"block_out_channels": [33, 66], "norm_num_groups": 3, "attention_head_dim": 1});
        assert_names(&error::<UNetConfig>(&edit(TINY_UNET, odd)), &["block_out_channels[0] = 33 must be even"]);
    }

    #[test]
    fn parts_that_do_not_fit_together_are_named() {
        let fit = |unet: &str, vae: &str, clip: &str| check_fit(&load(unet), &load(vae), &load(clip));
        fit(TINY_UNET, TINY_VAE, TINY_CLIP).unwrap();
        let vae8 = edit(TINY_VAE, json!({"latent_channels": 8}));
        let message = fit(TINY_UNET, &vae8, TINY_CLIP).unwrap_err().to_string();
        assert_names(
            &message,
            &["takes 4 and gives 4 channels (in_channels, out_channels)", "have 8 (latent_channels)"],
        );
        let clip64 = edit(TINY_CLIP, json!({"hidden_size": 64}));
        let message = fit(TINY_UNET, TINY_VAE, &clip64).unwrap_err().to_string();
        assert_names(&message, &["32 wide (cross_attention_dim)", "gives 64 (hidden_size)"]);
        let clip78 = edit(TINY_CLIP, json!({"max_position_embeddings": 78}));
        let message = fit(TINY_UNET, TINY_VAE, &clip78).unwrap_err().to_string();
        assert_names(&message, &["max_position_embeddings = 78", "77 tokens"]);
    }
}
