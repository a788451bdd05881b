//! Prompt-to-Prompt's attention control over one batch of two branches, source and target: the UNet runs on
//! `[x_src, x_tgt, x_src, x_tgt]` with text states `[∅, ∅, source, target]`, and in the conditional half the
//! target's attention takes the source's where the edit says so.

use std::cell::{Cell, RefCell};
use std::ops::Range;

use burn::tensor::module::{interpolate, max_pool2d};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions, MaxPoolOptions};
use burn::tensor::{Device, Int, Tensor, TensorData};
use fpi_models::hook::{AttentionHook, AttentionPlace, UNetPart};

/// Self-attention maps are copied from the source only in layers with at most this many queries (16×16).
const SELF_REPLACE_QUERIES: usize = 16 * 16;
/// Cross-attention maps are kept for the local blend only in layers with at most this many queries (32×32).
const STORED_QUERIES: usize = 32 * 32;
/// The local blend reads the kept layers of the smallest query map whose shorter side is at least this (16×16 at
/// SD1.5's 512²).
const BLEND_SIDE: usize = 16;

/// How the target's cross-attention is made from the source's.
pub enum CrossEdit {
    /// A word swap: the source's maps times the replacement mapper `[77, 77]`.
    Replace(Tensor<2>),
    /// Words added or removed: the source's map of each aligned position (`mapper` `[77]`), weighted by
    /// `alphas` `[77]` against the target's own.
    Refine {
        /// The source position of each target position.
        mapper: Tensor<1, Int>,
        /// 1 where the target position takes the source's map, 0 for a new token.
        alphas: Tensor<1>,
    },
}

/// The local blend: outside a mask made from chosen words' cross-attention, the target's latents are the source's.
pub struct Blend {
    /// `[2, 1, 1, 77]`: 1 at the token positions of the chosen words, per branch.
    pub words: Tensor<4>,
    /// A position is in the mask where its normalised attention exceeds this.
    pub threshold: f64,
    /// The blend applies after steps past this one (0-based step k blends when k + 1 > start).
    pub start: usize,
}

/// How a step mixes the edited cross-attention with the target's own.
enum Mix {
    /// Every position the edit's.
    Edited,
    /// Every position the target's own.
    Own,
    /// Per position `[77]`: 1 the edit's, 0 its own.
    Some(Tensor<1>),
}

/// The controller of one edit: what to replace, when, and the cross-attention maps the blend reads.
pub struct PromptToPrompt {
    cross: CrossEdit,
    /// Multiplies the target's cross-attention columns after the edit (reweighting), `[77]`.
    equalizer: Option<Tensor<1>>,
    /// Per step, how much of each target position's cross-attention is the edit's (the rest its own).
    cross_alphas: Vec<Mix>,
    /// Self-attention is copied from the source in these steps.
    self_steps: Range<usize>,
    blend: Option<Blend>,
    step: Cell<usize>,
    /// Per kept layer, in the order the UNet visits them: its query side and the sum over steps of its
    /// conditional cross-attention `[2, heads, queries, 77]`.
    store: RefCell<Vec<([usize; 2], Tensor<4>)>>,
    /// The next kept layer within the current step.
    next_stored: Cell<usize>,
}

impl PromptToPrompt {
    /// A controller: cross-attention of target position `p` edited in steps `[0, cross_until[p])`, self-attention
    /// copied in `self_steps`.
    pub fn new(
        cross: CrossEdit,
        equalizer: Option<Tensor<1>>,
        cross_until: Vec<usize>,
        self_steps: Range<usize>,
        blend: Option<Blend>,
        device: &Device,
    ) -> Self {
        let last = cross_until.iter().copied().max().unwrap_or(0);
        let cross_alphas = (0..last)
            .map(|step| {
                let alphas: Vec<f32> = cross_until.iter().map(|&until| if step < until { 1.0 } else { 0.0 }).collect();
                match (alphas.iter().all(|&a| a == 1.0), alphas.iter().all(|&a| a == 0.0)) {
                    (true, _) => Mix::Edited,
                    (_, true) => Mix::Own,
                    _ => Mix::Some(Tensor::from_data(TensorData::new(alphas, [cross_until.len()]), device)),
                }
            })
            .collect();
        Self {
            cross,
            equalizer,
            cross_alphas,
            self_steps,
            blend,
            step: Cell::new(0),
            store: RefCell::new(Vec::new()),
            next_stored: Cell::new(0),
        }
    }

    /// Ends a UNet evaluation: the next one belongs to the next step.
    pub fn finish_step(&self) {
        self.step.set(self.step.get() + 1);
        self.next_stored.set(0);
    }

    fn stores(&self, place: &AttentionPlace) -> bool {
        self.blend.is_some() && place.cross && place.part != UNetPart::Mid && place.queries() <= STORED_QUERIES
    }

