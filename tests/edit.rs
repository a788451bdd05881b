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
            EditSettings { prompt: source.into(), cross_steps: 1.5, ..EditSettings::default() },
            "cross steps must be between 0 and 1, got 1.5",
        ),
    ];
    for (edit, message) in cases {
        let err = pollster::block_on(pipeline.edit(seed_latents(), source, &edit, 4, 2.0, &mut quiet)).err().unwrap();
        assert!(err.to_string().contains(message), "{message}: {err}");
    }
    let odd = Tensor::zeros([1, 4, 15, 15], &device());
    let err = pollster::block_on(pipeline.edit(odd, source, &EditSettings::default(), 4, 2.0, &mut quiet)).err();
    assert!(err.unwrap().to_string().contains("do not fit this model"));
}
