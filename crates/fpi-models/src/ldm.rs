//! The original CompVis/LDM names of a Stable Diffusion 1.x checkpoint's tensors and their diffusers names, as
//! tables: each row renames one block's prefix (which depends on the config's levels and layers) and then the
//! tensors inside the block by the block's kind.

use crate::config::{DownBlockType, UNetConfig, UpBlockType, VaeConfig};

/// The prefix of the UNet's tensors in a full checkpoint.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
/// The prefix of the VAE's tensors in a full checkpoint (a standalone VAE file has none).
pub const VAE_PREFIX: &str = "first_stage_model.";
/// The prefix of the CLIP text encoder's tensors (transformers' names follow).
pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.";

/// Renames inside a UNet resnet block.
const UNET_RESNET: &[(&str, &str)] = &[
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
];
/// Renames inside a VAE resnet block (its norms and convolutions already have diffusers' names).
const VAE_RESNET: &[(&str, &str)] = &[("nin_shortcut.", "conv_shortcut.")];
/// Renames inside the VAE's attention block, whose projections are 1×1 convolutions in the checkpoint.
const VAE_ATTENTION: &[(&str, &str)] =
    &[("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0.")];

/// What a block holds, which says how the names inside it change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inside {
    /// Names unchanged (transformers, convolutions, norms).
    Same,
    /// A UNet resnet.
    UNetResnet,
    /// A VAE resnet.
    VaeResnet,
    /// The VAE's attention: renamed, and its `[C, C, 1, 1]` weights read as `[C, C]`.
    VaeAttention,
}

impl Inside {
    fn renames(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Inside::Same => &[],
            Inside::UNetResnet => UNET_RESNET,
            Inside::VaeResnet => VAE_RESNET,
            Inside::VaeAttention => VAE_ATTENTION,
        }
    }
}

/// One block: its prefix in the checkpoint, its prefix in diffusers, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    ldm: String,
    diffusers: String,
    inside: Inside,
}

/// A checkpoint key's diffusers name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The key in the part's diffusers file.
    pub key: String,
    /// Whether a 1×1 convolution's weight `[C, C, 1, 1]` is read as a linear one `[C, C]`.
    pub squeeze: bool,
}

/// The key map of one part of a checkpoint.
#[derive(Debug, Clone)]
pub struct KeyTable {
    rows: Vec<Row>,
}

impl KeyTable {
    /// The UNet's map for `config` (its levels, layers per level, and which levels have attention).
    pub fn unet(config: &UNetConfig) -> Self {
        let mut rows = Rows::new(UNET_PREFIX);
        rows.add("time_embed.0.", "time_embedding.linear_1.", Inside::Same);
        rows.add("time_embed.2.", "time_embedding.linear_2.", Inside::Same);
        rows.add("input_blocks.0.0.", "conv_in.", Inside::Same);
        let levels = config.block_out_channels.len();
        let mut block = 1;
        for (i, kind) in config.down_block_types.iter().enumerate() {
            for j in 0..config.layers_per_block.get(i) {
                rows.add(
                    &format!("input_blocks.{block}.0."),
                    &format!("down_blocks.{i}.resnets.{j}."),
                    Inside::UNetResnet,
                );
                if matches!(kind, DownBlockType::CrossAttnDownBlock2D) {
                    rows.add(
                        &format!("input_blocks.{block}.1."),
                        &format!("down_blocks.{i}.attentions.{j}."),
                        Inside::Same,
                    );
                }
                block += 1;
            }
            if i + 1 < levels {
                rows.add(
                    &format!("input_blocks.{block}.0.op."),
                    &format!("down_blocks.{i}.downsamplers.0.conv."),
                    Inside::Same,
                );
                block += 1;
            }
        }
        rows.add("middle_block.0.", "mid_block.resnets.0.", Inside::UNetResnet);
        rows.add("middle_block.1.", "mid_block.attentions.0.", Inside::Same);
        rows.add("middle_block.2.", "mid_block.resnets.1.", Inside::UNetResnet);
        let mut block = 0;
        for (i, kind) in config.up_block_types.iter().enumerate() {
            let attention = matches!(kind, UpBlockType::CrossAttnUpBlock2D);
            let layers = config.layers_per_block.get(levels - 1 - i) + 1;
            for j in 0..layers {
                rows.add(
                    &format!("output_blocks.{block}.0."),
                    &format!("up_blocks.{i}.resnets.{j}."),
                    Inside::UNetResnet,
                );
                if attention {
                    rows.add(
                        &format!("output_blocks.{block}.1."),
                        &format!("up_blocks.{i}.attentions.{j}."),
                        Inside::Same,
                    );
                }
                if j + 1 == layers && i + 1 < levels {
                    let at = if attention { 2 } else { 1 };
                    rows.add(
                        &format!("output_blocks.{block}.{at}.conv."),
                        &format!("up_blocks.{i}.upsamplers.0.conv."),
                        Inside::Same,
                    );
                }
                block += 1;
            }
        }
        rows.add("out.0.", "conv_norm_out.", Inside::Same);
        rows.add("out.2.", "conv_out.", Inside::Same);
        rows.done()
    }

