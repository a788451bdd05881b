//! Editing a seed with Prompt-to-Prompt (Hertz et al., arXiv 2208.01626): the source prompt's branch and the
//! target prompt's branch sample together from the seed, and the target's attention takes the source's where the
//! edit says, so the image changes where the prompts differ and keeps the rest.

pub mod align;
pub mod control;

use burn::tensor::{Int, Tensor, TensorData};
use fpi_core::predictor::{Guided, NoisePredictor};
use fpi_core::settings::check_guidance;
use fpi_core::solver::{self, Progress};
use serde::{Deserialize, Serialize};

use crate::pipeline::{Phase, PhaseObserver, Pipeline, PipelineError};
use align::{POSITIONS, Words, refinement_mapper, replacement_mapper};
use control::{Blend, CrossEdit, PromptToPrompt};

/// How the target's cross-attention is made from the source's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EditMode {
    /// Words swapped one for one (the prompts have as many words): the target's maps are the source's.
    Replace,
    /// Words added or removed: aligned tokens take the source's maps, new ones keep their own.
    Refine,
}

/// What to change and how: Prompt-to-Prompt's controls, with its notebooks' defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EditSettings {
    /// The target prompt.
    pub prompt: String,
    /// Replace or refine; `None`: replace when the prompts have as many words and tokens per word, else refine.
    pub mode: Option<EditMode>,
    /// The fraction of steps, from the first, in which cross-attention is edited.
    pub cross_steps: f64,
    /// Words of the target prompt whose cross-attention is edited for another fraction of steps than `cross_steps`.
    pub cross_word_steps: Vec<(String, f64)>,
    /// The fraction of steps, from the first, in which self-attention (layers of ≤ 16×16 queries) is the source's.
    pub self_steps: f64,
    /// Words (of either prompt) whose attention makes the local blend's mask; none: no local blend.
    pub blend: Vec<String>,
    /// Where the blend's normalised attention exceeds this, the target changes.
    pub blend_threshold: f64,
    /// The fraction of steps after which the local blend applies.
    pub blend_start: f64,
    /// Words of the target prompt and the factor by which their cross-attention is scaled.
    pub reweight: Vec<(String, f64)>,
}

impl Default for EditSettings {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            mode: None,
            cross_steps: 0.8,
            cross_word_steps: Vec::new(),
            self_steps: 0.4,
            blend: Vec::new(),
            blend_threshold: 0.3,
            blend_start: 0.2,
            reweight: Vec::new(),
        }
    }
}

/// Why an edit cannot run; each names the word or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// A blend word in neither prompt.
    #[error("blend word {word:?} is in neither prompt (source: {source_words}; target: {target_words})")]
    BlendWord {
        /// The word.
        word: String,
        /// The source prompt's words.
        source_words: String,
        /// The target prompt's words.
        target_words: String,
    },
    /// A reweight or cross-steps word not in the target prompt.
    #[error("{what} word {word:?} is not in the target prompt (its words: {words})")]
    TargetWord {
        /// `reweight` or `window` (a per-word cross-attention window).
        what: &'static str,
        /// The word.
        word: String,
        /// The target prompt's words.
        words: String,
    },
    /// Replace with prompts of different word counts.
    #[error("replace needs prompts of as many words (source {source_count}, target {target_count}); use refine")]
    WordCounts {
        /// Words of the source prompt.
        source_count: usize,
        /// Words of the target prompt.
        target_count: usize,
    },
    /// A prompt longer than CLIP's 77 positions, which the edit's token maps cannot follow.
    #[error("the {which} prompt has {tokens} tokens; an edit needs both prompts within CLIP's {room}")]
    TooLong {
        /// `source` or `target`.
        which: &'static str,
        /// Its tokens.
        tokens: usize,
        /// The most tokens a prompt may have.
        room: usize,
    },
    /// A fraction outside [0, 1].
    #[error("{name} must be between 0 and 1, got {value}")]
    Fraction {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// A blend threshold outside [0, 1) or a reweight factor that is not finite.
    #[error("{name} must be {expected}, got {value}")]
    Value {
        /// The setting.
        name: &'static str,
        /// What it must be.
        expected: &'static str,
        /// Its value.
        value: f64,
    },
    /// Local blend at an image size with no cross-attention maps of at least 16 queries a side and at most 32×32.
    #[error(
        "local blend needs cross-attention maps of at least 16 queries a side and at most 32×32, which latents of \
         this shape do not have"
    )]
    BlendTooSmall,
}

