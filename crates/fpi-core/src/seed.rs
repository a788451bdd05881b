//! Seed files: safetensors with the tensor `latents` `[1, C, h, w]` (f32) and, for an inverted seed, the settings
//! that made it as metadata.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::seed_space::{CentroidMethod, PathMethod};
use crate::settings::InvertSettings;

/// How a seed was made: the inversion settings, the model and the fpi version, and for a seed made from other seeds,
/// how. Stored flat as the safetensors metadata (all values as strings, as the format requires; the derivation as
/// JSON text).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedInfo {
    /// The settings it was inverted with; for a derived seed, its first source's with the prompt, steps and
    /// guidance it is meant to be sampled with.
    #[serde(flatten)]
    pub settings: InvertSettings,
    /// The model's name (a folder's name or a hub id; never a local path, as seeds are shared).
    pub model: String,
    /// The fpi version that made it.
    pub fpi_version: String,
    /// The float type the networks computed in when it was inverted (`f32`, `f16`); absent from derived seeds and
    /// from seeds of fpi versions that did not record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// For a seed made from other seeds (interpolation, centroid): how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation: Option<Derivation>,
}

/// How a seed was made from other seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "lowercase")]
pub enum Derivation {
    /// Frame `frame` (from 0) of `frames` on a path between two seeds.
    Interpolation {
        /// The path's method.
        method: PathMethod,
        /// The two seeds' file names.
        sources: [String; 2],
        /// This frame's place on the path, from 0 (the first seed).
        frame: usize,
        /// Frames on the path, both seeds included.
        frames: usize,
    },
    /// The centre of seeds.
    Centroid {
        /// The centroid's method.
        method: CentroidMethod,
        /// The seeds' file names.
        sources: Vec<String>,
    },
}

impl SeedInfo {
    /// The record of an inversion with `settings` on the model called `model` by this fpi version.
    pub fn new(settings: InvertSettings, model: impl Into<String>) -> Self {
        let fpi_version = env!("CARGO_PKG_VERSION").into();
        Self { settings, model: model.into(), fpi_version, precision: None, derivation: None }
    }

    /// The same record, saying the networks computed in `precision` (`f32`, `f16`).
    pub fn with_precision(self, precision: impl Into<String>) -> Self {
        Self { precision: Some(precision.into()), ..self }
    }

    /// The record of a seed made by `derivation`, to be sampled with `settings`, on the model called `model`.
    pub fn derived(settings: InvertSettings, model: impl Into<String>, derivation: Derivation) -> Self {
        Self { derivation: Some(derivation), ..Self::new(settings, model) }
    }

    /// The settings a seed made from others records, `first` being its first source: `first`'s (for a file without
    /// fpi's metadata, the defaults at the image size its latents make, `latent_factor` pixels per latent), with the
    /// `prompt`, `steps` and `guidance` it is sampled with.
    pub fn derived_settings(
        first: &Seed,
        latent_factor: usize,
        prompt: impl Into<String>,
        steps: usize,
        guidance: f64,
    ) -> InvertSettings {
        let base = first.info.as_ref().map_or_else(
            || InvertSettings { size: first.shape[3] * latent_factor, ..InvertSettings::default() },
            |info| info.settings.clone(),
        );
        InvertSettings { prompt: prompt.into(), steps, guidance, ..base }
    }
}

/// The prompt, steps and guidance to sample a seed with.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// The prompt.
    pub prompt: String,
    /// DDIM steps.
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
}

/// Metadata keys whose values are text; the others hold numbers (and `derivation`, JSON).
const TEXT_KEYS: [&str; 5] = ["prompt", "method", "model", "fpi_version", "precision"];
/// The metadata key of a derived seed's [`Derivation`], as JSON text.
const DERIVATION_KEY: &str = "derivation";
/// Metadata keys whose values are numbers.
const NUMBER_KEYS: [&str; 6] = ["size", "steps", "guidance", "iterations", "tolerance", "adjust"];

/// Latents in a file: an inverted seed, or any safetensors file with an f32 `latents` `[1, C, h, w]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Seed {
    /// The values of `latents`, row-major.
    pub latents: Vec<f32>,
    /// `[1, C, h, w]`.
    pub shape: [usize; 4],
    /// How it was made; `None` for a file without fpi's metadata (such as final latents, or one from Python).
    pub info: Option<SeedInfo>,
}

/// Why bytes are not a seed file.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// Not safetensors at all.
    #[error("not a safetensors file: {0}")]
    NotSafetensors(#[from] safetensors::SafeTensorError),
    /// No tensor called `latents`.
    #[error("no tensor named `latents`")]
    NoLatents,
    /// `latents` is not f32.
    #[error("`latents` is {0}, expected F32")]
    Dtype(String),
    /// `latents` is not `[1, C, h, w]`.
    #[error("`latents` has shape {0:?}, expected [1, C, h, w]")]
    Shape(Vec<usize>),
    /// A number in the metadata does not parse.
    #[error("metadata {key} = {value:?} is not a number")]
    NotANumber {
        /// The metadata key.
        key: String,
        /// Its text.
        value: String,
    },
    /// The metadata has some of fpi's keys but not all, or values out of their types.
    #[error("metadata: {0}")]
    Metadata(serde_json::Error),
}