    /// The VAE's map for `config`, its keys under `prefix` ([`VAE_PREFIX`] in a full checkpoint, none in a VAE
    /// file). The decoder's levels are numbered the other way round in the checkpoint.
    pub fn vae(config: &VaeConfig, prefix: &str) -> Self {
        let mut rows = Rows::new(prefix);
        let levels = config.block_out_channels.len();
        for part in ["encoder", "decoder"] {
            rows.add(&format!("{part}.conv_in."), &format!("{part}.conv_in."), Inside::Same);
            rows.add(&format!("{part}.conv_out."), &format!("{part}.conv_out."), Inside::Same);
            rows.add(&format!("{part}.norm_out."), &format!("{part}.conv_norm_out."), Inside::Same);
            rows.add(&format!("{part}.mid.block_1."), &format!("{part}.mid_block.resnets.0."), Inside::VaeResnet);
            rows.add(&format!("{part}.mid.attn_1."), &format!("{part}.mid_block.attentions.0."), Inside::VaeAttention);
            rows.add(&format!("{part}.mid.block_2."), &format!("{part}.mid_block.resnets.1."), Inside::VaeResnet);
        }
        for i in 0..levels {
            for j in 0..config.layers_per_block {
                rows.add(
                    &format!("encoder.down.{i}.block.{j}."),
                    &format!("encoder.down_blocks.{i}.resnets.{j}."),
                    Inside::VaeResnet,
                );
            }
            if i + 1 < levels {
                rows.add(
                    &format!("encoder.down.{i}.downsample.conv."),
                    &format!("encoder.down_blocks.{i}.downsamplers.0.conv."),
                    Inside::Same,
                );
            }
            let up = levels - 1 - i;
            for j in 0..=config.layers_per_block {
                rows.add(
                    &format!("decoder.up.{i}.block.{j}."),
                    &format!("decoder.up_blocks.{up}.resnets.{j}."),
                    Inside::VaeResnet,
                );
            }
            if i > 0 {
                rows.add(
                    &format!("decoder.up.{i}.upsample.conv."),
                    &format!("decoder.up_blocks.{up}.upsamplers.0.conv."),
                    Inside::Same,
                );
            }
        }
        rows.add("quant_conv.", "quant_conv.", Inside::Same);
        rows.add("post_quant_conv.", "post_quant_conv.", Inside::Same);
        rows.done()
    }

    /// The text encoder's map: transformers' names under [`CLIP_PREFIX`].
    pub fn clip() -> Self {
        let mut rows = Rows::new(CLIP_PREFIX);
        rows.add("", "", Inside::Same);
        rows.done()
    }

    /// The diffusers name of the checkpoint's `key`, if a block of this part holds it.
    pub fn map(&self, key: &str) -> Option<Mapped> {
        let row = self.rows.iter().find(|row| key.starts_with(&row.ldm))?;
        let rest = &key[row.ldm.len()..];
        let renamed =
            row.inside.renames().iter().find_map(|(from, to)| Some(format!("{to}{}", rest.strip_prefix(from)?)));
        let squeeze = row.inside == Inside::VaeAttention && rest.ends_with(".weight") && !rest.starts_with("norm.");
        Some(Mapped { key: format!("{}{}", row.diffusers, renamed.as_deref().unwrap_or(rest)), squeeze })
    }
}

/// Rows being collected under a part's prefix.
struct Rows {
    prefix: String,
    rows: Vec<Row>,
}

