//! Bad model files give errors that name the file, the key and the shapes, never a panic.

mod common;

use common::*;
use fpi_models::Error;

fn unet_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("unet/diffusion_pytorch_model.safetensors")
}

fn load_unet_err(dir: &tempfile::TempDir) -> Error {
    load_unet(&folder(dir.path())).expect_err("loading must fail")
}

#[test]
fn truncated_weights_are_an_error() {
    let dir = copy_part("unet");
    let file = unet_file(&dir);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_unet_err(&dir);
    assert!(matches!(err, Error::NotSafetensors { .. }), "{err}");
    assert!(err.to_string().contains("diffusion_pytorch_model.safetensors"), "{err}");
}

#[test]
fn a_file_of_another_format_is_an_error() {
    let dir = copy_part("unet");
    std::fs::write(unet_file(&dir), b"PK\x03\x04 this is a zip file, not safetensors").unwrap();
    let err = load_unet_err(&dir);
    assert!(matches!(err, Error::NotSafetensors { .. }), "{err}");
}

#[test]
fn a_missing_tensor_is_named_with_its_shape() {
    let dir = copy_part("unet");
    let file = unet_file(&dir);
    rewrite_safetensors(&file.clone(), &file, |k| (k != "conv_in.weight").then(|| k.to_owned()));
    match load_unet_err(&dir) {
        Error::MissingTensor { key, expected, .. } => {
            assert_eq!(key, "conv_in.weight");
            assert_eq!(expected, vec![32, 4, 3, 3]);
        }
        err => panic!("unexpected error {err}"),
    }
}

#[test]
fn an_unexpected_tensor_is_named() {
    let dir = copy_part("unet");
    let file = unet_file(&dir);
    rewrite_safetensors(&file.clone(), &file, |k| Some(k.replace("conv_out.bias", "conv_out.extra")));
    let err = load_unet_err(&dir);
    assert!(
        matches!(&err, Error::UnexpectedTensor { key, shape, .. } if key == "conv_out.extra" && shape == &vec![4]),
        "{err}"
    );
    assert!(err.to_string().contains("conv_out.extra"), "{err}");
}

#[test]
fn a_mis_shaped_tensor_names_both_shapes() {
    // The tiny VAE's config with more latent channels than its weights have.
    let dir = copy_part("vae");
    edit_config(dir.path(), "vae", |json| json["latent_channels"] = 8.into());
    let err = load_vae(&folder(dir.path())).expect_err("loading must fail");
    match &err {
        Error::ShapeMismatch { key, expected, found, .. } => {
            assert!(
                key.starts_with("encoder.conv_out")
                    || key.starts_with("quant_conv")
                    || key.starts_with("decoder.conv_in")
                    || key.starts_with("post_quant_conv"),
                "{err}"
            );
            assert_ne!(expected, found);
        }
        _ => panic!("unexpected error {err}"),
    }
    let message = err.to_string();
    assert!(message.contains("expected") && message.contains("shape"), "{message}");
}

#[test]
fn a_config_the_models_cannot_build_is_an_error() {
    let dir = copy_part("unet");
    edit_config(dir.path(), "unet", |json| json["norm_num_groups"] = 7.into());
    let err = load_unet_err(&dir);
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("norm_num_groups"), "{err}");
}

#[test]
fn a_folder_without_weights_is_an_error() {
    let dir = copy_part("unet");
    std::fs::remove_file(unet_file(&dir)).unwrap();
    let err = load_unet_err(&dir);
    assert!(matches!(err, Error::NoWeights { .. }), "{err}");
    assert!(err.to_string().contains("no weights file"), "{err}");
}

/// The error loading `part` of the model folder `root` gives.
fn load_err(root: &std::path::Path, part: &str) -> Error {
    let folder = folder(root);
    match part {
        "unet" => load_unet(&folder).err(),
        "vae" => load_vae(&folder).err(),
        _ => load_clip(&folder).err(),
    }
    .expect("loading must fail")
}

/// Copies the safetensors file `file` with the tensor `key` relabelled as `dtype` (its bytes kept: `dtype` must be as
/// wide as the tensor's type).
fn relabel_dtype(file: &std::path::Path, key: &str, dtype: safetensors::Dtype) {
    let bytes = std::fs::read(file).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let dtype = if k == key { dtype } else { v.dtype() };
            let view = safetensors::tensor::TensorView::new(dtype, v.shape().to_vec(), v.data()).unwrap();
            (k, view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, file).unwrap();
}

#[test]
fn a_weight_of_an_unsupported_dtype_is_named() {
    let dir = copy_part("unet");
    relabel_dtype(&unet_file(&dir), "conv_out.bias", safetensors::Dtype::I32);
    let err = load_unet_err(&dir);
    assert!(
        matches!(&err, Error::UnsupportedDtype { key, dtype, .. } if key == "conv_out.bias" && dtype == "I32"),
        "{err}"
    );
    assert!(err.to_string().contains("unsupported dtype I32"), "{err}");
}

