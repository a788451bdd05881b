//! Stable Diffusion 1.x's configuration, built in for single-file checkpoints that carry only weights: the
//! configs of SD1.5's diffusers folder (the original `v1-inference.yaml`), its scheduler, and CLIP's tokenizer
//! files, made from the BPE merge list shipped compressed in the binary.

use std::collections::HashMap;
use std::io::Read;

/// SD1.x's UNet: 320×[1, 2, 4, 4] channels, 2 layers per level, 8 heads, text context 768.
pub const UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DConditionModel",
  "sample_size": 64,
  "in_channels": 4,
  "out_channels": 4,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "block_out_channels": [320, 640, 1280, 1280],
  "layers_per_block": 2,
  "attention_head_dim": 8,
  "cross_attention_dim": 768,
  "norm_num_groups": 32,
  "norm_eps": 1e-05,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "downsample_padding": 1,
  "mid_block_scale_factor": 1,
  "act_fn": "silu",
  "center_input_sample": false
}"#;

/// SD1.x's VAE: 128×[1, 2, 4, 4] channels, 4 latent channels, scaled by 0.18215.
pub const VAE_CONFIG: &str = r#"{
  "_class_name": "AutoencoderKL",
  "in_channels": 3,
  "out_channels": 3,
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  "block_out_channels": [128, 256, 512, 512],
  "layers_per_block": 2,
  "latent_channels": 4,
  "norm_num_groups": 32,
  "sample_size": 512,
  "scaling_factor": 0.18215,
  "act_fn": "silu"
}"#;

/// SD1.x's text encoder: OpenAI's CLIP ViT-L/14 text tower.
pub const CLIP_CONFIG: &str = r#"{
  "architectures": ["CLIPTextModel"],
  "vocab_size": 49408,
  "hidden_size": 768,
  "intermediate_size": 3072,
  "num_hidden_layers": 12,
  "num_attention_heads": 12,
  "max_position_embeddings": 77,
  "hidden_act": "quick_gelu",
  "layer_norm_eps": 1e-05
}"#;

/// SD1.x's training schedule: 1000 scaled-linear betas from 0.00085 to 0.012.
pub const SCHEDULER_CONFIG: &str = r#"{
  "_class_name": "PNDMScheduler",
  "beta_start": 0.00085,
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "clip_sample": false
}"#;

/// CLIP's merge list (`merges.txt` of SD1.5's tokenizer, gzip-compressed).
const MERGES_GZ: &[u8] = include_bytes!("../data/clip-merges.txt.gz");

/// CLIP's `merges.txt`, decompressed.
pub fn merges_txt() -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(MERGES_GZ).read_to_string(&mut text).expect("the bundled merge list is valid gzip");
    text
}

/// CLIP's `vocab.json` for the merge list `merges` (the text of `merges.txt`): the 256 byte symbols, the same with
/// the word end `</w>`, one token per merge, then the start and end tokens; ids in that order.
pub fn vocab_json(merges: &str) -> String {
    let symbols = byte_symbols();
    let mut tokens: Vec<String> = symbols.iter().map(char::to_string).collect();
    tokens.extend(symbols.iter().map(|c| format!("{c}</w>")));
    tokens.extend(merges.lines().skip(1).filter(|l| !l.is_empty()).map(|l| l.replacen(' ', "", 1)));
    tokens.extend(["<|startoftext|>".to_owned(), "<|endoftext|>".to_owned()]);
    let vocab: HashMap<&str, usize> = tokens.iter().enumerate().map(|(id, t)| (t.as_str(), id)).collect();
    serde_json::to_string(&vocab).expect("plain JSON")
}

/// GPT-2's byte-level alphabet in CLIP's order: the printable bytes as themselves, then every other byte as the
/// character 256 + its rank among them.
fn byte_symbols() -> Vec<char> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut symbols: Vec<char> = (0..256).filter(|&b| printable(b)).map(|b| char::from_u32(b).unwrap()).collect();
    let others = (0..256).filter(|&b| !printable(b)).count() as u32;
    symbols.extend((0..others).map(|n| char::from_u32(256 + n).unwrap()));
    symbols
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENIZER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-sd/tokenizer");

    #[test]
    fn the_bundled_tokenizer_files_equal_sd15s() {
        let merges = merges_txt();
        assert_eq!(merges, std::fs::read_to_string(format!("{TOKENIZER}/merges.txt")).unwrap());
        let ours: HashMap<String, u32> = serde_json::from_str(&vocab_json(&merges)).unwrap();
        let theirs: HashMap<String, u32> =
            serde_json::from_str(&std::fs::read_to_string(format!("{TOKENIZER}/vocab.json")).unwrap()).unwrap();
        assert_eq!(ours.len(), 49408);
        assert_eq!(ours, theirs);
    }
}
