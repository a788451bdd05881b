//! Half precision: the float type of the networks' weights and activations, chosen per device.
//!
//! In f16 the networks keep, as diffusers does, what loses accuracy in half precision in f32: group and layer norms
//! (their parameters stay f32 and their statistics are computed in f32) and the attention's softmax. Their inputs
//! and outputs are f32 either way: the timestep embedding is computed in f32 and cast, and the solver's state
//! never leaves f32.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::LayerNorm;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{FloatCastAdapter, ModuleAdapter, ModuleContext};
use burn::tensor::{DType, Device, FloatDType, Tensor};

/// The float type the networks compute in, as the user asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Precision {
    /// f16 where the device computes in it (a wgpu adapter with `shader-f16`), else f32.
    #[default]
    Auto,
    /// Single precision everywhere.
    F32,
    /// Half precision (a wgpu adapter with `shader-f16` only).
    F16,
}

/// A precision name that is not one of `auto`, `f32`, `f16`.
#[derive(Debug, thiserror::Error)]
#[error("unknown precision {0:?} (expected auto, f32 or f16)")]
pub struct UnknownPrecision(pub String);

/// f16 was asked for on a device that cannot compute in it.
#[derive(Debug, thiserror::Error)]
#[error(
    "f16 needs a wgpu adapter with shader-f16, which this device lacks (use --device wgpu on such an adapter, or \
     --precision f32 or auto)"
)]
pub struct NoHalfPrecision;

impl FromStr for Precision {
    type Err = UnknownPrecision;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Precision::Auto),
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            other => Err(UnknownPrecision(other.into())),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        })
    }
}

impl Precision {
    /// The float type on `device`: `auto` is f16 where [`computes_in_f16`], else f32.
    pub fn resolve(self, device: &Device) -> Result<FloatDType, NoHalfPrecision> {
        match self {
            Precision::F32 => Ok(FloatDType::F32),
            Precision::Auto if computes_in_f16(device) => Ok(FloatDType::F16),
            Precision::Auto => Ok(FloatDType::F32),
            Precision::F16 if computes_in_f16(device) => Ok(FloatDType::F16),
            Precision::F16 => Err(NoHalfPrecision),
        }
    }
}

/// Whether fpi runs the networks in f16 on `device`: a wgpu adapter with `shader-f16` (the CPU backends compute in
/// f32; our CPU kernels are f32 only).
pub fn computes_in_f16(device: &Device) -> bool {
    crate::device::is_wgpu(device) && device.supports_dtype(DType::F16)
}

/// The name of a float type as fpi shows it (`f32`, `f16`).
pub fn name(dtype: FloatDType) -> &'static str {
    match dtype {
        FloatDType::F16 => "f16",
        FloatDType::F32 => "f32",
        FloatDType::F64 => "f64",
        FloatDType::BF16 => "bf16",
        _ => "other",
    }
}

/// `f(x)` computed in f32 and returned in `x`'s type: for the parts that half precision would spoil.
pub fn in_f32<const D: usize>(x: Tensor<D>, f: impl FnOnce(Tensor<D>) -> Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    if dtype == DType::F32 { f(x) } else { f(x.cast(FloatDType::F32)).cast(FloatDType::from(dtype)) }
}

/// `norm(x)` computed in f32 (a norm's parameters are f32), returned in `x`'s type.
pub fn layer_norm<const D: usize>(norm: &LayerNorm, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    crate::profile::timed(crate::profile::Op::LayerNorm, &device, || in_f32(x, |x| norm.forward(x)))
}

/// Whether parameters of the module type `module_type` (burn's `Struct:Name`) stay f32 in a half-precision model.
fn keeps_f32(module_type: Option<&str>) -> bool {
    matches!(module_type, Some("Struct:GroupNorm" | "Struct:LayerNorm"))
}

/// Loads each tensor of a file in the model's float type (norms' parameters in f32): an f16 file into an f16
/// model is used as it is, with no f32 copy in between.
#[derive(Debug, Clone, Copy)]
pub struct LoadAs(pub FloatDType);

impl ModuleAdapter for LoadAs {
    fn adapt(&self, tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        let target = if keeps_f32(ctx.module_type()) { FloatDType::F32 } else { self.0 };
        FloatCastAdapter::to(target.into()).adapt(tensor, ctx)
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(*self)
    }
}

/// `module` with its parameters cast to `dtype` (norms' parameters stay f32): for models built without files.
pub fn cast_parameters<M: Module>(module: M, dtype: FloatDType) -> M {
    module.map(&mut CastParameters { dtype, containers: Vec::new() })
}

/// The [`ModuleMapper`] behind [`cast_parameters`].
struct CastParameters {
    dtype: FloatDType,
    /// burn's container types down to the current parameter.
    containers: Vec<String>,
}

impl ModuleMapper for CastParameters {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.containers.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let module = self.containers.iter().rev().find(|c| c.starts_with("Struct:") || c.starts_with("Enum:"));
        let dtype = if keeps_f32(module.map(String::as_str)) { FloatDType::F32 } else { self.dtype };
        param.map(|t| t.cast(dtype))
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use super::*;

    #[test]
    fn precision_names_round_trip() {
        for p in [Precision::Auto, Precision::F32, Precision::F16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert!("half".parse::<Precision>().is_err());
    }

    #[test]
    fn cpu_backends_compute_in_f32_and_refuse_f16() {
        #[allow(deprecated)]
        let device = Device::ndarray();
        assert_eq!(Precision::Auto.resolve(&device).unwrap(), FloatDType::F32);
        assert_eq!(Precision::F32.resolve(&device).unwrap(), FloatDType::F32);
        assert!(Precision::F16.resolve(&device).is_err());
    }
}
