//! Single-file checkpoints (original LDM keys, written by `tests/reference/make_single_file.py` and proven there
//! with diffusers' own `from_single_file`): every parameter fpi loads from them equals the diffusers folder's
//! (f32 exactly; f16 files the folder's weights rounded to f16); a replacement VAE takes the model's place; and
//! the models fpi does not run are refused from the header, each with a one-line error.

mod common;

use std::path::{Path, PathBuf};

use burn::store::ModuleSnapshot;
use burn::tensor::f16;
use common::*;
use fpi_models::model_files::{Form, ModelFiles};
use fpi_models::source::{Directory, ModelSource};
use fpi_models::{Error, ModelFolder};

fn single_file(name: &str) -> PathBuf {
    fixtures().join("single-file").join(name)
}

fn open(
    model: &Path,
    vae: Option<&Path>,
    configs: Option<&Path>,
) -> fpi_models::Result<ModelFolder<ModelFiles<Directory>>> {
    Ok(ModelFolder::new(pollster::block_on(ModelFiles::open(model, vae, configs))?))
}

/// A module's parameters in name order, read one at a time.
fn parameters(module: &impl ModuleSnapshot) -> Vec<burn::store::burn_pack::Tensor> {
    let mut tensors = module.collect(None, None, false);
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    tensors
}

