//! Shared helpers of the cross-crate tests: fixture paths, reference tensors, the device under test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::{Device, Tensor, TensorData};
use fpi_models::ModelFolder;
use fpi_models::clip::ClipTextModel;
use fpi_models::device::Backend;
use fpi_models::source::{Directory, ModelSource};
use fpi_models::unet::UNet2DConditionModel;
use fpi_models::vae::AutoencoderKL;
use safetensors::SafeTensors;

/// The workspace's `tests/fixtures/` (these helpers also serve tests built by member crates).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("tests/fixtures"))
        .find(|dir| dir.is_dir())
        .expect("tests/fixtures above the crate")
}

/// The tiny SD1.5-structured model written by `tests/reference/make_fixtures.py`.
pub fn tiny_model() -> PathBuf {
    fixtures().join("tiny-sd")
}

/// The device the tests run on: `FPI_TEST_DEVICE` = ndarray (default), wgpu or flex. Opened once per process.
pub fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let name = std::env::var("FPI_TEST_DEVICE").unwrap_or_else(|_| "ndarray".into());
            let backend: Backend = name.parse().unwrap();
            backend.open().unwrap()
        })
        .clone()
}

/// The model folder `dir` on disk.
pub fn folder(dir: &Path) -> ModelFolder<Directory> {
    ModelFolder::open(dir).unwrap()
}

/// `folder`'s UNet on the test device.
pub fn load_unet<S: ModelSource>(folder: &ModelFolder<S>) -> fpi_models::Result<UNet2DConditionModel> {
    pollster::block_on(folder.load_unet(&device(), &mut |_, _, _| {}))
}

/// `folder`'s VAE on the test device.
pub fn load_vae<S: ModelSource>(folder: &ModelFolder<S>) -> fpi_models::Result<AutoencoderKL> {
    pollster::block_on(folder.load_vae(&device(), &mut |_, _, _| {}))
}

/// `folder`'s text encoder on the test device.
pub fn load_clip<S: ModelSource>(folder: &ModelFolder<S>) -> fpi_models::Result<ClipTextModel> {
    pollster::block_on(folder.load_clip(&device(), &mut |_, _, _| {}))
}

/// Reference tensors saved by the Python script.
pub struct References {
    bytes: Vec<u8>,
}

impl References {
    pub fn open(path: &Path) -> Self {
        Self { bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) }
    }

    fn view(&self, key: &str) -> safetensors::tensor::TensorView<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap().tensor(key).unwrap_or_else(|_| panic!("no reference {key}"))
    }

    /// A float tensor as (values, shape).
    pub fn floats(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
        let view = self.view(key);
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{key}");
        let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        (values, view.shape().to_vec())
    }

    /// A float64 tensor's values.
    pub fn doubles(&self, key: &str) -> Vec<f64> {
        let view = self.view(key);
        assert_eq!(view.dtype(), safetensors::Dtype::F64, "{key}");
        view.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
    }

    /// An integer tensor as i64 values.
    pub fn ints(&self, key: &str) -> Vec<i64> {
        let view = self.view(key);
        assert_eq!(view.dtype(), safetensors::Dtype::I64, "{key}");
        view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    }

    /// A float reference as a tensor on `device`.
    pub fn tensor<const D: usize>(&self, key: &str, device: &Device) -> Tensor<D> {
        let (values, shape) = self.floats(key);
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

/// The model references (`tests/fixtures/reference/models.safetensors`).
pub fn model_references() -> References {
    References::open(&fixtures().join("reference/models.safetensors"))
}

/// The variant models (`tests/fixtures/tiny-variants/`): the tiny model's options set the other way.
pub fn variants() -> PathBuf {
    fixtures().join("tiny-variants")
}

/// The variant models' references (`tests/fixtures/reference/variants.safetensors`).
pub fn variant_references() -> References {
    References::open(&fixtures().join("reference/variants.safetensors"))
}

/// A tensor's values in host memory.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// ‖a − b‖ / ‖b‖ (the core's own measure, so tests and `fpi` report the same number).
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    fpi_core::metrics::relative_error(a, b)
}

/// Asserts `actual` matches the reference `key` to `tol` relative L2 error, with the same shape.
pub fn assert_close<const D: usize>(actual: Tensor<D>, refs: &References, key: &str, tol: f64) {
    let (expected, shape) = refs.floats(key);
    assert_eq!(actual.dims().to_vec(), shape, "{key}: shape");
    let err = rel_l2(&values(actual), &expected);
    eprintln!("{key}: relative L2 error {err:.3e}");
    assert!(err <= tol, "{key}: relative L2 error {err:.3e} > {tol:.0e}");
}

/// Copies a safetensors file with its keys renamed (and entries dropped where `rename` returns None).
pub fn rewrite_safetensors(src: &Path, dst: &Path, rename: impl Fn(&str) -> Option<String>) {
    let bytes = std::fs::read(src).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        tensors.tensors().into_iter().filter_map(|(k, v)| rename(&k).map(|k| (k, v))).collect();
    safetensors::serialize_to_file(renamed, None, dst).unwrap();
}

/// A copy of the tiny model's part `part` (config and other files) in a fresh temporary folder.
pub fn copy_part(part: &str) -> tempfile::TempDir {
    copy_part_of(&tiny_model(), part)
}

/// A copy of the part `part` of the model folder `model` in a fresh temporary folder.
pub fn copy_part_of(model: &Path, part: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_folder(&model.join(part), &dir.path().join(part));
    dir
}

/// Copies the files of the folder `from` into a new folder `to`.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A copy of the whole tiny model in a fresh temporary folder called `tiny-sd`, to be edited by a test.
pub fn copy_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for part in ["scheduler", "text_encoder", "tokenizer", "unet", "vae"] {
        copy_folder(&tiny_model().join(part), &dir.path().join("tiny-sd").join(part));
    }
    dir
}

/// The model folder of a [`copy_model`] copy.
pub fn copied_model(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("tiny-sd")
}

/// Rewrites `part/config.json` under the model folder `root` with `edit` applied.
pub fn edit_config(root: &Path, part: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = root.join(part).join("config.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, json.to_string()).unwrap();
}
