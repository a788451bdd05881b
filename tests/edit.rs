//! Prompt-to-Prompt editing on the tiny model: the attention hook leaves the UNet alone unless it edits, an edit
//! to the same prompt is the reconstruction, the edits match a Python port of Prompt-to-Prompt
//! (`tests/reference/make_p2p_reference.py`), and bad edits are named errors.

mod common;

use std::ops::{ControlFlow, Range};

use burn::tensor::{Tensor, TensorData};
use common::*;
use fpi_models::hook::{AttentionHook, AttentionPlace};
use fpi_pipeline::Pipeline;
use fpi_pipeline::edit::{EditMode, EditSettings};

fn pipeline() -> Pipeline {
    pollster::block_on(Pipeline::load(&folder(&tiny_model()), device(), &mut |_, _, _| {})).unwrap()
}

fn quiet(_: fpi_pipeline::Phase, _: &fpi_core::solver::Progress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

/// Asks for every layer (or none) and hands the probabilities back unchanged, counting the layers it saw.
struct Passthrough {
    wants: bool,
    seen: std::cell::RefCell<Vec<AttentionPlace>>,
}

impl AttentionHook for Passthrough {
    fn wants(&self, place: &AttentionPlace) -> bool {
        self.seen.borrow_mut().push(place.clone());
        self.wants
    }

    fn edit(&self, _: &AttentionPlace, _: Range<usize>, probabilities: Tensor<4>) -> Tensor<4> {
        probabilities
    }
}

fn unet_inputs() -> (Tensor<4>, Tensor<1>, Tensor<3>) {
    let refs = model_references();
    let device = device();
    let sample: Tensor<4> = refs.tensor("unet.b2.sample", &device);
    let context: Tensor<3> = refs.tensor("unet.b2.context", &device);
    let t = refs.ints("unet.b2.timestep")[0] as f32;
    (sample, Tensor::from_data(TensorData::new(vec![t; 2], [2]), &device), context)
}

#[test]
fn the_hook_sees_every_layer_in_diffusers_order_and_changes_nothing_unless_asked() {
    let unet = load_unet(&folder(&tiny_model())).unwrap();
    let (x, t, context) = unet_inputs();
    let plain = values(unet.forward(x.clone(), t.clone(), &context));
    let idle = Passthrough { wants: false, seen: Default::default() };
    assert_eq!(values(unet.forward_hooked(x.clone(), t.clone(), &context, Some(&idle))), plain, "bit for bit");
    // Tiny UNet: down level 0 has 2 transformers, the mid block 1, up level 1 (at level 0's size) 3: 6 × (self, cross).
    let seen = idle.seen.into_inner();
    assert_eq!(seen.len(), 12);
    use fpi_models::hook::UNetPart::*;
    let order: Vec<_> = seen.iter().map(|p| (p.part, p.block, p.transformer, p.cross, p.query_side)).collect();
    assert_eq!(
        order[..4],
        [
            (Down, 0, 0, false, [16, 16]),
            (Down, 0, 0, true, [16, 16]),
            (Down, 0, 1, false, [16, 16]),
            (Down, 0, 1, true, [16, 16])
        ]
    );
    assert_eq!(order[4..6], [(Mid, 0, 0, false, [8, 8]), (Mid, 0, 0, true, [8, 8])]);
    assert_eq!(order[6], (Up, 1, 0, false, [16, 16]));
    // Explicit probabilities give the fused attention's result.
    let all = Passthrough { wants: true, seen: Default::default() };
    let explicit = values(unet.forward_hooked(x, t, &context, Some(&all)));
    let err = rel_l2(&explicit, &plain);
    assert!(err < 1e-5, "explicit attention differs from fused by {err:.2e}");
}

fn seed_latents() -> Tensor<4> {
    let values: Vec<f32> = (0..4 * 16 * 16).map(|i| ((i as f32) * 0.61).sin() * 1.3).collect();
    Tensor::from_data(TensorData::new(values, [1, 4, 16, 16]), &device())
}

#[test]
fn editing_to_the_same_prompt_is_the_reconstruction() {
    let pipeline = pipeline();
    let prompt = "a man with a camera";
    let edit = EditSettings { prompt: prompt.into(), ..EditSettings::default() };
    let edited = pollster::block_on(pipeline.edit(seed_latents(), prompt, &edit, 6, 2.0, &mut quiet)).unwrap();
    let reconstruction = pollster::block_on(pipeline.sample(seed_latents(), prompt, 6, 2.0, &mut quiet)).unwrap();
    let reconstruction = values(reconstruction);
    let (source, target) = (values(edited.source), values(edited.target));
    assert!(rel_l2(&source, &reconstruction) < 1e-6, "{:.2e}", rel_l2(&source, &reconstruction));
    assert!(rel_l2(&target, &reconstruction) < 1e-6, "{:.2e}", rel_l2(&target, &reconstruction));
}

#[test]
fn bad_edits_are_named_before_the_unet_runs() {
    let pipeline = pipeline();
    let source = "a man with a camera";
    let long = vec!["camera"; 80].join(" ");
    let cases = [
        (
            EditSettings { prompt: "a man with a guitar".into(), blend: vec!["dog".into()], ..EditSettings::default() },
            "blend word \"dog\" is in neither prompt (source: a man with a camera; target: a man with a guitar)",
        ),
        (
            EditSettings {
                prompt: "a man with a guitar".into(),
                reweight: vec![("camera".into(), 2.0)],
                ..EditSettings::default()
            },
            "reweight word \"camera\" is not in the target prompt (its words: a man with a guitar)",
        ),
        (
            EditSettings {
                prompt: "a man with a red camera".into(),
                mode: Some(EditMode::Replace),
                ..EditSettings::default()
            },
            "replace needs prompts of as many words (source 5, target 6); use refine",
        ),
        (EditSettings { prompt: long, ..EditSettings::default() }, "the target prompt has 80 tokens"),
        (
            EditSettings {
                prompt: "a man with a guitar".into(),
                cross_word_steps: vec![("camera".into(), 0.5)],
                ..EditSettings::default()
            },
            "window word \"camera\" is not in the target prompt (its words: a man with a guitar)",
        ),
        (
            EditSettings { prompt: source.into(), cross_steps: 1.5, ..EditSettings::default() },
            "cross steps must be between 0 and 1, got 1.5",
        ),
    ];
    for (edit, message) in cases {
        let err = pollster::block_on(pipeline.edit(seed_latents(), source, &edit, 4, 2.0, &mut quiet)).err().unwrap();
        assert!(err.to_string().contains(message), "{message}: {err}");
    }
    // A wide seed whose cross-attention maps are over 32×32 queries has no maps for the blend to read.
    let wide = Tensor::zeros([1, 4, 16, 80], &device());
    let blend =
        EditSettings { prompt: "a man with a guitar".into(), blend: vec!["guitar".into()], ..Default::default() };
    let err = pollster::block_on(pipeline.edit(wide, source, &blend, 4, 2.0, &mut quiet)).err().unwrap();
    assert!(err.to_string().contains("local blend needs cross-attention maps"), "{err}");
    let odd = Tensor::zeros([1, 4, 15, 15], &device());
    let err = pollster::block_on(pipeline.edit(odd, source, &EditSettings::default(), 4, 2.0, &mut quiet)).err();
    assert!(err.unwrap().to_string().contains("do not fit this model"));
}

/// The cases of `tests/fixtures/p2p-cases.json` as edit settings: (name, source prompt, settings).
fn reference_cases() -> (serde_json::Value, Vec<(String, String, EditSettings)>) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("p2p-cases.json")).unwrap()).unwrap();
    let common = json["common"].clone();
    let cases = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let number = |key: &str| case.get(key).unwrap_or(&common[key]).as_f64().unwrap();
            let words = |side: &str| -> Vec<String> {
                case["blend"][side].as_array().into_iter().flatten().map(|w| w.as_str().unwrap().to_owned()).collect()
            };
            let mut blend = words("source");
            blend.extend(words("target"));
            let reweight = case["reweight"].as_object().into_iter().flatten();
            let settings = EditSettings {
                prompt: case["target"].as_str().unwrap().into(),
                mode: Some(if case["mode"] == "refine" { EditMode::Refine } else { EditMode::Replace }),
                cross_steps: number("cross_steps"),
                cross_word_steps: case["cross_word_steps"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(w, f)| (w.clone(), f.as_f64().unwrap()))
                    .collect(),
                self_steps: number("self_steps"),
                blend,
                blend_threshold: number("blend_threshold"),
                blend_start: number("blend_start"),
                reweight: reweight.map(|(w, f)| (w.clone(), f.as_f64().unwrap())).collect(),
            };
            (case["name"].as_str().unwrap().to_owned(), case["source"].as_str().unwrap().to_owned(), settings)
        })
        .collect();
    (common, cases)
}