fn values(tensor: &burn::store::burn_pack::Tensor) -> Vec<f32> {
    let bytes = tensor.to_bytes().unwrap();
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Whether `ours` has `theirs`' parameters (the same names; values equal after `round` is applied to theirs).
fn same_parameters(ours: &impl ModuleSnapshot, theirs: &impl ModuleSnapshot, round: fn(f32) -> f32) -> bool {
    let (ours, theirs) = (parameters(ours), parameters(theirs));
    assert_eq!(ours.iter().map(|t| &t.name).collect::<Vec<_>>(), theirs.iter().map(|t| &t.name).collect::<Vec<_>>());
    ours.iter().zip(&theirs).all(|(a, b)| values(a) == values(b).into_iter().map(round).collect::<Vec<_>>())
}

/// Checks that every part of `file` has the parameters of `folder`'s, `round`ed.
fn assert_same_model<S: ModelSource, T: ModelSource>(
    file: &ModelFolder<S>,
    folder: &ModelFolder<T>,
    round: fn(f32) -> f32,
) {
    assert!(same_parameters(&load_clip(file).unwrap(), &load_clip(folder).unwrap(), round), "CLIP differs");
    assert!(same_parameters(&load_vae(file).unwrap(), &load_vae(folder).unwrap(), round), "the VAE differs");
    assert!(same_parameters(&load_unet(file).unwrap(), &load_unet(folder).unwrap(), round), "the UNet differs");
}

fn exact(x: f32) -> f32 {
    x
}

fn to_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

#[test]
fn an_f32_checkpoint_loads_the_folders_parameters_exactly() {
    let tiny = tiny_model();
    let file = open(&single_file("tiny-sd.safetensors"), None, Some(&tiny)).unwrap();
    assert!(parameters(&load_unet(&file).unwrap()).len() > 200);
    assert_same_model(&file, &folder(&tiny), exact);
}

#[test]
fn an_f16_checkpoint_loads_the_folders_parameters_rounded_to_f16() {
    let tiny = tiny_model();
    let file = open(&single_file("tiny-sd.fp16.safetensors"), None, Some(&tiny)).unwrap();
    assert_same_model(&file, &folder(&tiny), to_f16);
}

#[test]
fn a_replacement_vae_from_a_checkpoint_or_its_folder_takes_the_models_place() {
    let tiny = tiny_model();
    let from_folder = open(&tiny, Some(&single_file("tiny-vae")), None).unwrap();
    let from_file = open(&tiny, Some(&single_file("tiny-vae.safetensors")), Some(&tiny)).unwrap();
    let vae = |folder: &ModelFolder<ModelFiles<Directory>>| load_vae(folder).unwrap();
    assert!(same_parameters(&vae(&from_file), &vae(&from_folder), exact));
    let own = load_vae(&folder(&tiny)).unwrap();
    assert!(!same_parameters(&vae(&from_folder), &own, exact), "the replacement VAE is another random VAE");
    // The rest still comes from the model.
    assert!(same_parameters(&load_unet(&from_folder).unwrap(), &load_unet(&folder(&tiny)).unwrap(), exact));
}

/// SD1.5's real layout at full size (`make_single_file.py --full DIR` writes DIR/sd15-ldm.safetensors in f16 from
/// DIR's random SD1.5-sized model): read with the built-in SD1.x configs, it has the folder's parameters.
#[test]
#[ignore = "needs FPI_FULL_MODEL: a folder from make_fixtures.py --full, with make_single_file.py --full's file"]
fn an_sd15_sized_checkpoint_loads_with_the_built_in_configs() {
    let dir = PathBuf::from(std::env::var("FPI_FULL_MODEL").expect("set FPI_FULL_MODEL"));
    let file = open(&dir.join("sd15-ldm.safetensors"), None, None).unwrap();
    assert_same_model(&file, &folder(&dir), to_f16);
}

/// Loads with SD1.x's built-in configs: the tiny file is not SD1.x-sized, which the error says.
#[test]
fn the_built_in_config_is_sd1x_and_says_so_when_sizes_differ() {
    let file = open(&single_file("tiny-sd.safetensors"), None, None).unwrap();
    let err = load_unet(&file).expect_err("the tiny UNet is not SD1.x-sized");
    let message = err.to_string();
    assert!(
        message.contains("(unet, sized by SD1.x's built-in config)") && message.contains("expected [320]"),
        "{message}"
    );
    let tokenizer = pollster::block_on(file.load_tokenizer()).unwrap();
    let reference = pollster::block_on(folder(&tiny_model()).load_tokenizer()).unwrap();
    for prompt in ["a photo of an astronaut riding a horse", "Ünïcode, digits 1234 and don't"] {
        assert_eq!(tokenizer.encode(prompt).unwrap(), reference.encode(prompt).unwrap());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Refused files: each error is one line and names the file and what it is.

/// A safetensors file with zero-filled f16 tensors `(key, shape)`.
fn write_checkpoint(dir: &Path, name: &str, tensors: &[(&str, &[usize])]) -> PathBuf {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, shape)| (k.to_string(), shape.to_vec(), vec![0u8; 2 * shape.iter().product::<usize>()]))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(k, shape, bytes)| {
            (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F16, shape.clone(), bytes).unwrap())
        })
        .collect();
    let path = dir.join(name);
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

const CONV_IN: &str = "model.diffusion_model.input_blocks.0.0.weight";
const TO_K: &str = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight";

fn open_err(path: &Path) -> String {
    let err: Error = pollster::block_on(ModelFiles::open(path, None, None)).expect_err("must be refused");
    let message = err.to_string();
    assert!(!message.contains('\n'), "not one line: {message}");
    assert!(message.starts_with(&path.display().to_string()), "does not name the file: {message}");
    message
}

#[test]
fn other_models_are_refused_by_their_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sd2 = write_checkpoint(d, "sd2.safetensors", &[(CONV_IN, &[320, 4, 3, 3]), (TO_K, &[320, 1024])]);
    assert!(open_err(&sd2).contains("Stable Diffusion 2.x"));
    let open_clip = write_checkpoint(d, "sd2b.safetensors", &[("cond_stage_model.model.ln_final.weight", &[1024])]);
    assert!(open_err(&open_clip).contains("Stable Diffusion 2.x"));
    let sdxl = write_checkpoint(d, "xl.safetensors", &[("conditioner.embedders.0.transformer.x", &[4])]);
    assert!(open_err(&sdxl).contains("SDXL"));
    let inpaint = write_checkpoint(d, "inpaint.safetensors", &[(CONV_IN, &[320, 9, 3, 3])]);
    assert!(open_err(&inpaint).contains("inpainting UNet (9 input channels"));
    let nothing = write_checkpoint(d, "other.safetensors", &[("backbone.layer1.weight", &[4])]);
    assert!(open_err(&nothing).contains("holds no Stable Diffusion 1.x weights"));
}

