//! Seed files: safetensors with the tensor `latents` `[1, C, h, w]` (f32) and the settings that made it.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

/// How a seed was made; stored as the safetensors metadata (all values as strings, as the format requires).
/// A file without some of these keys reads them as the defaults: no prompt, 50 steps, guidance 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedInfo {
    /// The prompt it was inverted (or generated) with.
    pub prompt: String,
    /// DDIM steps.
    pub steps: usize,
    /// Classifier-free guidance scale.
    pub guidance: f64,
    /// `ddim` or `fpi`.
    pub method: String,
    /// Evaluations of the implicit step per timestep.
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

impl Default for SeedInfo {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            steps: 50,
            guidance: 1.0,
            method: String::new(),
            iterations: 0,
            tolerance: None,
            adjust: 0,
            size: 0,
            model: String::new(),
            fpi_version: String::new(),
        }
    }
}

/// An inverted seed: the latents and how they were made.
#[derive(Debug, Clone, PartialEq)]
pub struct Seed {
    /// The values of `latents`, row-major.
    pub latents: Vec<f32>,
    /// `[1, C, h, w]`.
    pub shape: [usize; 4],
    /// The settings it was made with.
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
        let (_, metadata) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
        let tensors =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
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
        let info = match metadata.metadata() {
            Some(map) => parse_info(map)?,
            None => SeedInfo::default(),
        };
        Ok(Self { latents, shape, info })
    }
}

/// Reads the known keys one by one, so that a bad value is named; other keys are ignored.
fn parse_info(map: &HashMap<String, String>) -> Result<SeedInfo, String> {
    let mut json = serde_json::to_value(SeedInfo::default()).expect("plain data");
    let fields = json.as_object_mut().expect("a struct");
    for (key, value) in map {
        let Some(slot) = fields.get_mut(key) else { continue };
        *slot = match key.as_str() {
            "prompt" | "method" | "model" | "fpi_version" => serde_json::Value::String(value.clone()),
            _ => serde_json::from_str(value).map_err(|_| format!("metadata {key} = {value:?} is not a number"))?,
        };
    }
    serde_json::from_value(json).map_err(|e| format!("metadata: {e}"))
}
