//! Loading a module's parameters from a safetensors file through burn-store, with checks that name the file,
//! the key and both shapes before any tensor is read. Files are read through a [`ModelSource`] in chunks, so a
//! load never holds a whole weights file in memory (the web's wasm memory is 4 GB; SD1.5's UNet in f32 is 3.4 GB).

use std::collections::{BTreeMap, BTreeSet};

use burn::module::{ModuleVisitor, Param};
use burn::store::{ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::{Device, FloatDType, Tensor};
use regex::Regex;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::precision::LoadAs;
use crate::source::ModelSource;

/// One tensor's entry in a safetensors header.
#[derive(Debug, Clone, Deserialize)]
pub struct TensorInfo {
    /// safetensors' name of its type (`F32`, `F16`, …).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Where its bytes are, from the start of the data section.
    pub data_offsets: [u64; 2],
}

/// The tensors of a safetensors file, by key, and where its data begins.
#[derive(Debug, Clone)]
pub struct Header {
    /// The tensors' entries, by key.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// Byte offset of the data section (tensor offsets count from here).
    pub data_start: u64,
}

/// Reads the header of `path` and checks that the file holds every tensor it declares.
pub async fn read_header(source: &impl ModelSource, path: &str) -> Result<Header> {
    let bad = |message: String| Error::NotSafetensors { path: source.display(path), message };
    let file_len = source.len(path)?;
    let len = source.read(path, 0..8).await?;
    let len: [u8; 8] = len.try_into().map_err(|_| bad("shorter than a safetensors header".into()))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > 100 << 20 || 8 + header_len > file_len {
        return Err(bad(format!("header length {header_len} does not fit the file's {file_len} bytes")));
    }
    let header = source.read(path, 8..8 + header_len).await?;
    let mut entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    entries.remove("__metadata__");
    let data_len = file_len - 8 - header_len;
    let mut tensors = BTreeMap::new();
    for (key, value) in entries {
        let info: TensorInfo = serde_json::from_value(value).map_err(|e| bad(format!("entry {key:?}: {e}")))?;
        let [start, end] = info.data_offsets;
        let bytes = info.shape.iter().try_fold(dtype_size(&info.dtype).unwrap_or(0), |n, &d| n.checked_mul(d as u64));
        let Some(expected) = bytes else {
            return Err(bad(format!("tensor {key:?} has an impossibly large shape {:?}", info.shape)));
        };
        if end > data_len || start > end || (dtype_size(&info.dtype).is_some() && end - start != expected) {
            return Err(bad(format!(
                "tensor {key:?} spans bytes {start}..{end} of {data_len} (truncated or corrupt file)"
            )));
        }
        tensors.insert(key, info);
    }
    Ok(Header { tensors, data_start: 8 + header_len })
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
    pub rules: &'static [(&'static str, &'static str)],
    /// File keys (after the rules) that are expected in files but not loaded into the module.
    pub ignored: &'static [&'static str],
}

impl KeyMap {
    fn compile(&self) -> Vec<(Regex, &'static str)> {
        self.rules.iter().map(|(from, to)| (Regex::new(from).expect("key rules are valid regexes"), *to)).collect()
    }

