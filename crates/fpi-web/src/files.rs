//! A model folder made of browser `Blob`s (files the user picked, or responses from the cache), read in ranges.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

use fpi_models::checkpoint::Checkpoint;
use fpi_models::model_files::Form;
use fpi_models::source::ModelSource;
use fpi_models::{Error, Result};
use js_sys::{Map, Uint8Array};
use wasm_bindgen::{JsCast, JsError, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::Blob;

/// Files by their path relative to the model folder (`unet/config.json`).
pub struct BlobFiles {
    files: HashMap<String, Blob>,
}

impl BlobFiles {
    /// Takes a JS `Map` of path → `Blob` (a `File` is a `Blob`); entries of other types are an error.
    pub fn from_map(map: &Map) -> std::result::Result<Self, JsError> {
        let mut files = HashMap::new();
        for entry in map.entries() {
            let pair: js_sys::Array = entry.map_err(|e| JsError::new(&describe(e)))?.unchecked_into();
            let path =
                pair.get(0).as_string().ok_or_else(|| JsError::new("a file map's keys must be paths (strings)"))?;
            let blob =
                pair.get(1).dyn_into::<Blob>().map_err(|_| JsError::new(&format!("{path}: not a File or Blob")))?;
            files.insert(path.trim_start_matches('/').to_owned(), blob);
        }
        Ok(Self { files })
    }

    /// The model these files hold: a diffusers folder (or a VAE's own folder), or one checkpoint file at the root
    /// (any other weights file there makes it ambiguous), whose configs are the other files when a config is among
    /// them, else SD1.x's.
    pub async fn into_form(self) -> Result<Form<BlobFiles>> {
        let folder_weights = |k: &String| k.starts_with("diffusion_pytorch_model");
        let checkpoints: Vec<String> = self
            .files
            .keys()
            .filter(|k| !k.contains('/') && !folder_weights(k))
            .filter(|k| [".safetensors", ".ckpt", ".pt", ".pth", ".bin"].iter().any(|ext| k.ends_with(ext)))
            .cloned()
            .collect();
        let [checkpoint] = checkpoints.as_slice() else {
            return Ok(Form::folder(self));
        };
        if self.exists("unet/config.json") && self.exists("unet/diffusion_pytorch_model.safetensors") {
            return Ok(Form::folder(self));
        }
        let rest: HashMap<String, Blob> =
            self.files.iter().filter(|(k, _)| *k != checkpoint).map(|(k, b)| (k.clone(), b.clone())).collect();
        // Other files are configs only when a config is among them (a hub repository also holds README.md, …).
        let has_config = rest.keys().any(|k| k == "config.json" || k.ends_with("/config.json"));
        let configs = has_config.then_some(BlobFiles { files: rest });
        Ok(Form::Checkpoint(
            Checkpoint::open(BlobFiles { files: self.files.clone() }, checkpoint, configs.as_ref()).await?,
        ))
    }

    fn blob(&self, path: &str) -> Result<&Blob> {
        self.files
            .get(path)
            .ok_or_else(|| Error::MissingFile { path: path.into(), needed: "not among the model's files".into() })
    }
}

impl ModelSource for BlobFiles {
    fn display(&self, path: &str) -> PathBuf {
        PathBuf::from(path)
    }

    fn exists(&self, path: &str) -> bool {
        let folder = format!("{}/", path.trim_end_matches('/'));
        self.files.contains_key(path) || self.files.keys().any(|k| k.starts_with(&folder))
    }

    fn len(&self, path: &str) -> Result<u64> {
        Ok(self.blob(path)?.size() as u64)
    }

    async fn read(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let failed = |e: JsValue| Error::Io { path: path.into(), source: std::io::Error::other(describe(e)) };
        let part = self.blob(path)?.slice_with_f64_and_f64(range.start as f64, range.end as f64).map_err(failed)?;
        let buffer = JsFuture::from(part.array_buffer()).await.map_err(failed)?;
        Ok(Uint8Array::new(&buffer).to_vec())
    }
}

/// A JS exception's message.
pub fn describe(e: JsValue) -> String {
    match e.dyn_ref::<js_sys::Error>() {
        Some(error) => String::from(error.message()),
        None => e.as_string().unwrap_or_else(|| format!("{e:?}")),
    }
}
