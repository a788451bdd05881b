//! Loading a module's parameters from a safetensors file through burn-store, with checks that name the file,
//! the key and both shapes before any tensor is read.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::store::{
    BurnToPyTorchAdapter, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};
use burn::tensor::DType;
use regex::Regex;
use serde::Deserialize;

use crate::error::{Error, Result};

/// One tensor's entry in a safetensors header.
#[derive(Debug, Clone, Deserialize)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data_offsets: [u64; 2],
}

/// The tensors a safetensors file declares, by key, after checking that the file is complete.
pub fn read_header(path: &Path) -> Result<BTreeMap<String, TensorInfo>> {
    let bad = |message: String| Error::NotSafetensors {
        path: path.to_owned(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| bad("shorter than a safetensors header".into()))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > 100 << 20 || 8 + header_len > file_len {
        return Err(bad(format!("header length {header_len} does not fit the file's {file_len} bytes")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| Error::io(path, e))?;
    let mut entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    entries.remove("__metadata__");
    let data_len = file_len - 8 - header_len;
    let mut tensors = BTreeMap::new();
    for (key, value) in entries {
        let info: TensorInfo = serde_json::from_value(value).map_err(|e| bad(format!("entry {key:?}: {e}")))?;
        let [start, end] = info.data_offsets;
        let elements: u64 = info.shape.iter().map(|&d| d as u64).product();
        let expected = elements * dtype_size(&info.dtype).unwrap_or(0);
        if end > data_len || start > end || (dtype_size(&info.dtype).is_some() && end - start != expected) {
            return Err(bad(format!(
                "tensor {key:?} spans bytes {start}..{end} of {data_len} (truncated or corrupt file)"
            )));
        }
        tensors.insert(key, info);
    }
    Ok(tensors)
}

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" => 1,
        _ => return None,
    })
}

/// How keys of a file become the module's parameter paths.
pub struct KeyMap {
    /// Regex → replacement, applied in order (the same rules burn-store is given).
    pub rules: Vec<(&'static str, &'static str)>,
    /// File keys (after the rules) that are expected in files but not loaded into the module.
    pub ignored: Vec<&'static str>,
}

impl KeyMap {
    fn compile(&self) -> Vec<(Regex, &'static str)> {
        self.rules
            .iter()
            .map(|(from, to)| (Regex::new(from).expect("key rules are valid regexes"), *to))
            .collect()
    }

    fn apply(rules: &[(Regex, &'static str)], key: &str) -> String {
        rules
            .iter()
            .fold(key.to_owned(), |k, (re, to)| re.replace_all(&k, *to).into_owned())
    }
}

/// The weights file of a model part: the full-precision name first, then the `.fp16` variant.
pub fn find_weights(dir: &Path, stems: &[&str]) -> Result<PathBuf> {
    let mut tried = Vec::new();
    for suffix in ["safetensors", "fp16.safetensors"] {
        for stem in stems {
            let path = dir.join(format!("{stem}.{suffix}"));
            if path.is_file() {
                return Ok(path);
            }
            tried.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    Err(Error::MissingFile(format!(
        "{}: no weights file (looked for {}; .bin/.ckpt files are not read, convert them to safetensors)",
        dir.display(),
        tried.join(", ")
    )))
}

/// Loads `path` into `module`: every parameter must be in the file with its shape, and every float tensor of the
/// file must have a place (except `keys.ignored`). f16/bf16 tensors become f32.
pub fn load_module<M: ModuleSnapshot>(module: &mut M, path: &Path, keys: &KeyMap) -> Result<()> {
    let header = read_header(path)?;
    let rules = keys.compile();

    // What the module expects, in PyTorch's naming and layout.
    let expected: BTreeMap<String, Vec<usize>> = module
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();

    let mut found: BTreeMap<String, (&String, &TensorInfo)> = BTreeMap::new();
    for (key, info) in &header {
        let mapped = KeyMap::apply(&rules, key);
        if keys.ignored.contains(&mapped.as_str()) {
            continue;
        }
        if !expected.contains_key(&mapped) {
            return Err(Error::UnexpectedTensor {
                path: path.to_owned(),
                key: key.clone(),
                shape: info.shape.clone(),
            });
        }
        if !matches!(info.dtype.as_str(), "F32" | "F16" | "BF16" | "F64") {
            return Err(Error::UnsupportedDtype {
                path: path.to_owned(),
                key: key.clone(),
                dtype: info.dtype.clone(),
            });
        }
        found.insert(mapped, (key, info));
    }
    for (name, shape) in &expected {
        match found.get(name) {
            None => {
                return Err(Error::MissingTensor {
                    path: path.to_owned(),
                    key: name.clone(),
                    expected: shape.clone(),
                });
            }
            Some((key, info)) if &info.shape != shape => {
                return Err(Error::ShapeMismatch {
                    path: path.to_owned(),
                    key: (*key).clone(),
                    expected: shape.clone(),
                    found: info.shape.clone(),
                });
            }
            Some(_) => {}
        }
    }

    let mut store = keys.rules.iter().fold(SafetensorsStore::from_file(path), |store, (from, to)| {
        store.with_key_remapping(*from, *to)
    });
    store = store
        .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)))
        .skip_enum_variants(true)
        .allow_partial(false)
        .validate(true);
    let result = module.load_from(&mut store).map_err(|e| Error::NotSafetensors {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(Error::NotSafetensors {
            path: path.to_owned(),
            message: format!("{result}"),
        });
    }
    Ok(())
}