    fn apply(rules: &[(Regex, &'static str)], key: &str) -> String {
        rules.iter().fold(key.to_owned(), |k, (re, to)| re.replace_all(&k, *to).into_owned())
    }
}

/// The weights file of a model part (`dir` is its folder, e.g. `unet`): the full-precision name first, then the
/// `.fp16` variant.
pub fn find_weights(source: &impl ModelSource, dir: &str, stems: &[&str]) -> Result<String, Error> {
    let mut tried = Vec::new();
    for suffix in ["safetensors", "fp16.safetensors"] {
        for stem in stems {
            let path = format!("{dir}/{stem}.{suffix}");
            if source.exists(&path) {
                return Ok(path);
            }
            tried.push(format!("{stem}.{suffix}"));
        }
    }
    Err(Error::NoWeights { path: source.display(dir), tried: tried.join(", ") })
}

/// Bytes of weights read and handed to the device at a time by default: bounds the host memory a load needs.
pub const CHUNK_BYTES: u64 = 64 << 20;

/// Loads `path` into `module`, streaming it in chunks of at most `chunk_bytes` (or one tensor): every
/// parameter must be in the file with its shape, and every float tensor of the file must have a place (except
/// `keys.ignored`). Float tensors become `dtype` ([`LoadAs`]: norms stay f32). `progress` hears the bytes loaded
/// so far and the total.
pub async fn load_module<M: ModuleSnapshot>(
    module: &mut M,
    source: &impl ModelSource,
    path: &str,
    keys: &KeyMap,
    chunk_bytes: u64,
    dtype: FloatDType,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let header = read_header(source, path).await?;
    let shown = source.display(path);
    let rules = keys.compile();

    let expected = expected_shapes(module);
    let device = parameter_device(module);

    let mut found: BTreeMap<String, (&String, &TensorInfo)> = BTreeMap::new();
    for (key, info) in &header.tensors {
        let mapped = KeyMap::apply(&rules, key);
        if keys.ignored.contains(&mapped.as_str()) {
            continue;
        }
        if !expected.contains_key(&mapped) {
            return Err(Error::UnexpectedTensor { path: shown, key: key.clone(), shape: info.shape.clone() });
        }
        if !matches!(info.dtype.as_str(), "F32" | "F16" | "BF16" | "F64") {
            return Err(Error::UnsupportedDtype { path: shown, key: key.clone(), dtype: info.dtype.clone() });
        }
        found.insert(mapped, (key, info));
    }
    for (name, shape) in &expected {
        match found.get(name) {
            None => {
                return Err(Error::MissingTensor { path: shown, key: name.clone(), expected: shape.clone() });
            }
            Some((key, info)) if &info.shape != shape => {
                return Err(Error::ShapeMismatch {
                    path: shown,
                    key: (*key).clone(),
                    expected: shape.clone(),
                    found: info.shape.clone(),
                });
            }
            Some(_) => {}
        }
    }

    let mut tensors: Vec<(&String, &TensorInfo)> = found.into_values().collect();
    tensors.sort_by_key(|(_, info)| info.data_offsets[0]);
    let total: u64 = tensors.iter().map(|(_, info)| info.data_offsets[1] - info.data_offsets[0]).sum();
    let mut done = 0;
    progress(done, total);
    // Parameters no chunk has set yet (burn's paths); a chunk sets some of them.
    let mut unset: Option<ParamPaths> = None;
    for chunk in chunks(&tensors, chunk_bytes) {
        let (first, last) = (chunk[0].1.data_offsets[0], chunk[chunk.len() - 1].1.data_offsets[1]);
        let data = source.read(path, header.data_start + first..header.data_start + last).await?;
        let bytes = safetensors_bytes(chunk, first, data);
        let apply = |(module, bytes): (&mut M, Vec<u8>)| apply_chunk(module, bytes, keys, dtype, &shown);
        // Each weight in a device allocation of its own size: none shares a pool page with activations, whose
        // freed space would otherwise stay reserved beside the weights.
        let missing = match &device {
            Some(device) => device.memory_persistent_allocations((&mut *module, bytes), apply),
            None => apply((module, bytes)),
        }?;
        unset = Some(match unset {
            None => missing,
            Some(before) => before.intersection(&missing).cloned().collect(),
        });
        done += last - first;
        progress(done, total);
    }
    // Every tensor was checked against the module above, so this only fails if burn-store maps a key otherwise.
    if let Some(name) = unset.unwrap_or_default().into_iter().next() {
        let message = format!("no tensor of the file was loaded into the model's {name}");
        return Err(Error::WeightsNotApplied { path: shown, message });
    }
    Ok(())
}

/// What `module` expects, in PyTorch's naming and layout (as burn-store's `BurnToPyTorchAdapter` has it: a linear
/// layer's weight transposed, a norm's gamma and beta as weight and bias), read from the parameters' shapes alone.
/// burn-store's own `collect` would first fill every lazily initialised parameter with random numbers, which for
/// SD1.5 took longer than reading its files.
fn expected_shapes<M: ModuleSnapshot>(module: &M) -> BTreeMap<String, Vec<usize>> {
    let mut visitor = ParameterShapes::default();
    module.visit(&mut visitor);
    visitor.shapes
}

/// The device of `module`'s first parameter, read without initialising it; `None` for a module without any.
fn parameter_device<M: ModuleSnapshot>(module: &M) -> Option<Device> {
    struct First(Option<Device>);
    impl ModuleVisitor for First {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.get_or_insert_with(|| param.lazy_device());
        }
    }
    let mut first = First(None);
    module.visit(&mut first);
    first.0
}

/// The [`ModuleVisitor`] behind [`expected_shapes`].
#[derive(Default)]
struct ParameterShapes {
    /// Field names down to the current one (enum variants skipped, as the load skips them).
    path: Vec<String>,
    /// burn's container types along the way (`Struct:Linear`, `Vec`, …).
    containers: Vec<String>,
    shapes: BTreeMap<String, Vec<usize>>,
}

impl ModuleVisitor for ParameterShapes {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.containers.pop();
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let mut shape = param.lazy_shape().to_vec();
        let module = self.containers.iter().rev().find(|c| c.starts_with("Struct:") || c.starts_with("Enum:"));
        let mut path = self.path.clone();
        match (module.map(String::as_str), path.last().map(String::as_str)) {
            (Some("Struct:Linear"), Some("weight")) if D == 2 => shape.reverse(),
            (Some("Struct:GroupNorm" | "Struct:LayerNorm"), Some(leaf @ ("gamma" | "beta"))) => {
                *path.last_mut().unwrap() = if leaf == "gamma" { "weight" } else { "bias" }.to_string();
            }
            _ => {}
        }
        self.shapes.insert(path.join("."), shape);
    }
}