#[test]
fn pickles_truncated_files_and_unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ckpt = d.join("model.ckpt");
    std::fs::write(&ckpt, b"PK\x03\x04 a torch zip").unwrap();
    assert!(open_err(&ckpt).contains("a PyTorch pickle, which fpi never loads"));
    let disguised = d.join("model.safetensors");
    std::fs::write(&disguised, [0x80, 0x02, b'c', b'_']).unwrap();
    assert!(open_err(&disguised).contains("PyTorch pickle"));

    // A valid file whose header length starts with the byte a pickle starts with (0x80) is not one.
    let key = format!("model.diffusion_model.{}", "x".repeat(46));
    let not_a_pickle = write_checkpoint(d, "header-0x80.safetensors", &[(key.as_str(), &[1])]);
    assert_eq!(std::fs::read(&not_a_pickle).unwrap()[0], 0x80, "the header length must start with 0x80");
    assert!(!open_err(&not_a_pickle).contains("pickle"));

    let whole = std::fs::read(single_file("tiny-sd.safetensors")).unwrap();
    let truncated = d.join("truncated.safetensors");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    assert!(open_err(&truncated).contains("truncated or corrupt"));

    let extra = d.join("extra.safetensors");
    rewrite_with_extras(&single_file("tiny-sd.safetensors"), &extra);
    let message = open_err(&extra);
    assert!(message.contains("3 tensors that are not Stable Diffusion 1.x's, e.g. "), "{message}");
    assert!(message.contains("lora_te_text_model_encoder_layers_0.alpha"), "{message}");
}

/// Copies `src` with three tensors no SD1.x part has.
fn rewrite_with_extras(src: &Path, dst: &Path) {
    let bytes = std::fs::read(src).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let extra = [0u8; 4];
    let mut tensors = file.tensors();
    for key in ["lora_te_text_model_encoder_layers_0.alpha", "lora_unet_down.alpha", "embedding_manager.x"] {
        tensors.push((
            key.into(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &extra).unwrap(),
        ));
    }
    safetensors::serialize_to_file(tensors, None, dst).unwrap();
}

#[test]
fn a_vae_checkpoint_is_not_a_model_and_a_model_without_a_vae_needs_one() {
    let vae = single_file("tiny-vae.safetensors");
    let err = pollster::block_on(ModelFiles::open(&vae, None, Some(&tiny_model()))).err().unwrap().to_string();
    assert!(err.contains("holds only a VAE (give it as the replacement VAE, --vae)"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let no_vae = dir.path().join("no-vae.safetensors");
    common::rewrite_safetensors(&single_file("tiny-sd.safetensors"), &no_vae, |k| {
        (!k.starts_with("first_stage_model.")).then(|| k.to_owned())
    });
    let err = pollster::block_on(ModelFiles::open(&no_vae, None, Some(&tiny_model()))).err().unwrap().to_string();
    assert!(err.contains("lacks a part of the model"), "{err}");
    let with_vae = open(&no_vae, Some(&single_file("tiny-vae")), Some(&tiny_model()));
    assert!(with_vae.is_ok(), "a replacement VAE completes it");
    let not_a_vae = Form::folder(Directory { root: fixtures().join("photos") });
    let err = ModelFiles::new(Form::folder(Directory { root: tiny_model() }), Some(not_a_vae)).err().unwrap();
    assert!(err.to_string().contains("a replacement VAE is a VAE folder"), "{err}");
}
