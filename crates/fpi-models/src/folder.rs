//! A diffusers model folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`) and how each part loads.

use burn::store::ModuleSnapshot;
use burn::tensor::{Device, FloatDType};

use crate::clip::{ClipTextModel, TokenTable};
use crate::config::{ClipConfig, PartConfig, UNetConfig, VaeConfig, check_fit, parse_config};
use crate::error::{Error, Result};
#[cfg(not(target_family = "wasm"))]
use crate::source::Directory;
use crate::source::ModelSource;
use crate::tokenizer::ClipTokenizer;
use crate::unet::UNet2DConditionModel;
use crate::vae::AutoencoderKL;
use crate::weights::{CHUNK_BYTES, KeyMap, find_weights, load_module, read_header};

/// diffusers' names of the UNet's tensors that fpi's modules name otherwise (`to_out`, `ff.geglu`, `ff.out`: one
/// field where diffusers has a list with a dropout, or a wrapper module).
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

/// A part of a model folder: its folder, and how its weights file is named and keyed.
struct Part {
    /// The part's folder (also its name in [`LoadProgress`]).
    dir: &'static str,
    /// Names of its weights file, without `.safetensors` or `.fp16.safetensors`.
    stems: &'static [&'static str],
    /// How its file's keys become the module's parameter paths.
    keys: KeyMap,
}

const UNET: Part =
    Part { dir: "unet", stems: &["diffusion_pytorch_model"], keys: KeyMap { rules: UNET_KEYS, ignored: &[] } };
const VAE: Part =
    Part { dir: "vae", stems: &["diffusion_pytorch_model"], keys: KeyMap { rules: VAE_KEYS, ignored: &[] } };
/// The token table is read apart (it stays in host memory); the position ids are a buffer, not a weight.
const TEXT_ENCODER: Part = Part {
    dir: "text_encoder",
    stems: &["model"],
    keys: KeyMap { rules: CLIP_KEYS, ignored: &[TOKEN_TABLE, "embeddings.position_ids"] },
};

/// A diffusers-layout Stable Diffusion folder, read through a [`ModelSource`].
#[derive(Debug, Clone)]
pub struct ModelFolder<S> {
    /// Where the files come from.
    pub source: S,
    /// Weight bytes read and handed to the device at a time ([`CHUNK_BYTES`] unless changed).
    pub chunk_bytes: u64,
    /// The float type the networks are loaded in (f32 unless changed; norms' parameters stay f32): see
    /// [`crate::precision`].
    pub dtype: FloatDType,
}

/// Progress of a load: the part (`unet`, `vae`, `text_encoder`), its weight bytes loaded so far and in all.
pub type LoadProgress<'a> = dyn FnMut(&str, u64, u64) + 'a;

#[cfg(not(target_family = "wasm"))]
impl ModelFolder<Directory> {
    /// Opens the folder `root` on disk; the parts are read when loaded.
    pub fn open(root: impl Into<std::path::PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.is_dir() {
            return Err(Error::NotAFolder { path: root });
        }
        Ok(Self::new(Directory { root }))
    }
}

impl<S: ModelSource> ModelFolder<S> {
    /// A folder whose files come from `source`.
    pub fn new(source: S) -> Self {
        Self { source, chunk_bytes: CHUNK_BYTES, dtype: FloatDType::F32 }
    }