/// Groups tensors sorted by offset into runs of adjacent tensors of at most `limit` bytes (a larger tensor is a
/// run of its own); a gap (a tensor that is not loaded) also ends a run.
fn chunks<'a>(tensors: &'a [(&'a String, &'a TensorInfo)], limit: u64) -> Vec<&'a [(&'a String, &'a TensorInfo)]> {
    let mut runs = Vec::new();
    let mut begin = 0;
    for i in 1..=tensors.len() {
        let ends = i == tensors.len() || {
            let (start, end) = (tensors[begin].1.data_offsets[0], tensors[i].1.data_offsets[1]);
            tensors[i].1.data_offsets[0] != tensors[i - 1].1.data_offsets[1] || end - start > limit
        };
        if ends {
            runs.push(&tensors[begin..i]);
            begin = i;
        }
    }
    runs
}

/// A safetensors file in memory holding `tensors`, whose data (starting at file offset `base`) is `data`.
fn safetensors_bytes(tensors: &[(&String, &TensorInfo)], base: u64, data: Vec<u8>) -> Vec<u8> {
    let entries: serde_json::Map<String, serde_json::Value> = tensors
        .iter()
        .map(|(key, info)| {
            let [start, end] = info.data_offsets;
            let entry = serde_json::json!({
                "dtype": info.dtype,
                "shape": info.shape,
                "data_offsets": [start - base, end - base],
            });
            ((*key).clone(), entry)
        })
        .collect();
    let mut bytes = safetensors_head(entries);
    bytes.extend_from_slice(&data);
    bytes
}

/// The length prefix and header of a safetensors file with the tensor `entries` (`dtype`, `shape`, `data_offsets`).
pub(crate) fn safetensors_head(entries: serde_json::Map<String, serde_json::Value>) -> Vec<u8> {
    let mut header = serde_json::to_vec(&entries).expect("plain JSON");
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut head = (header.len() as u64).to_le_bytes().to_vec();
    head.extend(header);
    head
}

/// Paths of a module's parameters, in burn's naming.
type ParamPaths = BTreeSet<String>;

