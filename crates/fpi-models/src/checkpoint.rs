//! One original (CompVis/LDM-keyed) Stable Diffusion 1.x checkpoint file, seen as a diffusers folder: each part's
//! weights become a virtual safetensors file whose header renames the checkpoint's tensors ([`crate::ldm`]) and
//! whose data is read in place from the checkpoint; configs, tokenizer and scheduler are SD1.x's built-in ones
//! ([`crate::sd1`]) or come from a diffusers folder of configs. Models fpi cannot run are refused when the file
//! is opened, from its header alone.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use crate::config::{UNetConfig, VaeConfig, parse_config};
use crate::error::{Error, Result};
use crate::ldm::{CLIP_PREFIX, KeyTable, UNET_PREFIX, VAE_PREFIX};
use crate::sd1;
use crate::source::ModelSource;
use crate::weights::{Header, read_header, safetensors_head};

/// Tensors of training and sampling state that checkpoints carry and no model part needs.
const IGNORED: &[&str] = &[
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "betas",
    "log_one_minus_alphas_cumprod",
    "logvar",
    "lvlb_weights",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "posterior_variance",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "cond_stage_model.transformer.text_model.embeddings.position_ids",
    "cond_stage_model.transformer.embeddings.position_ids",
];
/// Prefixes of tensors no model part needs (the EMA copy of the UNet, a VAE's training loss).
const IGNORED_PREFIXES: &[&str] = &["model_ema.", "loss."];
/// How many unknown keys an error lists.
const LISTED_KEYS: usize = 5;

/// A virtual file of the folder.
#[derive(Debug, Clone)]
enum Virtual {
    /// A small text file (config, tokenizer, scheduler) in memory, and the path messages name for it.
    Text { bytes: Vec<u8>, shown: PathBuf },
    /// A part's weights: the length prefix and header in memory; the data is the checkpoint's data section.
    Weights { head: Vec<u8>, part: &'static str },
}

/// One checkpoint file as a diffusers folder (a [`ModelSource`]).
#[derive(Debug)]
pub struct Checkpoint<S> {
    source: S,
    file: String,
    files: BTreeMap<String, Virtual>,
    /// The checkpoint's data section in the file.
    data: Range<u64>,
    /// Whether the configs are SD1.x's built-in ones (messages say so: a file of another size needs its own).
    builtin: bool,
}

/// The parts a checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// The UNet (and so, with CLIP, a whole model).
    pub unet: bool,
    /// The VAE.
    pub vae: bool,
    /// CLIP's text encoder.
    pub clip: bool,
}

