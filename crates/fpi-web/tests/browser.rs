//! In headless Chromium on WebGPU: the tiny fixture model loads from Blobs and inverts the browser case
//! (`tests/fixtures/web-case.json`) to the seed and PSNR the native build recorded (`reference/web-case.*`).
//! Run: `cargo test --release --target wasm32-unknown-unknown -p fpi-web` (runner and browser: README, "Tests").
#![cfg(target_family = "wasm")]

use fpi_core::metrics::relative_error;
use fpi_core::seed::Seed;
use fpi_web::Model;
use js_sys::{Array, Function, Map, Uint8Array};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;
use web_sys::Blob;

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/", $path)).as_slice()
    };
}

/// The tiny model's files by their path in the folder.
const TINY_MODEL: &[(&str, &[u8])] = &[
    ("unet/config.json", fixture!("tiny-sd/unet/config.json")),
    ("unet/diffusion_pytorch_model.safetensors", fixture!("tiny-sd/unet/diffusion_pytorch_model.safetensors")),
    ("vae/config.json", fixture!("tiny-sd/vae/config.json")),
    ("vae/diffusion_pytorch_model.safetensors", fixture!("tiny-sd/vae/diffusion_pytorch_model.safetensors")),
    ("text_encoder/config.json", fixture!("tiny-sd/text_encoder/config.json")),
    ("text_encoder/model.fp16.safetensors", fixture!("tiny-sd/text_encoder/model.fp16.safetensors")),
    ("tokenizer/vocab.json", fixture!("tiny-sd/tokenizer/vocab.json")),
    ("tokenizer/merges.txt", fixture!("tiny-sd/tokenizer/merges.txt")),
    ("scheduler/scheduler_config.json", fixture!("tiny-sd/scheduler/scheduler_config.json")),
];
const CASE: &str = include_str!("../../../tests/fixtures/web-case.json");
const PHOTO: &[u8] = fixture!("photos/camera.png");
const REFERENCE_SEED: &[u8] = fixture!("reference/web-case.safetensors");
const REFERENCE_RESULTS: &str = include_str!("../../../tests/fixtures/reference/web-case.json");

fn blob(bytes: &[u8]) -> Blob {
    Blob::new_with_u8_array_sequence(&Array::of1(&Uint8Array::from(bytes))).unwrap()
}

fn files(skip: Option<&str>) -> Map {
    let map = Map::new();
    for (path, bytes) in TINY_MODEL.iter().filter(|(p, _)| Some(*p) != skip) {
        map.set(&JsValue::from(*path), &blob(bytes));
    }
    map
}

/// The tiny model without the file `skip`, in f32 (the native references are f32).
async fn load(skip: Option<&str>) -> Result<Model, String> {
    load_in(skip, "f32").await
}

async fn load_in(skip: Option<&str>, precision: &str) -> Result<Model, String> {
    Model::load(files(skip), "tiny-sd".into(), None, None, Some(precision.into()))
        .await
        .map_err(|e| format!("{:?}", JsValue::from(e)))
}

fn case() -> serde_json::Value {
    serde_json::from_str(CASE).unwrap()
}

fn settings() -> JsValue {
    js_sys::JSON::parse(CASE).unwrap()
}

#[wasm_bindgen_test]
async fn inverts_the_browser_case_as_the_native_build_does() {
    let model = load(None).await.unwrap();
    let inversion = model.invert(PHOTO.to_vec(), settings(), None).await.map_err(JsValue::from).unwrap();
    let (seed, reference) = (Seed::from_bytes(&inversion.seed()).unwrap(), Seed::from_bytes(REFERENCE_SEED).unwrap());
    assert_eq!(seed.shape, reference.shape);
    let settings = seed.info.expect("an inverted seed records its settings").settings;
    let expected: fpi_core::settings::InvertSettings = serde_json::from_value(case()).unwrap();
    assert_eq!(settings, expected);
    let err = relative_error(&seed.latents, &reference.latents);
    assert!(err <= 1e-4, "browser seed differs from native by {err:.2e}");
    let results: serde_json::Value = serde_json::from_str(REFERENCE_RESULTS).unwrap();
    let psnr = results["psnr"].as_f64().unwrap();
    assert!(
        (inversion.psnr() - psnr).abs() <= 0.05,
        "PSNR {:.3} dB in the browser, {psnr:.3} dB native",
        inversion.psnr()
    );
    web_sys::console::log_1(
        &format!("browser vs native: seed {err:.2e}, PSNR {:.3} / {psnr:.3} dB", inversion.psnr()).into(),
    );
}