/// CLIP's token table is read apart from the other weights (into host memory), with its own dtype check.
#[test]
fn a_token_table_of_an_unsupported_dtype_is_named() {
    let dir = copy_part("text_encoder");
    let file = dir.path().join("text_encoder/model.fp16.safetensors");
    relabel_dtype(&file, "text_model.embeddings.token_embedding.weight", safetensors::Dtype::I16);
    let err = load_err(dir.path(), "text_encoder");
    assert!(
        matches!(&err, Error::UnsupportedDtype { key, dtype, .. }
            if key == "text_model.embeddings.token_embedding.weight" && dtype == "I16"),
        "{err}"
    );
}

#[test]
fn a_vae_for_images_that_are_not_rgb_is_an_error_at_load() {
    for (option, value) in [("in_channels", 4), ("out_channels", 1)] {
        let dir = copy_part("vae");
        edit_config(dir.path(), "vae", |json| json[option] = value.into());
        let err = load_err(dir.path(), "vae");
        assert!(matches!(err, Error::Config { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("{option} = {value} is not supported (only 3 (RGB images))")),
            "{err}"
        );
    }
}

#[test]
fn options_the_models_do_not_implement_are_an_error_at_load() {
    let cases = [
        ("unet", "resnet_out_scale_factor", serde_json::json!(2.0)),
        ("unet", "resnet_skip_time_act", serde_json::json!(true)),
        ("unet", "time_embedding_act_fn", serde_json::json!("silu")),
        ("vae", "act_fn", serde_json::json!("gelu")),
        ("vae", "shift_factor", serde_json::json!(0.1159)),
        ("text_encoder", "hidden_act", serde_json::json!("gelu_new")),
    ];
    for (part, option, value) in cases {
        let dir = copy_part(part);
        edit_config(dir.path(), part, |json| json[option] = value.clone());
        let err = load_err(dir.path(), part);
        assert!(matches!(err, Error::Config { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(&format!("{part}/config.json: bad config:")), "{message}");
        // serde names an unknown enum value by itself; the raw-option check names the option and the value.
        let named = if part == "text_encoder" {
            format!("unknown variant `{}`", value.as_str().unwrap())
        } else {
            format!("{option} = {value} is not supported")
        };
        assert!(message.contains(&named), "{message}");
    }
}

#[test]
fn parts_that_do_not_fit_together_are_an_error_naming_the_folder() {
    let cases: [(&str, &str, serde_json::Value, &str); 3] = [
        ("vae", "latent_channels", 8.into(), "the VAE's latents have 8 (latent_channels)"),
        ("text_encoder", "hidden_size", 64.into(), "CLIP gives 64 (hidden_size)"),
        ("text_encoder", "max_position_embeddings", 76.into(), "max_position_embeddings = 76"),
    ];
    for (part, option, value, expected) in cases {
        let dir = copy_model();
        let root = copied_model(&dir);
        edit_config(&root, part, |json| json[option] = value);
        let err = pollster::block_on(folder(&root).check_parts()).expect_err("the parts must not fit");
        assert!(matches!(err, Error::Config { .. }), "{err}");
        let message = err.to_string();
        assert!(message.starts_with(&root.display().to_string()) && message.contains(expected), "{message}");
    }
    pollster::block_on(folder(&tiny_model()).check_parts()).unwrap();
}

#[test]
fn a_path_that_is_not_a_folder_is_an_error() {
    let file = tiny_model().join("model_index.json");
    let err = fpi_models::ModelFolder::open(&file).expect_err("a file is not a model folder");
    assert!(matches!(&err, Error::NotAFolder { path } if path == &file), "{err}");
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[test]
fn a_missing_part_is_named() {
    let dir = copy_part("unet");
    let err = load_err(dir.path(), "vae");
    assert!(matches!(&err, Error::MissingFile { path, .. } if path.ends_with("vae")), "{err}");
    assert!(err.to_string().contains("not found (a model folder needs vae/)"), "{err}");
    std::fs::remove_file(dir.path().join("unet/config.json")).unwrap();
    let err = load_unet_err(&dir);
    assert!(matches!(&err, Error::MissingFile { path, .. } if path.ends_with("unet/config.json")), "{err}");
}

#[test]
fn token_ids_clip_cannot_take_are_an_error() {
    let clip = load_clip(&folder(&variants())).unwrap();
    let err = clip.forward(&[vec![0; 76]], &device()).expect_err("a short row");
    assert!(matches!(err, Error::TokenCount { expected: 77, found: 76 }), "{err}");
    let mut ids = vec![0; 77];
    ids[5] = 1000;
    let err = clip.forward(&[ids], &device()).expect_err("an id past the vocabulary");
    assert!(matches!(err, Error::TokenOutOfRange { id: 1000, vocab: 1000 }), "{err}");
    assert!(err.to_string().contains("token id 1000 is outside the vocabulary of 1000"), "{err}");
}