impl Seed {
    /// How to sample this seed: the values given, else what it records, else (a file without fpi's metadata) no
    /// prompt, 50 steps and guidance 1.
    pub fn sampling(&self, prompt: Option<String>, steps: Option<usize>, guidance: Option<f64>) -> Sampling {
        let recorded = self.info.as_ref().map(|info| &info.settings);
        Sampling {
            prompt: prompt.or_else(|| recorded.map(|s| s.prompt.clone())).unwrap_or_default(),
            steps: steps.or(recorded.map(|s| s.steps)).unwrap_or(InvertSettings::default().steps),
            guidance: guidance.or(recorded.map(|s| s.guidance)).unwrap_or(1.0),
        }
    }

    /// The safetensors bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let bytes: Vec<u8> = self.latents.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, self.shape.to_vec(), &bytes).expect("shape matches the data");
        let metadata = self.info.as_ref().map(|info| {
            let json = serde_json::to_value(info).expect("plain data");
            let fields = json.as_object().expect("a struct").iter().filter(|(_, v)| !v.is_null());
            fields.map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect()
        });
        safetensors::serialize([("latents", view)], metadata).expect("serialisable")
    }

    /// Reads a seed file. Metadata without `fpi_version` (not written by fpi) reads as no [`SeedInfo`]; fpi's
    /// metadata must have every key of [`SeedInfo`] (`iterations` and `tolerance` only where the method has them).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SeedError> {
        let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)?;
        let tensors = safetensors::SafeTensors::deserialize(bytes)?;
        let view = tensors.tensor("latents").map_err(|_| SeedError::NoLatents)?;
        if view.dtype() != Dtype::F32 {
            return Err(SeedError::Dtype(format!("{:?}", view.dtype())));
        }
        let shape: [usize; 4] = view.shape().try_into().map_err(|_| SeedError::Shape(view.shape().to_vec()))?;
        if shape[0] != 1 {
            return Err(SeedError::Shape(shape.to_vec()));
        }
        let latents = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let info = match metadata.metadata() {
            Some(map) => parse_info(map)?,
            None => None,
        };
        Ok(Self { latents, shape, info })
    }
}