#[wasm_bindgen_test]
async fn returning_false_from_the_progress_callback_cancels() {
    let model = load(None).await.unwrap();
    let stop = Function::new_no_args("globalThis.progressCalls = (globalThis.progressCalls ?? 0) + 1; return false;");
    let err = model.invert(PHOTO.to_vec(), settings(), Some(stop)).await.err().expect("cancelled");
    let message = format!("{:?}", JsValue::from(err));
    assert!(message.contains("cancelled"), "{message}");
    let calls = js_sys::Reflect::get(&js_sys::global(), &"progressCalls".into()).unwrap().as_f64();
    assert_eq!(calls, Some(1.0), "no evaluation may follow the one that cancelled");
}

/// `auto` is f16 only where the adapter has shader-f16 (SwiftShader has not), and f16 without it is refused.
#[wasm_bindgen_test]
async fn auto_precision_follows_the_adapters_shader_f16() {
    let model = load_in(None, "auto").await.unwrap();
    let expected = if model.shader_f16() { "f16" } else { "f32" };
    assert_eq!(model.precision(), expected);
    if !model.shader_f16() {
        let err = load_in(None, "f16").await.err().expect("f16 without shader-f16 must be refused");
        assert!(err.contains("shader-f16"), "{err}");
    }
    web_sys::console::log_1(&format!("adapter {}: runs in {expected}", model.adapter()).into());
}

#[wasm_bindgen_test]
async fn a_missing_file_is_named() {
    let err = load(Some("unet/diffusion_pytorch_model.safetensors")).await.err().expect("loading must fail");
    assert!(err.contains("unet") && err.contains("no weights file"), "{err}");
}

#[wasm_bindgen_test]
async fn bad_settings_are_named_by_the_forms_labels_before_any_model_runs() {
    let model = load(None).await.unwrap();
    let mut case = case();
    case["adjust"] = 9.into();
    let settings = js_sys::JSON::parse(&case.to_string()).unwrap();
    let err = model.invert(PHOTO.to_vec(), settings, None).await.err().expect("invalid settings");
    let message = format!("{:?}", JsValue::from(err));
    assert!(message.contains("Adjustment steps 9 is more than Steps 4"), "{message}");
}

/// An edit of the browser case's seed to the same prompt is its reconstruction, in both branches.
#[wasm_bindgen_test]
async fn an_edit_to_the_same_prompt_reconstructs_the_seed() {
    let model = load(None).await.unwrap();
    let prompt = case()["prompt"].as_str().unwrap().to_owned();
    let settings = js_sys::JSON::parse(&serde_json::json!({ "prompt": prompt }).to_string()).unwrap();
    let edit = model.edit(REFERENCE_SEED.to_vec(), settings, None).await.map_err(JsValue::from).unwrap();
    let reconstruction = model.reconstruct(REFERENCE_SEED.to_vec(), None).await.map_err(JsValue::from).unwrap();
    let pixels = |png: &[u8]| fpi_pipeline::image_io::decode(png).unwrap().into_raw();
    let (source, target, expected) = (pixels(&edit.source()), pixels(&edit.edit()), pixels(&reconstruction));
    let most = |a: &[u8]| a.iter().zip(&expected).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    assert!(most(&source) <= 1 && most(&target) <= 1, "{} {}", most(&source), most(&target));
}

/// A group norm of the map's channels in 32 groups with random γ and β, and a map with an offset per channel.
fn group_norm_case(device: &burn::tensor::Device, dims: [usize; 4]) -> (burn::nn::GroupNorm, burn::tensor::Tensor<4>) {
    use burn::tensor::{Distribution, Tensor};
    let random = |mean| Tensor::<1>::random([dims[1]], Distribution::Normal(mean, 0.5), device);
    let mut norm = burn::nn::GroupNormConfig::new(32, dims[1]).with_epsilon(1e-6).init(device);
    norm.gamma = norm.gamma.map(|p| p.map(|_| random(1.0)));
    norm.beta = norm.beta.map(|p| p.map(|_| random(0.0)));
    let x = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), device);
    let offset = Tensor::<4>::random([1, dims[1], 1, 1], Distribution::Normal(0.0, 3.0), device);
    (norm, x + offset)
}

