//! A diffusers model folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`) and how each part loads.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::clip::{ClipTextModel, TokenTable};
use crate::config::{ClipConfig, UNetConfig, VaeConfig, check_unet_options, read_config};
use crate::error::{Error, Result};
use crate::tokenizer::ClipTokenizer;
use crate::unet::UNet2DConditionModel;
use crate::vae::AutoencoderKL;
use crate::weights::{KeyMap, find_weights, load_module, read_header};

/// diffusers' names for what burn's modules call otherwise.
const UNET_KEYS: &[(&str, &str)] = &[
    (r"\.to_out\.0\.", ".to_out."),
    (r"\.ff\.net\.0\.proj\.", ".ff.geglu."),
    (r"\.ff\.net\.2\.", ".ff.out."),
];

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

/// A diffusers-layout Stable Diffusion folder.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub root: PathBuf,
}

impl ModelFolder {
    /// Opens `root`; the parts are read when loaded.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(Error::MissingFile(format!(
                "{}: not a directory (expected a diffusers model folder with unet/, vae/, text_encoder/, tokenizer/)",
                root.display()
            )));
        }
        Ok(Self { root })
    }

    fn part(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(name);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(Error::MissingFile(format!("{}: missing (a model folder needs {name}/)", dir.display())))
        }
    }

    /// The UNet's config.
    pub fn unet_config(&self) -> Result<UNetConfig> {
        read_config(&self.part("unet")?.join("config.json"), check_unet_options, UNetConfig::validate)
    }

    /// The VAE's config.
    pub fn vae_config(&self) -> Result<VaeConfig> {
        read_config(&self.part("vae")?.join("config.json"), |_| Ok(()), VaeConfig::validate)
    }

    /// The text encoder's config.
    pub fn clip_config(&self) -> Result<ClipConfig> {
        read_config(&self.part("text_encoder")?.join("config.json"), |_| Ok(()), ClipConfig::validate)
    }

    /// Checks that the parts fit together: the UNet reads the VAE's latents and CLIP's states, CLIP takes
    /// the tokenizer's 77 tokens.
    pub fn check_parts(&self) -> Result<()> {
        let (unet, vae, clip) = (self.unet_config()?, self.vae_config()?, self.clip_config()?);
        let mismatch = |message: String| Err(Error::Config { path: self.root.clone(), message });
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
            return mismatch(format!("CLIP has {} positions; SD1.x prompts are 77 tokens", clip.max_position_embeddings));
        }
        Ok(())
    }

    /// The scheduler config's path (read by the inversion core).
    pub fn scheduler_config(&self) -> Result<PathBuf> {
        Ok(self.part("scheduler")?.join("scheduler_config.json"))
    }

    /// The UNet with its weights on `device`.
    pub fn load_unet(&self, device: &Device) -> Result<UNet2DConditionModel> {
        let config = self.unet_config()?;
        let weights = find_weights(&self.part("unet")?, &["diffusion_pytorch_model"])?;
        let mut unet = UNet2DConditionModel::new(&config, device);
        load_module(&mut unet, &weights, &key_map(UNET_KEYS, &[]))?;
        Ok(unet)
    }

    /// The VAE with its weights on `device`.
    pub fn load_vae(&self, device: &Device) -> Result<AutoencoderKL> {
        let config = self.vae_config()?;
        let weights = find_weights(&self.part("vae")?, &["diffusion_pytorch_model"])?;
        let mut vae = AutoencoderKL::new(&config, device);
        load_module(&mut vae, &weights, &key_map(VAE_KEYS, &[]))?;
        Ok(vae)
    }

    /// The text encoder: its token table in host memory, the rest on `device`.
    pub fn load_clip(&self, device: &Device) -> Result<ClipTextModel> {
        let config = self.clip_config()?;
        let weights = find_weights(&self.part("text_encoder")?, &["model"])?;
        let table = read_token_table(&weights, &config)?;
        let mut clip = ClipTextModel::new(&config, table, device);
        load_module(&mut clip, &weights, &key_map(CLIP_KEYS, &[TOKEN_TABLE, "embeddings.position_ids"]))?;
        Ok(clip)
    }

    /// The tokenizer.
    pub fn load_tokenizer(&self) -> Result<ClipTokenizer> {
        ClipTokenizer::from_dir(&self.part("tokenizer")?)
    }
}

fn key_map(rules: &[(&'static str, &'static str)], ignored: &[&'static str]) -> KeyMap {
    KeyMap {
        rules: rules.to_vec(),
        ignored: ignored.to_vec(),
    }
}

/// Reads CLIP's token embedding table (f32, f16 or bf16 in the file) into host memory as f32.
fn read_token_table(path: &Path, config: &ClipConfig) -> Result<TokenTable> {
    use std::io::{Read, Seek, SeekFrom};

    let header = read_header(path)?;
    let (key, info) = header
        .iter()
        .find(|(k, _)| k.strip_prefix("text_model.").unwrap_or(k) == TOKEN_TABLE)
        .ok_or_else(|| Error::MissingTensor {
            path: path.to_owned(),
            key: TOKEN_TABLE.into(),
            expected: vec![config.vocab_size, config.hidden_size],
        })?;
    let expected = vec![config.vocab_size, config.hidden_size];
    if info.shape != expected {
        return Err(Error::ShapeMismatch {
            path: path.to_owned(),
            key: key.clone(),
            expected,
            found: info.shape.clone(),
        });
    }
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| Error::io(path, e))?;
    let [start, end] = info.data_offsets;
    file.seek(SeekFrom::Start(8 + u64::from_le_bytes(len) + start))
        .map_err(|e| Error::io(path, e))?;
    let mut bytes = vec![0u8; (end - start) as usize];
    file.read_exact(&mut bytes).map_err(|e| Error::io(path, e))?;
    let rows = match info.dtype.as_str() {
        "F32" => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
        "F16" => bytes
            .chunks_exact(2)
            .map(|b| burn::tensor::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        "BF16" => bytes
            .chunks_exact(2)
            .map(|b| burn::tensor::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::UnsupportedDtype {
                path: path.to_owned(),
                key: key.clone(),
                dtype: other.into(),
            });
        }
    };
    Ok(TokenTable {
        rows,
        dim: config.hidden_size,
    })
}