    fn keep(&self, place: &AttentionPlace, maps: Tensor<4>) {
        let mut store = self.store.borrow_mut();
        let index = self.next_stored.get();
        self.next_stored.set(index + 1);
        match store.get_mut(index) {
            Some((_, sum)) => *sum = sum.clone() + maps,
            None => store.push((place.query_side, maps)),
        }
    }

    /// The target's cross-attention `[1, heads, rows, 77]` made from the source's and its own.
    fn cross_edit(&self, source: Tensor<4>, target: Tensor<4>) -> Tensor<4> {
        let edited = match &self.cross {
            CrossEdit::Replace(mapper) => {
                let [_, heads, rows, keys] = source.dims();
                let mapped = source.reshape([heads * rows, keys]).matmul(mapper.clone());
                mapped.reshape([1, heads, rows, keys])
            }
            CrossEdit::Refine { mapper, alphas } => {
                let alphas = alphas.clone().reshape([1, 1, 1, -1]);
                let ones = alphas.ones_like();
                source.select(3, mapper.clone()) * alphas.clone() + target * (ones - alphas)
            }
        };
        match &self.equalizer {
            Some(weights) => edited * weights.clone().reshape([1, 1, 1, -1]),
            None => edited,
        }
    }

    /// The local blend after sampling step `k` (0-based) of latents `z` `[2, C, h, w]` (source, target).
    pub fn blend(&self, k: usize, z: Tensor<4>) -> Tensor<4> {
        let Some(blend) = &self.blend else { return z };
        if k < blend.start {
            return z;
        }
        let [_, _, h, w] = z.dims();
        let mask = self.mask(blend, [h, w]);
        let source = z.clone().narrow(0, 0, 1);
        let target = source.clone() + mask * (z.narrow(0, 1, 1) - source.clone());
        Tensor::cat(vec![source, target], 0)
    }

    /// The union of the source's and the target's masks, `[1, 1, h, w]` of 0 and 1.
    fn mask(&self, blend: &Blend, latent_side: [usize; 2]) -> Tensor<4> {
        let store = self.store.borrow();
        let read = store.iter().map(|(s, _)| *s).filter(|&s| blend_reads(s)).min_by_key(|s| s[0] * s[1]);
        let [s_h, s_w] = read.expect("the pipeline checks that the blend has maps to read");
        let layers: Vec<&Tensor<4>> = store.iter().filter(|(s, _)| *s == [s_h, s_w]).map(|(_, m)| m).collect();
        let heads: usize = layers.iter().map(|m| m.dims()[1]).sum();
        let summed = layers
            .into_iter()
            .map(|maps| (maps.clone() * blend.words.clone()).sum_dim(3).sum_dim(1))
            .reduce(|a, b| a + b)
            .expect("at least one layer");
        let maps = summed.div_scalar(heads as f64).reshape([2, 1, s_h, s_w]);
        let pooled = max_pool2d(maps, MaxPoolOptions::new([3, 3]).with_stride([1, 1]).with_padding([1, 1]));
        let nearest = InterpolateOptions::new(InterpolateMode::Nearest).with_output_size(latent_side);
        let upsampled = interpolate(pooled, nearest);
        let peak = upsampled.clone().max_dim(3).max_dim(2);
        let inside = (upsampled / peak).greater_elem(blend.threshold).float();
        (inside.clone().narrow(0, 0, 1) + inside.narrow(0, 1, 1)).clamp_max(1.0)
    }
}

/// Whether the local blend can read the cross-attention of a down or up level whose query map is `side`
/// `[height, width]`: kept, and no side under 16.
pub fn blend_reads(side: [usize; 2]) -> bool {
    side[0].min(side[1]) >= BLEND_SIDE && side[0] * side[1] <= STORED_QUERIES
}

impl AttentionHook for PromptToPrompt {
    fn wants(&self, place: &AttentionPlace) -> bool {
        place.cross || (self.self_steps.contains(&self.step.get()) && place.queries() <= SELF_REPLACE_QUERIES)
    }

    fn edit(&self, place: &AttentionPlace, rows: Range<usize>, probabilities: Tensor<4>) -> Tensor<4> {
        let unconditional = probabilities.clone().narrow(0, 0, 2);
        let source = probabilities.clone().narrow(0, 2, 1);
        let target = probabilities.narrow(0, 3, 1);
        let target = if !place.cross {
            source.clone()
        } else {
            match self.cross_alphas.get(self.step.get()).unwrap_or(&Mix::Own) {
                Mix::Edited => self.cross_edit(source.clone(), target),
                Mix::Own => target,
                Mix::Some(alphas) => {
                    let alphas = alphas.clone().reshape([1, 1, 1, -1]);
                    let edited = self.cross_edit(source.clone(), target.clone());
                    edited * alphas.clone() + target * (alphas.ones_like() - alphas)
                }
            }
        };
        // Prompt-to-Prompt keeps the maps as edited (its store holds a view that the edit then writes into).
        if self.stores(place) && rows.len() == place.queries() {
            self.keep(place, Tensor::cat(vec![source.clone(), target.clone()], 0));
        }
        Tensor::cat(vec![unconditional, source, target], 0)
    }
}