/// Every case against the Python port of Prompt-to-Prompt: both branches to ≤ 1e-4 relative, and the edit itself,
/// Δ = target − source, to ≤ 1e-2 (on this tiny model the edits move the latents by only 1e-4 to 1e-2 relative,
/// so the branches alone would let a missing edit pass; Δ would not).
#[test]
fn edits_match_prompt_to_prompt() {
    let (pipeline, device) = (pipeline(), device());
    let refs = References::open(&fixtures().join("reference/p2p.safetensors"));
    let (common, cases) = reference_cases();
    let (steps, guidance) = (common["steps"].as_u64().unwrap() as usize, common["guidance"].as_f64().unwrap());
    for (name, source, settings) in cases {
        let seed: Tensor<4> = refs.tensor("x_t", &device);
        let edited = pollster::block_on(pipeline.edit(seed, &source, &settings, steps, guidance, &mut quiet)).unwrap();
        let (ours_source, ours_target) = (values(edited.source), values(edited.target));
        let (expected, _) = refs.floats(&format!("{name}.latents"));
        let half = expected.len() / 2;
        let (theirs_source, theirs_target) = (&expected[..half], &expected[half..]);
        let errors = [rel_l2(&ours_source, theirs_source), rel_l2(&ours_target, theirs_target)];
        let delta = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<f32>>();
        let (ours_delta, theirs_delta) = (delta(&ours_target, &ours_source), delta(theirs_target, theirs_source));
        eprintln!("{name}: source {:.2e}, target {:.2e}, edit Δ {:.2e}", errors[0], errors[1], {
            if name == "same" { 0.0 } else { rel_l2(&ours_delta, &theirs_delta) }
        });
        assert!(errors.iter().all(|&e| e <= 1e-4), "{name}: {errors:?}");
        if name != "same" {
            let err = rel_l2(&ours_delta, &theirs_delta);
            assert!(err <= 1e-2, "{name}: the edit Δ differs by {err:.2e}");
        }
        if name == "blend" {
            // Outside the reference's final mask the target is the source, exactly.
            let (mask, _) = refs.floats("blend.mask");
            let plane = mask.len();
            for (i, (t, s)) in ours_target.iter().zip(&ours_source).enumerate() {
                if mask[i % plane] == 0.0 {
                    assert_eq!(t, s, "outside the mask at {i}");
                }
            }
            assert!(mask.contains(&0.0) && mask.contains(&1.0));
        }
    }
}

