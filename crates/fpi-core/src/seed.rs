//! Seed files: safetensors with the tensor `latents` `[1, C, h, w]` (f32) and the settings that made it.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

/// How a seed was made; stored as the safetensors metadata (all values as strings, as the format requires).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SeedInfo {
    pub prompt: String,
    pub steps: usize,
    pub guidance: f64,
    /// `ddim` or `fpi`.
    pub method: String,
    pub iterations: usize,
    /// The early-stop tolerance, if one was set.
    pub tolerance: Option<f64>,
    /// Steps of the prompt-aware adjustment.
    pub adjust: usize,
    /// Image side in pixels.
    pub size: usize,
    /// The model folder it was made with.
    pub model: String,
    /// The fpi version that made it.
    pub fpi_version: String,
}

/// An inverted seed: the latents and how they were made.
#[derive(Debug, Clone, PartialEq)]
pub struct Seed {
    pub latents: Vec<f32>,
    /// `[1, C, h, w]`.
    pub shape: [usize; 4],
    pub info: SeedInfo,
}

impl Seed {
    /// The safetensors bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let bytes: Vec<u8> = self.latents.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, self.shape.to_vec(), &bytes).expect("shape matches the data");
        let json = serde_json::to_value(&self.info).expect("plain data");
        let metadata: HashMap<String, String> = json
            .as_object()
            .expect("a struct")
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
            .collect();
        safetensors::serialize([("latents", view)], Some(metadata)).expect("serialisable")
    }

    /// Reads a seed (or any safetensors file with an f32 `latents` `[1, C, h, w]`; missing settings are defaults).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
        let tensors = safetensors::SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
        let view = tensors.tensor("latents").map_err(|_| "no tensor named `latents`".to_string())?;
        if view.dtype() != Dtype::F32 {
            return Err(format!("`latents` is {:?}, expected F32", view.dtype()));
        }
        let shape: [usize; 4] = view
            .shape()
            .try_into()
            .map_err(|_| format!("`latents` has shape {:?}, expected [1, C, h, w]", view.shape()))?;
        if shape[0] != 1 {
            return Err(format!("`latents` has shape {shape:?}, expected a batch of 1"));
        }
        let latents = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let info = metadata.metadata().as_ref().map(parse_info).unwrap_or_default();
        Ok(Self { latents, shape, info })
    }
}

fn parse_info(map: &HashMap<String, String>) -> SeedInfo {
    let object = map
        .iter()
        .map(|(k, v)| {
            let value = match k.as_str() {
                "prompt" | "method" | "model" | "fpi_version" => serde_json::Value::String(v.clone()),
                _ => serde_json::from_str(v).unwrap_or(serde_json::Value::Null),
            };
            (k.clone(), value)
        })
        .collect();
    let defaults = serde_json::to_value(SeedInfo::default()).expect("plain data");
    let mut merged = defaults.as_object().cloned().expect("a struct");
    for (k, v) in serde_json::Map::into_iter(object) {
        if !v.is_null() {
            merged.insert(k, v);
        }
    }
    serde_json::from_value(serde_json::Value::Object(merged)).unwrap_or_default()
}