impl<S: ModelSource> Checkpoint<S> {
    /// Opens `file` of `source` as a checkpoint. Configs, tokenizer and scheduler come from `configs` (a diffusers
    /// folder: `unet/config.json`, …; a VAE's `config.json` may sit at its root) when given, else SD1.x's.
    pub async fn open(source: S, file: &str, configs: Option<&S>) -> Result<Self> {
        let shown = source.display(file);
        let header = match read_header(&source, file).await {
            Ok(header) if !pickle_name(file) => header,
            Ok(_) => return Err(Error::Pickle { path: shown }),
            Err(e) => return Err(if pickled(&source, file).await? { Error::Pickle { path: shown } } else { e }),
        };
        refuse_other_models(&header, &shown)?;
        let parts = parts_of(&header);
        if !(parts.unet || parts.vae || parts.clip) {
            let what = "holds no Stable Diffusion 1.x weights (no model.diffusion_model.*, first_stage_model.*, \
                        cond_stage_model.transformer.* or VAE encoder.*/decoder.* tensors)";
            return Err(Error::UnsupportedModel { path: shown, what: what.into() });
        }

        let mut files = BTreeMap::new();
        let text = |files: &mut BTreeMap<String, Virtual>, path: &str, bytes: Vec<u8>, shown: PathBuf| {
            files.insert(path.to_owned(), Virtual::Text { bytes, shown });
        };
        let builtin = |name: &str| PathBuf::from(format!("{} (SD1.x's built-in {name})", shown.display()));
        let mut tables: Vec<(&'static str, &'static str, KeyTable)> = Vec::new();
        let whole = parts.unet || parts.clip;
        if parts.unet {
            let (config, at) = config_text(configs, &["unet/config.json"], sd1::UNET_CONFIG).await?;
            let at = at.unwrap_or_else(|| builtin("UNet config"));
            let unet: UNetConfig = parse_config(&config, &at)?;
            tables.push(("unet", "unet/diffusion_pytorch_model.safetensors", KeyTable::unet(&unet)));
            text(&mut files, "unet/config.json", config.into_bytes(), at);
        }
        if parts.vae {
            let (config, at) = config_text(configs, &["vae/config.json", "config.json"], sd1::VAE_CONFIG).await?;
            let at = at.unwrap_or_else(|| builtin("VAE config"));
            let vae: VaeConfig = parse_config(&config, &at)?;
            let prefix = if header.tensors.keys().any(|k| k.starts_with(VAE_PREFIX)) { VAE_PREFIX } else { "" };
            tables.push(("vae", "vae/diffusion_pytorch_model.safetensors", KeyTable::vae(&vae, prefix)));
            text(&mut files, "vae/config.json", config.into_bytes(), at);
        }
        if parts.clip {
            let (config, at) = config_text(configs, &["text_encoder/config.json"], sd1::CLIP_CONFIG).await?;
            tables.push(("text_encoder", "text_encoder/model.safetensors", KeyTable::clip()));
            text(
                &mut files,
                "text_encoder/config.json",
                config.into_bytes(),
                at.unwrap_or_else(|| builtin("CLIP config")),
            );
        }
        if whole {
            let (config, at) =
                config_text(configs, &["scheduler/scheduler_config.json"], sd1::SCHEDULER_CONFIG).await?;
            let at = at.unwrap_or_else(|| builtin("scheduler config"));
            text(&mut files, "scheduler/scheduler_config.json", config.into_bytes(), at);
            for (path, bytes, at) in tokenizer_files(configs, &shown).await? {
                text(&mut files, &path, bytes, at);
            }
        }

        let mut renamed: BTreeMap<&str, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
        let mut unknown = Vec::new();
        for (key, info) in &header.tensors {
            if IGNORED.contains(&key.as_str()) || IGNORED_PREFIXES.iter().any(|p| key.starts_with(p)) {
                continue;
            }
            let Some((path, mapped)) = tables.iter().find_map(|(_, path, table)| Some((*path, table.map(key)?))) else {
                unknown.push(key.clone());
                continue;
            };
            let shape = if mapped.squeeze && info.shape.len() == 4 && info.shape[2..] == [1, 1] {
                info.shape[..2].to_vec()
            } else {
                info.shape.clone()
            };
            let entry = serde_json::json!({ "dtype": info.dtype, "shape": shape, "data_offsets": info.data_offsets });
            renamed.entry(path).or_default().insert(mapped.key, entry);
        }
        if !unknown.is_empty() {
            let first = unknown.iter().take(LISTED_KEYS).map(|k| format!("{k:?}")).collect();
            return Err(Error::UnknownKeys { path: shown, count: unknown.len(), first });
        }
        for (part, path, _) in &tables {
            let entries = renamed.remove(path).unwrap_or_default();
            files.insert((*path).to_owned(), Virtual::Weights { head: safetensors_head(entries), part });
        }
        let data = header.data_start..source.len(file)?;
        Ok(Self { source, file: file.to_owned(), files, data, builtin: configs.is_none() })
    }

    /// The parts the checkpoint holds.
    pub fn parts(&self) -> Parts {
        Parts {
            unet: self.files.contains_key("unet/config.json"),
            vae: self.files.contains_key("vae/config.json"),
            clip: self.files.contains_key("text_encoder/config.json"),
        }
    }

    fn file(&self, path: &str) -> Result<&Virtual> {
        self.files
            .get(path)
            .ok_or_else(|| Error::MissingFile { path: self.display(path), needed: "not in the checkpoint".into() })
    }
}

impl<S: ModelSource> ModelSource for Checkpoint<S> {
    fn display(&self, path: &str) -> PathBuf {
        let file = self.source.display(&self.file);
        match self.files.get(path) {
            Some(Virtual::Text { shown, .. }) => shown.clone(),
            Some(Virtual::Weights { part, .. }) if self.builtin => {
                PathBuf::from(format!("{} ({part}, sized by SD1.x's built-in config)", file.display()))
            }
            Some(Virtual::Weights { part, .. }) => PathBuf::from(format!("{} ({part})", file.display())),
            None if path.is_empty() => file,
            None => PathBuf::from(format!("{} ({path})", file.display())),
        }
    }

    fn exists(&self, path: &str) -> bool {
        let folder = format!("{}/", path.trim_end_matches('/'));
        self.files.contains_key(path) || self.files.keys().any(|k| k.starts_with(&folder))
    }

    fn len(&self, path: &str) -> Result<u64> {
        Ok(match self.file(path)? {
            Virtual::Text { bytes, .. } => bytes.len() as u64,
            Virtual::Weights { head, .. } => head.len() as u64 + self.data.end - self.data.start,
        })
    }

    async fn read(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let end = range.end.min(self.len(path)?);
        let start = range.start.min(end);
        let head = match self.file(path)? {
            Virtual::Text { bytes, .. } => return Ok(bytes[start as usize..end as usize].to_vec()),
            Virtual::Weights { head, .. } => head,
        };
        let split = head.len() as u64;
        let mut bytes = head[start.min(split) as usize..end.min(split) as usize].to_vec();
        if end > split {
            let from = self.data.start + start.max(split) - split;
            bytes.extend(self.source.read(&self.file, from..self.data.start + end - split).await?);
        }
        Ok(bytes)
    }
}