async fn host(t: burn::tensor::Tensor<4>) -> Vec<f32> {
    t.into_data_async().await.unwrap().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// Our WGSL group norm + SiLU (`shaders/`) compiles in the browser and matches burn's composition, as it does
/// natively (`tests/shaders.rs`): groups of one slice, and of two.
#[wasm_bindgen_test]
async fn the_group_norm_kernels_match_burn_in_the_browser() {
    let device = fpi_web::webgpu_device().await.map_err(JsValue::from).unwrap();
    for dims in [[2, 64, 12, 12], [1, 64, 96, 96]] {
        let (norm, x) = group_norm_case(&device, dims);
        assert!(fpi_models::group_norm::wgsl_applies(&norm, &x));
        let ours = host(fpi_models::group_norm::by_wgsl(&norm, x.clone(), true)).await;
        let burn = host(fpi_models::group_norm::composed(&norm, x, true)).await;
        let err = relative_error(&ours, &burn);
        assert!(err <= 1e-5, "{dims:?}: {err:.2e} from burn's group norm");
    }
}

/// Not a test: times group norm + SiLU, ours against burn's, on `fpi bench`'s maps at 256² in f32, in the browser
/// (the mean of five calls after a warm-up; one element is read back, after the queue has run them all).
/// Run: `cargo test --release --target wasm32-unknown-unknown -p fpi-web -- --include-ignored group_norm_speed`.
#[wasm_bindgen_test]
#[ignore]
async fn group_norm_speed() {
    let device = fpi_web::webgpu_device().await.map_err(JsValue::from).unwrap();
    for dims in fpi_models::group_norm::benchmark_maps(256) {
        let (norm, x) = group_norm_case(&device, dims);
        for composed in [false, true] {
            let run = || match composed {
                true => fpi_models::group_norm::composed(&norm, x.clone(), true),
                false => fpi_models::group_norm::forward(&norm, x.clone(), true),
            };
            let first = |t: burn::tensor::Tensor<4>| t.slice([0..1, 0..1, 0..1, 0..1]);
            host(first(run())).await;
            let started = js_sys::Date::now();
            let mut last = None;
            for _ in 0..5 {
                last = Some(run());
            }
            host(first(last.unwrap())).await;
            let ms = (js_sys::Date::now() - started) / 5.0;
            let who = if composed { "burn" } else { "fpi" };
            web_sys::console::log_1(&format!("group norm + SiLU {dims:?}, {who}: {ms:.1} ms").into());
        }
    }
}

/// Not a test: one guided UNet step of SD1.x (random weights, f32, 256²: latents `[2, 4, 32, 32]`) profiled by
/// operation in the browser, as `fpi bench --by-op` does natively (`fpi_models::profile`; WebGPU's timestamps).
/// Run: `cargo test --release --target wasm32-unknown-unknown -p fpi-web -- --include-ignored unet_step_by_op`.
#[wasm_bindgen_test]
#[ignore]
async fn unet_step_by_op() {
    use burn::tensor::{Distribution, Tensor};
    use fpi_models::config::{UNetConfig, parse_config};
    let device = fpi_web::webgpu_device().await.map_err(JsValue::from).unwrap();
    let config: UNetConfig = parse_config(fpi_models::sd1::UNET_CONFIG, "SD1.x".as_ref()).unwrap();
    let unet = fpi_models::unet::UNet2DConditionModel::new(&config, &device);
    let latents = Tensor::<4>::random([2, 4, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let states = Tensor::<3>::random([2, 77, 768], Distribution::Normal(0.0, 1.0), &device);
    let step = || unet.forward(latents.clone(), Tensor::full([2], 501.0, &device), &states);
    let profile = fpi_models::profile::StepProfile::measure(&device, step).await.unwrap();
    web_sys::console::log_1(&format!("SD1.x UNet, batch 2, 256², f32, by operation:\n{profile}").into());
}