/// The two branches of an edit, as latents `[1, C, h, w]`.
pub struct Edited {
    /// The source prompt's branch: the seed's reconstruction.
    pub source: Tensor<4>,
    /// The target prompt's branch: the edit.
    pub target: Tensor<4>,
}

/// The UNet on both branches with the controller's hook; each evaluation ends a step of the controller.
struct Controlled<'a> {
    pipeline: &'a Pipeline,
    /// `[∅, ∅, source, target]`.
    context: Tensor<3>,
    control: &'a PromptToPrompt,
}

impl NoisePredictor for Controlled<'_> {
    fn predict(&self, latents: Tensor<4>, timestep: usize) -> Tensor<4> {
        let batch = latents.dims()[0];
        let timesteps =
            Tensor::<1>::from_data(TensorData::new(vec![timestep as f32; batch], [batch]), &latents.device());
        let eps = self.pipeline.unet().forward_hooked(latents, timesteps, &self.context, Some(self.control));
        self.control.finish_step();
        eps
    }
}

fn fraction(name: &'static str, value: f64) -> Result<(), EditError> {
    if (0.0..=1.0).contains(&value) { Ok(()) } else { Err(EditError::Fraction { name, value }) }
}

/// For each target position, the step before which its cross-attention is edited: Prompt-to-Prompt scales a
/// fraction by `steps + 1` (its alpha table has a row more than there are steps); named words override the default.
fn cross_windows(target: &Words, edit: &EditSettings, steps: usize) -> Result<Vec<usize>, PipelineError> {
    let until = |f: f64| (f * (steps + 1) as f64) as usize;
    let mut windows = vec![until(edit.cross_steps); POSITIONS];
    for (word, f) in &edit.cross_word_steps {
        fraction("word window", *f)?;
        let positions = target.positions_of(word);
        if positions.is_empty() {
            let (word, words) = (word.clone(), listed(target));
            return Err(EditError::TargetWord { what: "window", word, words }.into());
        }
        positions.into_iter().for_each(|p| windows[p] = until(*f));
    }
    Ok(windows)
}

fn listed(words: &Words) -> String {
    words.words.join(" ")
}

impl Pipeline {
    /// A prompt's words with their token positions.
    fn words(&self, prompt: &str, which: &'static str) -> Result<Words, PipelineError> {
        let tokenizer = self.tokenizer();
        let ids = tokenizer.words(prompt)?;
        if ids.len() > tokenizer.room() {
            return Err(EditError::TooLong { which, tokens: ids.len(), room: tokenizer.room() }.into());
        }
        Ok(Words::new(prompt, ids, |word| tokenizer.words(word))?)
    }

    /// Edits `seed` `[1, C, h, w]`, inverted from `source_prompt`, towards `edit.prompt`, sampling `steps` steps at
    /// `guidance`. Everything is checked before the UNet runs.
    pub async fn edit(
        &self,
        seed: Tensor<4>,
        source_prompt: &str,
        edit: &EditSettings,
        steps: usize,
        guidance: f64,
        observer: &mut PhaseObserver<'_>,
    ) -> Result<Edited, PipelineError> {
        self.check_latents(seed.dims())?;
        check_guidance(guidance)?;
        let schedule = self.check_steps(steps)?;
        let [_, _, h, w] = seed.dims();
        let control = self.controller(source_prompt, edit, steps, [h, w])?;
        let states = self.condition_all(&["", source_prompt, &edit.prompt])?;
        let [empty, source, target] = [0, 1, 2].map(|i| states.clone().narrow(0, i, 1));
        let context = Tensor::cat(vec![empty.clone(), empty, source, target], 0);
        let predictor = Guided { inner: Controlled { pipeline: self, context, control: &control }, scale: guidance };
        let both = Tensor::cat(vec![seed.clone(), seed], 0);
        let mut on_sample = |p: &Progress| observer(Phase::Sample, p);
        let mut steer = |k, z| control.blend(k, z);
        let z = solver::sample_steered(&predictor, &schedule, both, steps, &mut on_sample, &mut steer).await?;
        Ok(Edited { source: z.clone().narrow(0, 0, 1), target: z.narrow(0, 1, 1) })
    }

    /// Checks an edit of `source_prompt` by `edit` over `steps` steps of latents `[1, C, h, w]` without running it
    /// (as before inverting the image it will edit).
    pub fn check_edit(
        &self,
        source_prompt: &str,
        edit: &EditSettings,
        steps: usize,
        shape: [usize; 4],
    ) -> Result<(), PipelineError> {
        self.check_latents(shape)?;
        self.check_steps(steps)?;
        self.controller(source_prompt, edit, steps, [shape[2], shape[3]]).map(|_| ())
    }