/// Applies the tensors of one in-memory safetensors file to `module`; returns the parameters it left unset.
fn apply_chunk<M: ModuleSnapshot>(
    module: &mut M,
    bytes: Vec<u8>,
    keys: &KeyMap,
    dtype: FloatDType,
    path: &std::path::Path,
) -> Result<ParamPaths> {
    let mut store = keys
        .rules
        .iter()
        .fold(SafetensorsStore::from_bytes(Some(bytes)), |store, &(from, to)| store.with_key_remapping(from, to));
    store = store
        .with_from_adapter(PyTorchToBurnAdapter.chain(LoadAs(dtype)))
        .skip_enum_variants(true)
        .allow_partial(true)
        .validate(false);
    let bad = |message: String| Error::WeightsNotApplied { path: path.to_owned(), message };
    let result = module.load_from(&mut store).map_err(|e| bad(e.to_string()))?;
    if !result.errors.is_empty() {
        return Err(bad(format!("{result}")));
    }
    Ok(result.missing.into_iter().map(|(name, _)| name).collect())
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::nn::conv::{Conv2d, Conv2dConfig};
    use burn::nn::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
    use burn::store::BurnToPyTorchAdapter;
    use burn::tensor::Device;

    #[derive(Module, Debug)]
    enum Either {
        Conv(Conv2d),
        Linear(Linear),
    }

    #[derive(Module, Debug)]
    struct Probe {
        linear: Linear,
        norm: GroupNorm,
        layer: LayerNorm,
        convs: Vec<Conv2d>,
        either: Vec<Either>,
    }

    #[test]
    fn expected_shapes_are_burn_stores_pytorch_view_without_initialising() {
        #[allow(deprecated)]
        let device = Device::ndarray();
        let probe = Probe {
            linear: LinearConfig::new(3, 5).init(&device),
            norm: GroupNormConfig::new(2, 4).init(&device),
            layer: LayerNormConfig::new(6).init(&device),
            convs: vec![Conv2dConfig::new([2, 3], [3, 3]).init(&device)],
            either: vec![
                Either::Linear(LinearConfig::new(2, 7).init(&device)),
                Either::Conv(Conv2dConfig::new([1, 2], [1, 1]).init(&device)),
            ],
        };
        let ours = super::expected_shapes(&probe);
        assert!(!probe.linear.weight.is_initialized(), "reading the shapes initialised a parameter");
        let theirs: super::BTreeMap<String, Vec<usize>> = probe
            .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
            .into_iter()
            .map(|t| (t.name.clone(), t.shape.to_vec()))
            .collect();
        assert_eq!(ours, theirs);
        assert_eq!(ours["linear.weight"], [5, 3]);
        assert!(ours.contains_key("norm.weight") && ours.contains_key("layer.bias"));
    }
    use super::*;

    fn info(start: u64, end: u64) -> TensorInfo {
        TensorInfo { dtype: "U8".into(), shape: vec![(end - start) as usize], data_offsets: [start, end] }
    }

    /// The runs `chunks` makes of tensors at these byte ranges, as index lists.
    fn runs(ranges: &[(u64, u64)], limit: u64) -> Vec<Vec<usize>> {
        let names: Vec<String> = (0..ranges.len()).map(|i| i.to_string()).collect();
        let infos: Vec<TensorInfo> = ranges.iter().map(|&(a, b)| info(a, b)).collect();
        let tensors: Vec<(&String, &TensorInfo)> = names.iter().zip(&infos).collect();
        chunks(&tensors, limit).iter().map(|run| run.iter().map(|(name, _)| name.parse().unwrap()).collect()).collect()
    }

    #[test]
    fn runs_fill_up_to_the_limit_and_no_further() {
        assert_eq!(runs(&[(0, 4), (4, 8), (8, 12)], 8), vec![vec![0, 1], vec![2]]);
        assert_eq!(runs(&[(0, 4), (4, 9)], 8), vec![vec![0], vec![1]]);
    }

    #[test]
    fn a_tensor_over_the_limit_is_a_run_of_its_own() {
        assert_eq!(runs(&[(0, 2), (2, 30), (30, 32)], 8), vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn a_gap_ends_a_run() {
        assert_eq!(runs(&[(0, 2), (4, 6)], 64), vec![vec![0], vec![1]]);
        assert!(runs(&[], 64).is_empty());
    }

    #[test]
    fn a_run_becomes_a_file_with_offsets_from_its_start() {
        let names = ["b".to_string(), "c".to_string()];
        let infos = [info(10, 14), info(14, 16)];
        let run: Vec<(&String, &TensorInfo)> = names.iter().zip(&infos).collect();
        let bytes = safetensors_bytes(&run, 10, vec![1, 2, 3, 4, 5, 6]);
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.tensor("b").unwrap().data(), &[1, 2, 3, 4]);
        assert_eq!(file.tensor("c").unwrap().data(), &[5, 6]);
    }
}