/// The token maps against Prompt-to-Prompt's, with the real CLIP tokenizer.
#[test]
fn token_maps_match_prompt_to_prompt() {
    use fpi_pipeline::edit::align::{POSITIONS, Words, refinement_mapper, replacement_mapper};
    let pipeline = pipeline();
    let tokenizer = pipeline.tokenizer();
    let words = |p: &str| Words::new(p, tokenizer.words(p).unwrap(), |w| tokenizer.words(w)).unwrap();
    let refs = References::open(&fixtures().join("reference/p2p.safetensors"));
    let (_, cases) = reference_cases();
    for (name, source, settings) in cases {
        let (s, t) = (words(&source), words(&settings.prompt));
        let ids = |key: &str| refs.ints(&format!("{name}.{key}"));
        let framed = |w: &Words| {
            let (start, end) = tokenizer.framing();
            let mut all: Vec<i64> = [start].iter().chain(&w.ids).chain(&[end]).map(|&i| i as i64).collect();
            all.resize(POSITIONS, end as i64);
            all
        };
        assert_eq!((framed(&s), framed(&t)), (ids("source_tokens"), ids("target_tokens")), "{name}");
        if settings.mode == Some(EditMode::Refine) {
            let (start, end) = tokenizer.framing();
            let (mapper, alphas) = refinement_mapper(&s.ids, &t.ids, start, end);
            let expected: Vec<usize> =
                ids("mapper").iter().map(|&m| if m < 0 { POSITIONS - 1 } else { m as usize }).collect();
            assert_eq!(mapper, expected, "{name}");
            assert_eq!(alphas, refs.floats(&format!("{name}.alphas")).0, "{name}");
        } else {
            assert_eq!(replacement_mapper(&s, &t), refs.floats(&format!("{name}.mapper")).0, "{name}");
        }
    }
}
