//! The UNet step's profile by operation (`fpi_models::profile`): every layer of the model is timed once, in the kind
//! its type says, and recording changes nothing about the output.

mod common;

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use common::*;
use fpi_models::profile::{Op, StepProfile, record};
use fpi_models::unet::UNet2DConditionModel;

/// How many operations of each kind one forward pass runs, counted from the model's parameters: each convolution,
/// linear layer, norm, attention and feed-forward runs once per step.
#[derive(Default)]
struct Census {
    /// The fields entered down to the current parameter, each with the type of the struct that holds it.
    fields: Vec<(String, String)>,
    counts: BTreeMap<&'static str, usize>,
}

impl Census {
    fn of(unet: &UNet2DConditionModel) -> BTreeMap<&'static str, usize> {
        let mut census = Census::default();
        unet.visit(&mut census);
        census.counts
    }
}

impl ModuleVisitor for Census {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.fields.push((name.to_owned(), container_type.to_owned()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.fields.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let field = |up: usize| {
            let (name, holder) = &self.fields[self.fields.len() - 1 - up];
            (name.as_str(), holder.as_str())
        };
        let op = match (field(0), field(1)) {
            (("weight", "Struct:Conv2d"), _) => Op::convolution(param.lazy_shape()[2]),
            (("weight", "Struct:Linear"), ("to_q", "Struct:Attention")) => {
                *self.counts.entry(Op::Attention.name()).or_default() += 1;
                Op::Linear
            }
            (("weight", "Struct:Linear"), ("geglu", "Struct:FeedForward")) => {
                *self.counts.entry(Op::GegluGate.name()).or_default() += 1;
                Op::Linear
            }
            (("weight", "Struct:Linear"), _) => Op::Linear,
            (("gamma", "Struct:GroupNorm"), _) => Op::GroupNorm,
            (("gamma", "Struct:LayerNorm"), _) => Op::LayerNorm,
            _ => return,
        };
        *self.counts.entry(op.name()).or_default() += 1;
    }
}

#[test]
fn a_profiled_unet_step_times_each_layer_once_by_its_kind_and_changes_nothing() {
    let device = device();
    let refs = model_references();
    let unet = load_unet(&folder(&tiny_model())).unwrap();
    let sample: Tensor<4> = refs.tensor("unet.b2.sample", &device);
    let context: Tensor<3> = refs.tensor("unet.b2.context", &device);
    let t = refs.ints("unet.b2.timestep")[0] as f32;
    let step = || unet.forward(sample.clone(), Tensor::full([2], t, &device), &context);

    let expected = Census::of(&unet);
    assert_eq!(expected.len(), 7, "the tiny UNet has layers of every kind: {expected:?}");
    let profile = pollster::block_on(StepProfile::measure(&device, step)).unwrap();
    let found: BTreeMap<&str, usize> = profile.ops.rows.iter().map(|row| (row.op.name(), row.count)).collect();
    assert_eq!(found, expected);
    assert_eq!(profile.ops.untimed, 0);
    assert!(profile.step_seconds > 0.0 && profile.ops.rows.iter().all(|row| row.seconds > 0.0), "{profile}");

    // Windows end fused chains of operations where they open and close, so on wgpu the same arithmetic may run in
    // other kernels: equal to within f32 rounding.
    let (recorded, _) = record(step);
    let plain = values(step());
    assert!(rel_l2(&values(recorded), &plain) <= 1e-6);
    println!("{profile}");
}
