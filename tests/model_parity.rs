//! The SD1.5 networks in burn against diffusers/transformers on the tiny fixture model (≤ 1e-4 relative L2).
//! Runs on `FPI_TEST_DEVICE` (ndarray by default; wgpu in CI too).

mod common;

use burn::tensor::{Tensor, TensorData};
use common::*;
use fpi_models::ModelFolder;
use fpi_models::config::Activation;
use fpi_models::source::Directory;
use fpi_models::transformer::Projection;

const TOL: f64 = 1e-4;

fn clip_ids(refs: &References) -> Vec<Vec<u32>> {
    refs.ints("clip.ids").chunks(77).map(|row| row.iter().map(|&i| i as u32).collect()).collect()
}

#[test]
fn clip_last_hidden_state_matches_transformers() {
    let (refs, device) = (model_references(), device());
    let clip = load_clip(&folder(&tiny_model())).unwrap();
    let hidden = clip.forward(&clip_ids(&refs), &device).unwrap();
    assert_close(hidden, &refs, "clip.hidden", TOL);
}

#[test]
fn clip_loads_keys_without_the_text_model_prefix() {
    let (refs, device) = (model_references(), device());
    let dir = copy_part("text_encoder");
    let file = dir.path().join("text_encoder/model.fp16.safetensors");
    rewrite_safetensors(&file.clone(), &file, |k| Some(k.strip_prefix("text_model.").unwrap().to_owned()));
    let clip = load_clip(&folder(dir.path())).unwrap();
    assert_close(clip.forward(&clip_ids(&refs), &device).unwrap(), &refs, "clip.hidden", TOL);
}

fn unet_eps(batch: &str, folder: &ModelFolder<Directory>) {
    let (refs, device) = (model_references(), device());
    let unet = load_unet(folder).unwrap();
    let sample: Tensor<4> = refs.tensor(&format!("unet.{batch}.sample"), &device);
    let context: Tensor<3> = refs.tensor(&format!("unet.{batch}.context"), &device);
    let t = refs.ints(&format!("unet.{batch}.timestep"))[0] as f32;
    let timesteps = Tensor::<1>::from_data(TensorData::new(vec![t; sample.dims()[0]], [sample.dims()[0]]), &device);
    let eps = unet.forward(sample, timesteps, &context);
    assert_close(eps, &refs, &format!("unet.{batch}.eps"), TOL);
}

#[test]
fn unet_eps_matches_diffusers_batch_1() {
    unet_eps("b1", &folder(&tiny_model()));
}

#[test]
fn unet_eps_matches_diffusers_batch_2() {
    unet_eps("b2", &folder(&tiny_model()));
}

/// Weights stream in chunks (the web's memory cannot hold a whole file): with 64 KiB chunks the tiny UNet's
/// 4.4 MB file loads in many pieces, and tensors larger than a chunk come alone.
#[test]
fn unet_streamed_in_small_chunks_matches_diffusers() {
    let mut folder = folder(&tiny_model());
    folder.chunk_bytes = 64 << 10;
    unet_eps("b1", &folder);
}

fn check_vae(dir: &std::path::Path, band_bytes: Option<usize>, refs: &References) {
    let device = device();
    let mut vae = load_vae(&folder(dir)).unwrap();
    if let Some(bytes) = band_bytes {
        vae.band_bytes = bytes;
    }
    let posterior = vae.encode(refs.tensor("vae.image", &device));
    assert_close(posterior.mean, refs, "vae.mean", TOL);
    assert_close(posterior.logvar, refs, "vae.logvar", TOL);
    assert_close(vae.decode(refs.tensor("vae.latent", &device)), refs, "vae.decoded", TOL);
}

#[test]
fn vae_matches_diffusers_with_sd15_attention_names() {
    check_vae(&tiny_model(), None, &model_references());
}

/// With a budget of 4 KiB a band, the tiny VAE's 16-channel 32×32 maps split into bands of 2 rows: convolution
/// halos, strided downsampling across band edges and group norm statistics over bands are all exercised.
#[test]
fn vae_in_bands_of_rows_matches_diffusers() {
    check_vae(&tiny_model(), Some(4 << 10), &model_references());
}