    /// The controller of an edit of `source_prompt` by `edit` over `steps` steps, for latents `side` `[h, w]`.
    fn controller(
        &self,
        source_prompt: &str,
        edit: &EditSettings,
        steps: usize,
        side: [usize; 2],
    ) -> Result<PromptToPrompt, PipelineError> {
        fraction("cross steps", edit.cross_steps)?;
        fraction("self steps", edit.self_steps)?;
        fraction("blend start", edit.blend_start)?;
        if !(0.0..1.0).contains(&edit.blend_threshold) {
            let value = edit.blend_threshold;
            return Err(EditError::Value { name: "blend threshold", expected: "in [0, 1)", value }.into());
        }
        let (source, target) = (self.words(source_prompt, "source")?, self.words(&edit.prompt, "target")?);
        let device = self.device();
        let same_shape = source.words.len() == target.words.len()
            && source.positions.iter().zip(&target.positions).all(|(a, b)| a.len() == b.len());
        let cross = match edit.mode.unwrap_or(if same_shape { EditMode::Replace } else { EditMode::Refine }) {
            EditMode::Replace => {
                if source.words.len() != target.words.len() {
                    let (source_count, target_count) = (source.words.len(), target.words.len());
                    return Err(EditError::WordCounts { source_count, target_count }.into());
                }
                let mapper = replacement_mapper(&source, &target);
                CrossEdit::Replace(Tensor::from_data(TensorData::new(mapper, [POSITIONS, POSITIONS]), device))
            }
            EditMode::Refine => {
                let (start, end) = self.tokenizer().framing();
                let (mapper, alphas) = refinement_mapper(&source.ids, &target.ids, start, end);
                let mapper: Vec<i64> = mapper.into_iter().map(|p| p as i64).collect();
                CrossEdit::Refine {
                    mapper: Tensor::<1, Int>::from_data(TensorData::new(mapper, [POSITIONS]), device),
                    alphas: Tensor::from_data(TensorData::new(alphas, [POSITIONS]), device),
                }
            }
        };
        let equalizer = self.equalizer(&target, &edit.reweight)?;
        let blend = self.blend(&source, &target, edit, steps, side)?;
        let cross_until = cross_windows(&target, edit, steps)?;
        let self_until = (edit.self_steps * steps as f64) as usize;
        Ok(PromptToPrompt::new(cross, equalizer, cross_until, 0..self_until, blend, self.device()))
    }

    /// The reweighting factors per target position, `None` when there are none.
    fn equalizer(&self, target: &Words, reweight: &[(String, f64)]) -> Result<Option<Tensor<1>>, PipelineError> {
        if reweight.is_empty() {
            return Ok(None);
        }
        let mut weights = vec![1f32; POSITIONS];
        for (word, factor) in reweight {
            if !factor.is_finite() {
                return Err(EditError::Value { name: "reweight factor", expected: "finite", value: *factor }.into());
            }
            let positions = target.positions_of(word);
            if positions.is_empty() {
                return Err(
                    EditError::TargetWord { what: "reweight", word: word.clone(), words: listed(target) }.into()
                );
            }
            for p in positions {
                weights[p] = *factor as f32;
            }
        }
        Ok(Some(Tensor::from_data(TensorData::new(weights, [POSITIONS]), self.device())))
    }

    /// The local blend of `edit.blend`'s words, `None` without words.
    fn blend(
        &self,
        source: &Words,
        target: &Words,
        edit: &EditSettings,
        steps: usize,
        side: [usize; 2],
    ) -> Result<Option<Blend>, PipelineError> {
        if edit.blend.is_empty() {
            return Ok(None);
        }
        if !self.unet().cross_attention_sides(side).into_iter().any(control::blend_reads) {
            return Err(EditError::BlendTooSmall.into());
        }
        let mut words = vec![0f32; 2 * POSITIONS];
        for word in &edit.blend {
            let (in_source, in_target) = (source.positions_of(word), target.positions_of(word));
            if in_source.is_empty() && in_target.is_empty() {
                let (source_words, target_words) = (listed(source), listed(target));
                return Err(EditError::BlendWord { word: word.clone(), source_words, target_words }.into());
            }
            in_source.into_iter().for_each(|p| words[p] = 1.0);
            in_target.into_iter().for_each(|p| words[POSITIONS + p] = 1.0);
        }
        Ok(Some(Blend {
            words: Tensor::from_data(TensorData::new(words, [2, 1, 1, POSITIONS]), self.device()),
            threshold: edit.blend_threshold,
            start: (edit.blend_start * steps as f64) as usize,
        }))
    }
}