impl Rows {
    fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned(), rows: Vec::new() }
    }

    fn add(&mut self, ldm: &str, diffusers: &str, inside: Inside) {
        self.rows.push(Row { ldm: format!("{}{ldm}", self.prefix), diffusers: diffusers.to_owned(), inside });
    }

    /// The table, longest prefixes first, so a block's row wins over a shorter one it starts with.
    fn done(mut self) -> KeyTable {
        self.rows.sort_by_key(|row| std::cmp::Reverse(row.ldm.len()));
        KeyTable { rows: self.rows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;
    use crate::sd1;

    fn unet() -> KeyTable {
        KeyTable::unet(&parse_config(sd1::UNET_CONFIG, "unet".as_ref()).unwrap())
    }

    fn vae(prefix: &str) -> KeyTable {
        KeyTable::vae(&parse_config(sd1::VAE_CONFIG, "vae".as_ref()).unwrap(), prefix)
    }

    fn key(table: &KeyTable, ldm: &str) -> String {
        table.map(ldm).unwrap_or_else(|| panic!("{ldm} is not mapped")).key
    }

    /// SD1.5's blocks, as diffusers' own converter names them (12 input blocks, 12 output blocks).
    #[test]
    fn sd1_unet_blocks() {
        let t = unet();
        let m = "model.diffusion_model.";
        assert_eq!(key(&t, &format!("{m}input_blocks.0.0.weight")), "conv_in.weight");
        assert_eq!(key(&t, &format!("{m}input_blocks.1.0.in_layers.2.weight")), "down_blocks.0.resnets.0.conv1.weight");
        assert_eq!(
            key(&t, &format!("{m}input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight")),
            "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight"
        );
        assert_eq!(key(&t, &format!("{m}input_blocks.3.0.op.bias")), "down_blocks.0.downsamplers.0.conv.bias");
        assert_eq!(
            key(&t, &format!("{m}input_blocks.4.0.skip_connection.weight")),
            "down_blocks.1.resnets.0.conv_shortcut.weight"
        );
        assert_eq!(
            key(&t, &format!("{m}input_blocks.11.0.emb_layers.1.bias")),
            "down_blocks.3.resnets.1.time_emb_proj.bias"
        );
        assert_eq!(key(&t, &format!("{m}middle_block.2.out_layers.3.weight")), "mid_block.resnets.1.conv2.weight");
        assert_eq!(key(&t, &format!("{m}output_blocks.2.1.conv.weight")), "up_blocks.0.upsamplers.0.conv.weight");
        assert_eq!(key(&t, &format!("{m}output_blocks.5.2.conv.weight")), "up_blocks.1.upsamplers.0.conv.weight");
        assert_eq!(key(&t, &format!("{m}output_blocks.11.1.proj_out.bias")), "up_blocks.3.attentions.2.proj_out.bias");
        assert_eq!(key(&t, &format!("{m}out.2.weight")), "conv_out.weight");
        assert_eq!(key(&t, &format!("{m}time_embed.2.weight")), "time_embedding.linear_2.weight");
        assert!(t.map(&format!("{m}input_blocks.12.0.op.weight")).is_none());
        assert!(t.map(&format!("{m}output_blocks.11.2.conv.weight")).is_none(), "the last level has no upsampler");
        assert!(t.map("first_stage_model.encoder.conv_in.weight").is_none());
    }

    #[test]
    fn sd1_vae_blocks() {
        let t = vae(VAE_PREFIX);
        let v = VAE_PREFIX;
        assert_eq!(
            key(&t, &format!("{v}encoder.down.1.block.0.nin_shortcut.weight")),
            "encoder.down_blocks.1.resnets.0.conv_shortcut.weight"
        );
        assert_eq!(
            key(&t, &format!("{v}encoder.down.2.downsample.conv.bias")),
            "encoder.down_blocks.2.downsamplers.0.conv.bias"
        );
        assert_eq!(
            key(&t, &format!("{v}decoder.up.0.block.2.norm1.weight")),
            "decoder.up_blocks.3.resnets.2.norm1.weight"
        );
        assert_eq!(
            key(&t, &format!("{v}decoder.up.3.upsample.conv.weight")),
            "decoder.up_blocks.0.upsamplers.0.conv.weight"
        );
        assert_eq!(key(&t, &format!("{v}decoder.norm_out.bias")), "decoder.conv_norm_out.bias");
        let q = t.map(&format!("{v}encoder.mid.attn_1.q.weight")).unwrap();
        assert_eq!(q, Mapped { key: "encoder.mid_block.attentions.0.to_q.weight".into(), squeeze: true });
        let out = t.map(&format!("{v}decoder.mid.attn_1.proj_out.bias")).unwrap();
        assert_eq!(out, Mapped { key: "decoder.mid_block.attentions.0.to_out.0.bias".into(), squeeze: false });
        let norm = t.map(&format!("{v}decoder.mid.attn_1.norm.weight")).unwrap();
        assert_eq!(norm, Mapped { key: "decoder.mid_block.attentions.0.group_norm.weight".into(), squeeze: false });
        assert_eq!(key(&vae(""), "post_quant_conv.weight"), "post_quant_conv.weight");
        assert!(t.map(&format!("{v}decoder.up.0.upsample.conv.weight")).is_none(), "the last level has no upsampler");
    }

    #[test]
    fn clip_keeps_transformers_names() {
        let t = KeyTable::clip();
        assert_eq!(
            key(&t, "cond_stage_model.transformer.text_model.final_layer_norm.bias"),
            "text_model.final_layer_norm.bias"
        );
        assert!(t.map("cond_stage_model.model.transformer.resblocks.0.ln_1.weight").is_none());
    }
}