#[test]
fn vae_matches_diffusers_with_new_attention_names() {
    let dir = copy_part("vae");
    let file = dir.path().join("vae/diffusion_pytorch_model.safetensors");
    let mut renamed = false;
    let new_names = [(".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0.")];
    rewrite_safetensors(&file.clone(), &file, |k| {
        Some(new_names.iter().fold(k.to_owned(), |k, (old, new)| k.replace(old, new)))
    });
    let source = fpi_models::source::Directory { root: dir.path().into() };
    let header =
        pollster::block_on(fpi_models::weights::read_header(&source, "vae/diffusion_pytorch_model.safetensors"));
    for k in header.unwrap().tensors.keys() {
        renamed |= k.contains(".to_q.");
        assert!(!k.contains(".query."), "{k}");
    }
    assert!(renamed);
    check_vae(dir.path(), None, &model_references());
}

// The variants (tests/fixtures/tiny-variants/) set the options the tiny model sets one way the other way, so the
// model code's other branches are compared with diffusers and transformers too.

/// The variant UNet's ε for a batch of two rows at different timesteps.
fn check_variant_unet(dir: &std::path::Path) {
    let (refs, device) = (variant_references(), device());
    let unet = load_unet(&folder(dir)).unwrap();
    let timesteps: Vec<f32> = refs.ints("unet.timesteps").iter().map(|&t| t as f32).collect();
    let timesteps = Tensor::<1>::from_data(TensorData::new(timesteps.clone(), [timesteps.len()]), &device);
    let eps = unet.forward(refs.tensor("unet.sample", &device), timesteps, &refs.tensor("unet.context", &device));
    assert_close(eps, &refs, "unet.eps", TOL);
}

/// Linear projections, per-block heads (2, 4), resnets (1, 2) and transformer depths (1, 2), both levels with
/// cross-attention, sin-first timestep features with `freq_shift` 1.
#[test]
fn variant_unet_matches_diffusers() {
    let unet = load_unet(&folder(&variants())).unwrap();
    let (level0, level1) = (&unet.down_blocks[0], &unet.down_blocks[1]);
    assert!(matches!(level0.attentions[0].proj_in, Projection::Linear(_)));
    assert_eq!((level0.attentions[0].transformer_blocks[0].attn1.heads, level1.resnets.len()), (2, 2));
    assert_eq!(
        (level1.attentions[0].transformer_blocks.len(), level1.attentions[0].transformer_blocks[0].attn2.heads),
        (2, 4)
    );
    assert_eq!((unet.flip_sin_to_cos, unet.freq_shift), (false, 1));
    check_variant_unet(&variants());
}

/// `num_attention_heads` (which diffusers refuses, but names what SD1.x's `attention_head_dim` means) takes
/// precedence over `attention_head_dim`.
#[test]
fn variant_unet_with_num_attention_heads_matches_diffusers() {
    let dir = copy_part_of(&variants(), "unet");
    edit_config(dir.path(), "unet", |json| {
        json["num_attention_heads"] = json["attention_head_dim"].take();
        json["attention_head_dim"] = 1.into();
    });
    check_variant_unet(dir.path());
}

/// No quantisation convolutions, no mid-block attention.
#[test]
fn variant_vae_matches_diffusers() {
    let vae = load_vae(&folder(&variants())).unwrap();
    assert!(vae.quant_conv.is_none() && vae.post_quant_conv.is_none());
    assert!(vae.encoder.mid_block.attentions.is_empty() && vae.decoder.mid_block.attentions.is_empty());
    check_vae(&variants(), None, &variant_references());
}

/// Exact GELU; f32 weights without the `text_model.` prefix (as transformers 5 writes them).
#[test]
fn variant_clip_matches_transformers() {
    let (refs, device) = (variant_references(), device());
    let clip = load_clip(&folder(&variants())).unwrap();
    assert_eq!(clip.encoder.layers[0].mlp.activation, Activation::Gelu);
    assert_close(clip.forward(&clip_ids(&refs), &device).unwrap(), &refs, "clip.hidden", TOL);
}
