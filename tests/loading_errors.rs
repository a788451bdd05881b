//! Bad model files give errors that name the file, the key and the shapes, never a panic.

mod common;

use common::*;
use fpi_models::Error;

fn unet_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("unet/diffusion_pytorch_model.safetensors")
}

fn load_unet_err(dir: &tempfile::TempDir) -> Error {
    load_unet(&folder(dir.path())).err().expect("loading must fail")
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
    let config = dir.path().join("vae/config.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["latent_channels"] = 8.into();
    std::fs::write(&config, json.to_string()).unwrap();
    let err = load_vae(&folder(dir.path())).err().expect("loading must fail");
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
    let config = dir.path().join("unet/config.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["norm_num_groups"] = 7.into();
    std::fs::write(&config, json.to_string()).unwrap();
    let err = load_unet_err(&dir);
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("norm_num_groups"), "{err}");
}

#[test]
fn a_folder_without_weights_is_an_error() {
    let dir = copy_part("unet");
    std::fs::remove_file(unet_file(&dir)).unwrap();
    let err = load_unet_err(&dir);
    assert!(err.to_string().contains("no weights file"), "{err}");
}