/// Whether `file` is named as a PyTorch pickle (`.ckpt`, `.pt`, `.pth`, `.bin`): never loaded, as unpickling runs
/// code.
fn pickle_name(file: &str) -> bool {
    [".ckpt", ".pt", ".pth", ".bin"].iter().any(|ext| file.to_lowercase().ends_with(ext))
}

/// Whether a file that is not safetensors starts like a PyTorch pickle: a zip archive (torch.save's format since
/// 1.6) or a pickle's protocol opcode. (Asked only after the safetensors header failed: a valid header's length can
/// start with 0x80 too.)
async fn pickled(source: &impl ModelSource, file: &str) -> Result<bool> {
    let start = source.read(file, 0..4).await?;
    Ok(pickle_name(file)
        || start.starts_with(b"PK\x03\x04")
        || (start.first() == Some(&0x80) && (2..=5).contains(&start.get(1).copied().unwrap_or(0))))
}

/// Refuses Stable Diffusion models other than SD1.x text-to-image, by their tensors.
fn refuse_other_models(header: &Header, shown: &std::path::Path) -> Result<()> {
    let has = |prefix: &str| header.tensors.keys().any(|k| k.starts_with(prefix));
    let shape = |key: &str| header.tensors.get(key).map(|info| info.shape.as_slice());
    let refuse = |what: String| Err(Error::UnsupportedModel { path: shown.to_owned(), what });
    if has("conditioner.embedders.") || has("model.diffusion_model.label_emb.") {
        return refuse("is an SDXL checkpoint (two text encoders, 2048-wide context)".into());
    }
    let context = shape("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight");
    if has("cond_stage_model.model.") || context.is_some_and(|s| s.get(1) == Some(&1024)) {
        return refuse(
            "is a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder, 1024-wide context, often \
                       v-prediction)"
                .into(),
        );
    }
    match shape("model.diffusion_model.input_blocks.0.0.weight").and_then(|s| s.get(1)) {
        Some(9) => refuse("is an inpainting UNet (9 input channels: latents, mask and masked image)".into()),
        Some(&c) if c != 4 => refuse(format!("has a UNet with {c} input channels, not a text-to-image one (4)")),
        _ => Ok(()),
    }
}

/// Which parts the header's tensors belong to.
fn parts_of(header: &Header) -> Parts {
    let has = |prefix: &str| header.tensors.keys().any(|k| k.starts_with(prefix));
    Parts {
        unet: has(UNET_PREFIX),
        vae: has(VAE_PREFIX) || (has("encoder.") && has("decoder.")),
        clip: has(CLIP_PREFIX),
    }
}

/// A config's text: the first of `paths` that `configs` has, and its path; SD1.x's `builtin` without `configs`.
async fn config_text<S: ModelSource>(
    configs: Option<&S>,
    paths: &[&str],
    builtin: &str,
) -> Result<(String, Option<PathBuf>)> {
    let Some(configs) = configs else {
        return Ok((builtin.to_owned(), None));
    };
    match paths.iter().find(|p| configs.exists(p)) {
        Some(path) => Ok((configs.read_text(path).await?, Some(configs.display(path)))),
        None => Err(Error::MissingFile {
            path: configs.display(paths[0]),
            needed: "the configs of a single-file checkpoint come from a diffusers folder's unet/, vae/, \
                     text_encoder/, tokenizer/ and scheduler/"
                .into(),
        }),
    }
}

/// The tokenizer's files: the configs folder's (`tokenizer.json`, or `vocab.json` and `merges.txt`), else CLIP's.
async fn tokenizer_files<S: ModelSource>(
    configs: Option<&S>,
    shown: &std::path::Path,
) -> Result<Vec<(String, Vec<u8>, PathBuf)>> {
    let Some(configs) = configs else {
        let at = |name: &str| PathBuf::from(format!("{} (CLIP's built-in {name})", shown.display()));
        let merges = sd1::merges_txt();
        let vocab = sd1::vocab_json(&merges);
        return Ok(vec![
            ("tokenizer/vocab.json".into(), vocab.into_bytes(), at("vocab.json")),
            ("tokenizer/merges.txt".into(), merges.into_bytes(), at("merges.txt")),
        ]);
    };
    let names: &[&str] = if configs.exists("tokenizer/tokenizer.json") {
        &["tokenizer/tokenizer.json"]
    } else {
        &["tokenizer/vocab.json", "tokenizer/merges.txt"]
    };
    let mut files = Vec::new();
    for name in names {
        if !configs.exists(name) {
            return Err(Error::MissingFile {
                path: configs.display(name),
                needed: "a tokenizer folder needs tokenizer.json, or vocab.json and merges.txt".into(),
            });
        }
        files.push(((*name).to_owned(), configs.read_all(name).await?, configs.display(name)));
    }
    Ok(files)
}
