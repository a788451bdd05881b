//! A diffusers model folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`) and how each part loads.

use burn::tensor::Device;

use crate::clip::{ClipTextModel, TokenTable};
use crate::config::{ClipConfig, UNetConfig, VaeConfig, check_unet_options, parse_config};
use crate::error::{Error, Result};
#[cfg(not(target_family = "wasm"))]
use crate::source::Directory;
use crate::source::ModelSource;
use crate::tokenizer::ClipTokenizer;
use crate::unet::UNet2DConditionModel;
use crate::vae::AutoencoderKL;
use crate::weights::{CHUNK_BYTES, KeyMap, find_weights, load_module, read_header};

/// diffusers' names for what burn's modules call otherwise.
const UNET_KEYS: &[(&str, &str)] =
    &[(r"\.to_out\.0\.", ".to_out."), (r"\.ff\.net\.0\.proj\.", ".ff.geglu."), (r"\.ff\.net\.2\.", ".ff.out.")];

/// Both namings of the VAE's attention: SD1.5's files (`query/key/value/proj_attn`) and newer diffusers'.
const VAE_KEYS: &[(&str, &str)] = &[
    (r"(attentions\.\d+)\.(query|to_q)\.", "$1.attention.to_q."),
    (r"(attentions\.\d+)\.(key|to_k)\.", "$1.attention.to_k."),
    (r"(attentions\.\d+)\.(value|to_v)\.", "$1.attention.to_v."),
    (r"(attentions\.\d+)\.(proj_attn|to_out\.0)\.", "$1.attention.to_out."),
];

/// CLIP keys with or without transformers' `text_model.` prefix; its attention projections in diffusers' names.
const CLIP_KEYS: &[(&str, &str)] = &[
    (r"^text_model\.", ""),
    (r"\.self_attn\.q_proj\.", ".self_attn.to_q."),
    (r"\.self_attn\.k_proj\.", ".self_attn.to_k."),
    (r"\.self_attn\.v_proj\.", ".self_attn.to_v."),
    (r"\.self_attn\.out_proj\.", ".self_attn.to_out."),
];
const TOKEN_TABLE: &str = "embeddings.token_embedding.weight";

/// A diffusers-layout Stable Diffusion folder, read through a [`ModelSource`].
#[derive(Debug, Clone)]
pub struct ModelFolder<S> {
    pub source: S,
    /// Weight bytes read and handed to the device at a time ([`CHUNK_BYTES`] unless changed).
    pub chunk_bytes: u64,
}

/// Progress of a load: the part (`unet`, `vae`, `text_encoder`), its weight bytes loaded so far and in all.
pub type LoadProgress<'a> = dyn FnMut(&str, u64, u64) + 'a;

#[cfg(not(target_family = "wasm"))]
impl ModelFolder<Directory> {
    /// Opens the folder `root` on disk; the parts are read when loaded.
    pub fn open(root: impl Into<std::path::PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(Error::MissingFile(format!(
                "{}: not a directory (expected a diffusers model folder with unet/, vae/, text_encoder/, tokenizer/)",
                root.display()
            )));
        }
        Ok(Self::new(Directory { root }))
    }
}

impl<S: ModelSource> ModelFolder<S> {
    /// A folder whose files come from `source`.
    pub fn new(source: S) -> Self {
        Self { source, chunk_bytes: CHUNK_BYTES }
    }

