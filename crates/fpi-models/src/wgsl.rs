//! fpi's own WGSL kernels (the files in `shaders/`), launched on wgpu through burn's custom-kernel route: the
//! kernel's text with its placeholders filled in, the tensors' buffers bound in order, one dispatch.
//!
//! The same text runs natively (wgpu compiles WGSL for Vulkan, Metal and DX12) and in the browser's WebGPU.

use burn::backend::Wgpu;
use burn::backend::wgpu::{CubeDim, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous};
use burn::tensor::{DType, Shape, Tensor};
use cubecl::CubeCount;
use cubecl::prelude::KernelId;
use cubecl::server::KernelArguments;

/// Invocations per workgroup of the group-norm kernel.
const WORKGROUP: u32 = 256;

/// `shaders/group_norm_silu.wgsl` for one element type.
struct GroupNormSilu {
    half: bool,
}

impl KernelSource for GroupNormSilu {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(include_str!("../../../shaders/group_norm_silu.wgsl"))
            .register("elem", if self.half { "f16" } else { "f32" })
            .register("enable", if self.half { "enable f16;" } else { "" })
            .register("workgroup", WORKGROUP.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.half)
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Whether the group-norm kernel computes a map of this type: f32, or f16 on an adapter with `shader-f16`.
pub fn handles_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16)
}

/// Group normalisation of `x` `[B, C, H, W]` (f32 or f16, on wgpu) in `groups` groups with the f32 affine
/// parameters `gamma` and `beta` `[C]`, then SiLU if `then_silu`; in `x`'s type. `statistics` `[B, groups, 2]`
/// (f32: each group's mean and 1/√(variance + ε)) replaces the kernel's own, for a map held in bands.
pub fn group_norm_silu(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    groups: usize,
    epsilon: f64,
    then_silu: bool,
    statistics: Option<Tensor<3>>,
) -> Tensor<4> {
    let [batch, channels, h, w] = x.dims();
    assert_eq!(channels % groups, 0, "group norm of {channels} channels in {groups} groups");
    let x = cube(x);
    let dtype = x.dtype;
    assert!(handles_dtype(dtype), "the group-norm kernel computes f32 or f16 maps, not {dtype:?}");
    let client = x.client.clone();
    let given = statistics.is_some();
    let statistics = match statistics {
        Some(s) => cube(s).handle,
        None => client.create_from_slice(&0f32.to_le_bytes()),
    };
    let params = [channels as u32, groups as u32, (h * w) as u32, then_silu as u32, given as u32];
    let params: Vec<u8> = params.iter().chain(&[(epsilon as f32).to_bits()]).flat_map(|v| v.to_le_bytes()).collect();
    let shape = Shape::from(vec![batch, channels, h, w]);
    let output = client.empty(shape.num_elements() * dtype.size());
    let bindings = vec![
        x.handle.clone().binding(),
        cube(gamma).handle.binding(),
        cube(beta).handle.binding(),
        statistics.binding(),
        output.clone().binding(),
        client.create_from_slice(&params).binding(),
    ];
    let kernel = GroupNormSilu { half: dtype == DType::F16 };
    client.launch(
        Box::new(SourceKernel::new(kernel, CubeDim::new_1d(WORKGROUP))),
        CubeCount::Static(groups as u32, batch as u32, 1),
        KernelArguments::new().with_buffers(bindings),
    );
    Tensor::from_primitive::<Wgpu>(CubeTensor::new_contiguous(client, x.device.clone(), shape, output, dtype))
}

/// The contiguous wgpu primitive of a tensor on a wgpu device.
fn cube<const D: usize>(tensor: Tensor<D>) -> CubeTensor {
    into_contiguous(tensor.try_into_primitive::<Wgpu>().expect("a tensor on a wgpu device is a wgpu tensor"))
}