    /// `name` (a part's folder) when the folder has it.
    fn part<'n>(&self, name: &'n str) -> Result<&'n str> {
        if self.source.exists(name) {
            Ok(name)
        } else {
            Err(Error::MissingFile { path: self.source.display(name), needed: format!("a model folder needs {name}/") })
        }
    }

    /// The text of the file `file` of the part `part`, and its path for messages.
    async fn part_text(&self, part: &str, file: &str) -> Result<(String, std::path::PathBuf)> {
        let path = format!("{}/{file}", self.part(part)?);
        let shown = self.source.display(&path);
        if !self.source.exists(&path) {
            return Err(Error::MissingFile { path: shown, needed: format!("a model folder's {part}/ holds {file}") });
        }
        Ok((self.source.read_text(&path).await?, shown))
    }

    async fn config<T: PartConfig>(&self, part: &Part) -> Result<T> {
        let (text, path) = self.part_text(part.dir, "config.json").await?;
        parse_config(&text, &path)
    }

    /// The UNet's config.
    pub async fn unet_config(&self) -> Result<UNetConfig> {
        self.config(&UNET).await
    }

    /// The VAE's config.
    pub async fn vae_config(&self) -> Result<VaeConfig> {
        self.config(&VAE).await
    }

    /// The text encoder's config.
    pub async fn clip_config(&self) -> Result<ClipConfig> {
        self.config(&TEXT_ENCODER).await
    }

    /// Checks that the parts fit together: the UNet reads the VAE's latents and CLIP's states, CLIP takes
    /// the tokenizer's 77 tokens.
    pub async fn check_parts(&self) -> Result<()> {
        let (unet, vae, clip) = (self.unet_config().await?, self.vae_config().await?, self.clip_config().await?);
        check_fit(&unet, &vae, &clip).map_err(|source| Error::Config { path: self.source.display(""), source })
    }

    /// The text of `scheduler/scheduler_config.json` (parsed by the inversion core) and its path for messages.
    pub async fn scheduler_config(&self) -> Result<(String, std::path::PathBuf)> {
        self.part_text("scheduler", "scheduler_config.json").await
    }

    /// The path of `part`'s weights file.
    fn weights(&self, part: &Part) -> Result<String, Error> {
        find_weights(&self.source, self.part(part.dir)?, part.stems)
    }

    /// `module` with `part`'s weights from the file `weights`.
    async fn load_weights<M: ModuleSnapshot>(
        &self,
        part: &Part,
        weights: &str,
        mut module: M,
        progress: &mut LoadProgress<'_>,
    ) -> Result<M> {
        let mut progress = |done, total| progress(part.dir, done, total);
        load_module(&mut module, &self.source, weights, &part.keys, self.chunk_bytes, self.dtype, &mut progress)
            .await?;
        Ok(module)
    }

    /// The UNet with its weights on `device`.
    pub async fn load_unet(&self, device: &Device, progress: &mut LoadProgress<'_>) -> Result<UNet2DConditionModel> {
        let config = self.unet_config().await?;
        let weights = self.weights(&UNET)?;
        self.load_weights(&UNET, &weights, UNet2DConditionModel::new(&config, device), progress).await
    }

    /// The VAE with its weights on `device`.
    pub async fn load_vae(&self, device: &Device, progress: &mut LoadProgress<'_>) -> Result<AutoencoderKL> {
        let config = self.vae_config().await?;
        let weights = self.weights(&VAE)?;
        self.load_weights(&VAE, &weights, AutoencoderKL::new(&config, device), progress).await
    }

    /// The text encoder: its token table in host memory, the rest on `device`.
    pub async fn load_clip(&self, device: &Device, progress: &mut LoadProgress<'_>) -> Result<ClipTextModel> {
        let config = self.clip_config().await?;
        let weights = self.weights(&TEXT_ENCODER)?;
        let table = self.read_token_table(&weights, &config).await?;
        self.load_weights(&TEXT_ENCODER, &weights, ClipTextModel::new(&config, table, device), progress).await
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
                return Err(Error::MissingFile {
                    path: self.source.display(path),
                    needed: "a tokenizer folder needs tokenizer.json, or vocab.json and merges.txt".into(),
                });
            }
        }
        let (vocab_text, merges_text) = (self.source.read_text(&vocab).await?, self.source.read_text(&merges).await?);
        let paths = [self.source.display(&vocab), self.source.display(&merges)];
        ClipTokenizer::from_vocab_merges(&vocab_text, &merges_text, &paths)
    }

    /// Reads CLIP's token embedding table (f64, f32, f16 or bf16 in the file, as for the other weights) into host
    /// memory as f32.
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
            "F64" => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
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