    /// `name` (a part's folder) when the folder has it.
    fn part<'n>(&self, name: &'n str) -> Result<&'n str> {
        if self.source.exists(name) {
            Ok(name)
        } else {
            Err(Error::MissingFile(format!(
                "{}: missing (a model folder needs {name}/)",
                self.source.display(name).display()
            )))
        }
    }

    /// The text of the file `file` of the part `part`, and its path for messages.
    async fn part_text(&self, part: &str, file: &str) -> Result<(String, std::path::PathBuf)> {
        let path = format!("{}/{file}", self.part(part)?);
        let shown = self.source.display(&path);
        if !self.source.exists(&path) {
            return Err(Error::MissingFile(format!("{}: not found", shown.display())));
        }
        Ok((self.source.read_text(&path).await?, shown))
    }

    async fn config<T: serde::de::DeserializeOwned>(
        &self,
        part: &str,
        check_raw: impl Fn(&serde_json::Value) -> std::result::Result<(), String>,
        validate: impl Fn(&T) -> std::result::Result<(), String>,
    ) -> Result<T> {
        let (text, path) = self.part_text(part, "config.json").await?;
        parse_config(&text, &path, check_raw, validate)
    }

    /// The UNet's config.
    pub async fn unet_config(&self) -> Result<UNetConfig> {
        self.config("unet", check_unet_options, UNetConfig::validate).await
    }

    /// The VAE's config.
    pub async fn vae_config(&self) -> Result<VaeConfig> {
        self.config("vae", |_| Ok(()), VaeConfig::validate).await
    }

    /// The text encoder's config.
    pub async fn clip_config(&self) -> Result<ClipConfig> {
        self.config("text_encoder", |_| Ok(()), ClipConfig::validate).await
    }

    /// Checks that the parts fit together: the UNet reads the VAE's latents and CLIP's states, CLIP takes
    /// the tokenizer's 77 tokens.
    pub async fn check_parts(&self) -> Result<()> {
        let (unet, vae, clip) = (self.unet_config().await?, self.vae_config().await?, self.clip_config().await?);
        let mismatch = |message: String| Err(Error::Config { path: self.source.display(""), message });
        if unet.in_channels != vae.latent_channels || unet.out_channels != vae.latent_channels {
            return mismatch(format!(
                "the UNet takes {} and gives {} channels but the VAE's latents have {}",
                unet.in_channels, unet.out_channels, vae.latent_channels
            ));
        }
        if unet.cross_attention_dim != clip.hidden_size {
            return mismatch(format!(
                "the UNet attends to {}-wide text states but CLIP gives {}",
                unet.cross_attention_dim, clip.hidden_size
            ));
        }
        if clip.max_position_embeddings != 77 {
            return mismatch(format!(
                "CLIP has {} positions; SD1.x prompts are 77 tokens",
                clip.max_position_embeddings
            ));
        }
        Ok(())
    }

    /// The text of `scheduler/scheduler_config.json` (parsed by the inversion core) and its path for messages.
    pub async fn scheduler_config(&self) -> Result<(String, std::path::PathBuf)> {
        self.part_text("scheduler", "scheduler_config.json").await
    }

    /// The UNet with its weights on `device`.
    pub async fn load_unet(&self, device: &Device, progress: &mut LoadProgress<'_>) -> Result<UNet2DConditionModel> {
        let config = self.unet_config().await?;
        let weights = find_weights(&self.source, self.part("unet")?, &["diffusion_pytorch_model"])?;
        let mut unet = UNet2DConditionModel::new(&config, device);
        let keys = key_map(UNET_KEYS, &[]);
        let mut progress = |done, total| progress("unet", done, total);
        load_module(&mut unet, &self.source, &weights, &keys, self.chunk_bytes, &mut progress).await?;
        Ok(unet)
    }

    /// The VAE with its weights on `device`.
    pub async fn load_vae(&self, device: &Device, progress: &mut LoadProgress<'_>) -> Result<AutoencoderKL> {
        let config = self.vae_config().await?;
        let weights = find_weights(&self.source, self.part("vae")?, &["diffusion_pytorch_model"])?;
        let mut vae = AutoencoderKL::new(&config, device);
        let keys = key_map(VAE_KEYS, &[]);
        let mut progress = |done, total| progress("vae", done, total);
        load_module(&mut vae, &self.source, &weights, &keys, self.chunk_bytes, &mut progress).await?;
        Ok(vae)
    }

    /// The text encoder: its token table in host memory, the rest on `device`.
    pub async fn load_clip(&self, device: &Device, progress: &mut LoadProgress<'_>) -> Result<ClipTextModel> {
        let config = self.clip_config().await?;
        let weights = find_weights(&self.source, self.part("text_encoder")?, &["model"])?;
        let table = self.read_token_table(&weights, &config).await?;
        let mut clip = ClipTextModel::new(&config, table, device);
        let keys = key_map(CLIP_KEYS, &[TOKEN_TABLE, "embeddings.position_ids"]);
        let mut progress = |done, total| progress("text_encoder", done, total);
        load_module(&mut clip, &self.source, &weights, &keys, self.chunk_bytes, &mut progress).await?;
        Ok(clip)
    }

    /// The tokenizer: `tokenizer/tokenizer.json` when present, else `vocab.json` + `merges.txt`.
    pub async fn load_tokenizer(&self) -> Result<ClipTokenizer> {
        let dir = self.part("tokenizer")?;
        let json = format!("{dir}/tokenizer.json");
        if self.source.exists(&json) {
            let bytes = self.source.read_all(&json).await?;
            return ClipTokenizer::from_tokenizer_json(&bytes, &self.source.display(&json));
        }
        let (vocab, merges) = (format!("{dir}/vocab.json"), format!("{dir}/merges.txt"));
        for path in [&vocab, &merges] {
            if !self.source.exists(path) {
                return Err(Error::MissingFile(format!(
                    "{}: not found (a tokenizer folder needs tokenizer.json, or vocab.json and merges.txt)",
                    self.source.display(path).display()
                )));
            }
        }
        let (vocab_text, merges_text) = (self.source.read_text(&vocab).await?, self.source.read_text(&merges).await?);
        let paths = [self.source.display(&vocab), self.source.display(&merges)];
        ClipTokenizer::from_vocab_merges(&vocab_text, &merges_text, &paths)
    }

    /// Reads CLIP's token embedding table (f32, f16 or bf16 in the file) into host memory as f32.
    async fn read_token_table(&self, path: &str, config: &ClipConfig) -> Result<TokenTable> {
        let shown = self.source.display(path);
        let header = read_header(&self.source, path).await?;
        let (key, info) =
            header.tensors.iter().find(|(k, _)| k.strip_prefix("text_model.").unwrap_or(k) == TOKEN_TABLE).ok_or_else(
                || Error::MissingTensor {
                    path: shown.clone(),
                    key: TOKEN_TABLE.into(),
                    expected: vec![config.vocab_size, config.hidden_size],
                },
            )?;
        let expected = vec![config.vocab_size, config.hidden_size];
        if info.shape != expected {
            return Err(Error::ShapeMismatch { path: shown, key: key.clone(), expected, found: info.shape.clone() });
        }
        let [start, end] = info.data_offsets;
        let bytes = self.source.read(path, header.data_start + start..header.data_start + end).await?;
        let rows = match info.dtype.as_str() {
            "F32" => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            "F16" => bytes.chunks_exact(2).map(|b| burn::tensor::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            "BF16" => bytes.chunks_exact(2).map(|b| burn::tensor::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(Error::UnsupportedDtype { path: shown, key: key.clone(), dtype: other.into() });
            }
        };
        Ok(TokenTable { rows, dim: config.hidden_size })
    }
}

fn key_map(rules: &[(&'static str, &'static str)], ignored: &[&'static str]) -> KeyMap {
    KeyMap { rules: rules.to_vec(), ignored: ignored.to_vec() }
}