/// fpi's keys of a metadata map as JSON values (a bad number is named); other keys are ignored.
fn parse_info(map: &HashMap<String, String>) -> Result<Option<SeedInfo>, SeedError> {
    if !map.contains_key("fpi_version") {
        return Ok(None);
    }
    let mut json = serde_json::Map::new();
    for (key, value) in map {
        if TEXT_KEYS.contains(&key.as_str()) {
            json.insert(key.clone(), value.clone().into());
        } else if key == DERIVATION_KEY {
            json.insert(key.clone(), serde_json::from_str(value).map_err(SeedError::Metadata)?);
        } else if NUMBER_KEYS.contains(&key.as_str()) {
            let number: serde_json::Number =
                value.parse().map_err(|_| SeedError::NotANumber { key: key.clone(), value: value.clone() })?;
            json.insert(key.clone(), number.into());
        }
    }
    serde_json::from_value(json.into()).map(Some).map_err(SeedError::Metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Method;

    fn seed(info: Option<SeedInfo>) -> Seed {
        Seed { latents: (0..16).map(|i| i as f32 * 0.5 - 3.0).collect(), shape: [1, 4, 2, 2], info }
    }

    fn inverted() -> SeedInfo {
        let settings = InvertSettings {
            prompt: "a cat, \"quoted\"".into(),
            method: Method::FixedPoint { iterations: 7, tolerance: Some(2.5e-4) },
            ..InvertSettings::default()
        };
        SeedInfo::new(settings, "org/model").with_precision("f16")
    }

    fn metadata(bytes: &[u8]) -> HashMap<String, String> {
        safetensors::SafeTensors::read_metadata(bytes).unwrap().1.metadata().clone().unwrap_or_default()
    }

    fn with_metadata(pairs: &[(&str, &str)]) -> Vec<u8> {
        let bytes: Vec<u8> = [0f32; 4].iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![1, 1, 2, 2], &bytes).unwrap();
        let map = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        safetensors::serialize([("latents", view)], Some(map)).unwrap()
    }

    #[test]
    fn a_seed_reads_back_with_its_settings() {
        // Also a seed of an fpi version that did not record the precision.
        let unrecorded = SeedInfo { precision: None, ..inverted() };
        for original in [seed(Some(inverted())), seed(Some(unrecorded)), seed(None)] {
            assert_eq!(Seed::from_bytes(&original.to_bytes()).unwrap(), original);
        }
    }

    #[test]
    fn metadata_is_flat_text_as_python_reads_it() {
        let map = metadata(&seed(Some(inverted())).to_bytes());
        let expected = [
            ("prompt", "a cat, \"quoted\""),
            ("size", "512"),
            ("steps", "50"),
            ("guidance", "2.0"),
            ("method", "fpi"),
            ("iterations", "7"),
            ("tolerance", "0.00025"),
            ("adjust", "2"),
            ("model", "org/model"),
            ("fpi_version", env!("CARGO_PKG_VERSION")),
            ("precision", "f16"),
        ];
        assert_eq!(map, expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        assert!(metadata(&seed(None).to_bytes()).is_empty());
    }

    #[test]
    fn a_derived_seed_reads_back_with_its_derivation_as_json_text() {
        let derivation = Derivation::Interpolation {
            method: PathMethod::Nao,
            sources: ["a.safetensors".into(), "b, \"2\".safetensors".into()],
            frame: 3,
            frames: 9,
        };
        let original = seed(Some(SeedInfo::derived(inverted().settings, "org/model", derivation)));
        let bytes = original.to_bytes();
        assert_eq!(Seed::from_bytes(&bytes).unwrap(), original);
        let json: serde_json::Value = serde_json::from_str(&metadata(&bytes)["derivation"]).unwrap();
        assert_eq!(json["operation"], "interpolation");
        assert_eq!(json["sources"][1], "b, \"2\".safetensors");
        let centroid = Derivation::Centroid { method: CentroidMethod::Shell, sources: vec!["x".into(); 3] };
        let original = seed(Some(SeedInfo::derived(inverted().settings, "m", centroid)));
        assert_eq!(Seed::from_bytes(&original.to_bytes()).unwrap(), original);
    }

    #[test]
    fn a_derived_seed_records_its_first_sources_settings_with_its_sampling() {
        let first = seed(Some(inverted()));
        let settings = SeedInfo::derived_settings(&first, 8, "a dog", 20, 3.0);
        let expected = InvertSettings { prompt: "a dog".into(), steps: 20, guidance: 3.0, ..inverted().settings };
        assert_eq!(settings, expected);
        // Without fpi's metadata: the defaults at the latents' size (2 latents × 8 pixels).
        let settings = SeedInfo::derived_settings(&seed(None), 8, "", 50, 1.0);
        let expected =
            InvertSettings { prompt: String::new(), size: 16, steps: 50, guidance: 1.0, ..InvertSettings::default() };
        assert_eq!(settings, expected);
    }

    #[test]
    fn foreign_metadata_is_no_info() {
        for pairs in [&[("format", "pt")][..], &[("model", "someone's"), ("steps", "many")]] {
            assert_eq!(Seed::from_bytes(&with_metadata(pairs)).unwrap().info, None);
        }
    }

    #[test]
    fn bad_files_are_named_errors() {
        let full: Vec<(&str, &str)> = vec![
            ("prompt", "x"),
            ("size", "64"),
            ("steps", "10"),
            ("guidance", "2"),
            ("method", "ddim"),
            ("adjust", "0"),
            ("model", "m"),
            ("fpi_version", "0.1.0"),
        ];
        assert!(Seed::from_bytes(&with_metadata(&full)).unwrap().info.is_some());
        let without_steps: Vec<_> = full.iter().copied().filter(|(k, _)| *k != "steps").collect();
        let mut bad_number = full.clone();
        bad_number[2] = ("steps", "ten");
        let mut bad_method = full.clone();
        bad_method[4] = ("method", "edict");
        let cases = [
            (b"PK\x03\x04 a zip".to_vec(), "not a safetensors file"),
            (with_metadata(&without_steps), "metadata: missing field `steps`"),
            (with_metadata(&bad_number), "metadata steps = \"ten\" is not a number"),
            (with_metadata(&bad_method), "metadata: method must be fpi or ddim, got \"edict\""),
            (Seed { shape: [2, 2, 2, 2], ..seed(None) }.to_bytes(), "`latents` has shape [2, 2, 2, 2]"),
        ];
        for (bytes, message) in cases {
            let err = Seed::from_bytes(&bytes).unwrap_err().to_string();
            assert!(err.contains(message), "{message}: {err}");
        }
        let other = safetensors::serialize([("x", TensorView::new(Dtype::F32, vec![1], &[0; 4]).unwrap())], None);
        assert_eq!(Seed::from_bytes(&other.unwrap()).unwrap_err().to_string(), "no tensor named `latents`");
        let half = safetensors::serialize(
            [("latents", TensorView::new(Dtype::F16, vec![1, 1, 1, 2], &[0; 4]).unwrap())],
            None,
        );
        assert_eq!(Seed::from_bytes(&half.unwrap()).unwrap_err().to_string(), "`latents` is F16, expected F32");
    }
}
