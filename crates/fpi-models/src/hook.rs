//! Attention control: a hook that the UNet's attention layers call with their attention probabilities, so that an
//! edit (Prompt-to-Prompt) can read and replace them. Without a hook, or where the hook does not ask for a layer,
//! the fused attention runs and the UNet's output is unchanged.

use std::ops::Range;

use burn::tensor::Tensor;

/// The part of the UNet an attention layer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UNetPart {
    /// A down block.
    Down,
    /// The mid block.
    Mid,
    /// An up block.
    Up,
}

/// Where an attention layer sits, in diffusers' order: down → mid → up; in each block its transformers in turn,
/// in each transformer its blocks in turn, self-attention (`attn1`) before cross-attention (`attn2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionPlace {
    /// Down, mid or up.
    pub part: UNetPart,
    /// The block's index within its part (0 for the mid block).
    pub block: usize,
    /// The transformer's index within the block.
    pub transformer: usize,
    /// The transformer block's index within the transformer.
    pub layer: usize,
    /// Cross-attention on the text states (`attn2`), else self-attention (`attn1`).
    pub cross: bool,
    /// The query map's height and width (queries = height × width).
    pub query_side: [usize; 2],
}

impl AttentionPlace {
    /// The number of queries.
    pub fn queries(&self) -> usize {
        self.query_side[0] * self.query_side[1]
    }
}

/// Reads or replaces attention probabilities. Called by the UNet's attention layers during one forward pass.
pub trait AttentionHook {
    /// Whether the layer at `place` needs its probabilities; layers it does not need run the fused attention.
    fn wants(&self, place: &AttentionPlace) -> bool;

    /// The probabilities `softmax(q·kᵀ/√d)` `[B, heads, rows, keys]` of query rows `rows` of the layer at `place`
    /// (all rows, unless the layer's scores exceed one block); returns the probabilities to use. They are f32
    /// whatever the model's precision, and what it returns is cast back to the values' type.
    fn edit(&self, place: &AttentionPlace, rows: Range<usize>, probabilities: Tensor<4>) -> Tensor<4>;
}

/// An attention layer's hook and place, handed down the UNet while it runs.
#[derive(Clone, Copy)]
pub struct HookAt<'a> {
    /// The hook.
    pub hook: &'a dyn AttentionHook,
    /// Down, mid or up.
    pub part: UNetPart,
    /// The block's index within its part.
    pub block: usize,
    /// The transformer's index within the block.
    pub transformer: usize,
}

impl HookAt<'_> {
    /// The place of transformer block `layer`'s self- or cross-attention over a `query_side` map.
    pub fn place(&self, layer: usize, cross: bool, query_side: [usize; 2]) -> AttentionPlace {
        AttentionPlace { part: self.part, block: self.block, transformer: self.transformer, layer, cross, query_side }
    }
}
