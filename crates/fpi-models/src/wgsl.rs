//! fpi's own WGSL kernels (the files in `shaders/`), launched on wgpu through burn's custom-kernel route: the
//! kernel's text with its placeholders filled in, the tensors' buffers bound in order, one dispatch.
//!
//! The same text runs natively (wgpu compiles WGSL for Vulkan, Metal and DX12) and in the browser's WebGPU.

use burn::backend::Wgpu;
use burn::backend::wgpu::{CubeDim, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous};
use burn::tensor::{DType, Shape, Tensor};
use cubecl::CubeCount;
use cubecl::client::Client;
use cubecl::prelude::KernelId;
use cubecl::server::{BufferBinding, KernelArguments};

/// Invocations per workgroup of every kernel here.
const WORKGROUP: u32 = 256;

/// Elements of a group that one workgroup takes at most, unless that would need more than [`MAX_SLICES`].
const SLICE: usize = 16384;

/// Slices a group is cut into at most.
const MAX_SLICES: usize = 64;

/// One of `shaders/`'s kernels, for maps of one element type.
struct Shader {
    /// The file's name, which keys the compilation cache.
    name: &'static str,
    source: &'static str,
    half: bool,
}

impl KernelSource for Shader {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(self.source)
            .register("elem", if self.half { "f16" } else { "f32" })
            .register("enable", if self.half { "enable f16;" } else { "" })
            .register("workgroup", WORKGROUP.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.name, self.half))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Whether the group-norm kernels compute a map of this type: f32 or f16 (an f16 map exists only on an adapter with
/// `shader-f16`).
pub fn handles_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16)
}

/// How a group of `count` (> 0) elements is cut: `(slices, chunk)`, each slice `chunk` consecutive elements (the
/// last may be shorter, none is empty).
fn slicing(count: usize) -> (usize, usize) {
    assert!(count > 0, "an empty group has no slices");
    let slices = count.div_ceil(SLICE).clamp(1, MAX_SLICES);
    let chunk = count.div_ceil(slices);
    (count.div_ceil(chunk), chunk)
}

/// The partial statistics of `x` `[B, C, H, W]` (f32 or f16, on wgpu) in `groups` groups
/// (`shaders/group_norm_statistics.wgsl`): `[B, groups, S, 3]` f32, each slice's element count, mean and sum of
/// squared deviations from its mean. Partials of several bands of one map, concatenated along dimension 2,
/// describe the whole map.
pub fn group_norm_statistics(x: Tensor<4>, groups: usize) -> Tensor<4> {
    let [batch, channels, h, w] = x.dims();
    assert_eq!(channels % groups, 0, "group norm of {channels} channels in {groups} groups");
    assert!(handles_dtype(x.dtype()), "the group-norm kernels compute f32 or f16 maps, not {:?}", x.dtype());
    let x = cube(x);
    let (slices, chunk) = slicing(channels / groups * h * w);
    let client = x.client.clone();
    let shape = Shape::from(vec![batch, groups, slices, 3]);
    let partials = client.empty(shape.num_elements() * size_of::<f32>());
    let params = words(&[channels, groups, h * w, slices, chunk].map(|v| v as u32));
    let bindings =
        vec![x.handle.clone().binding(), partials.clone().binding(), client.create_from_slice(&params).binding()];
    let shader = Shader {
        name: "group_norm_statistics",
        source: include_str!("../../../shaders/group_norm_statistics.wgsl"),
        half: x.dtype == DType::F16,
    };
    launch(&client, shader, [slices, groups, batch], bindings);
    Tensor::from_primitive::<Wgpu>(CubeTensor::new_contiguous(client, x.device.clone(), shape, partials, DType::F32))
}

/// Group normalisation of `x` `[B, C, H, W]` (f32 or f16, on wgpu) with the statistics `partials` (from
/// [`group_norm_statistics`] of `x`, or of all the bands of the map `x` is a band of) and the f32 affine parameters
/// `gamma` and `beta` `[C]`, then SiLU if `then_silu` (`shaders/group_norm_silu.wgsl`); in `x`'s type.
pub fn group_norm_silu(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    partials: Tensor<4>,
    epsilon: f64,
    then_silu: bool,
) -> Tensor<4> {
    let [batch, channels, h, w] = x.dims();
    let [partials_batch, groups, per_group_partials, three] = partials.dims();
    assert_eq!(channels % groups, 0, "group norm of {channels} channels in {groups} groups");
    assert_eq!((partials_batch, three), (batch, 3), "partial statistics [B, G, P, 3] of this map's batch");
    let x = cube(x);
    let dtype = x.dtype;
    assert!(handles_dtype(dtype), "the group-norm kernels compute f32 or f16 maps, not {dtype:?}");
    let (slices, chunk) = slicing(channels / groups * h * w);
    let client = x.client.clone();
    let mut params =
        [channels, groups, h * w, slices, chunk, per_group_partials, then_silu as usize].map(|v| v as u32).to_vec();
    params.push((epsilon as f32).to_bits());
    let shape = Shape::from(vec![batch, channels, h, w]);
    let output = client.empty(shape.num_elements() * dtype.size());
    let bindings = vec![
        x.handle.clone().binding(),
        cube(gamma).handle.binding(),
        cube(beta).handle.binding(),
        cube(partials).handle.binding(),
        output.clone().binding(),
        client.create_from_slice(&words(&params)).binding(),
    ];
    let shader = Shader {
        name: "group_norm_silu",
        source: include_str!("../../../shaders/group_norm_silu.wgsl"),
        half: dtype == DType::F16,
    };
    launch(&client, shader, [slices, groups, batch], bindings);
    Tensor::from_primitive::<Wgpu>(CubeTensor::new_contiguous(client, x.device.clone(), shape, output, dtype))
}

/// Enqueues `shader` on `count` = (x, y, z) workgroups with `bindings` in order.
fn launch(client: &Client, shader: Shader, count: [usize; 3], bindings: Vec<BufferBinding>) {
    let [x, y, z] = count.map(|n| n as u32);
    client.launch(
        Box::new(SourceKernel::new(shader, CubeDim::new_1d(WORKGROUP))),
        CubeCount::Static(x, y, z),
        KernelArguments::new().with_buffers(bindings),
    );
}

/// `values` as the bytes of a `array<u32>`.
fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `tensor` (on wgpu) with its elements in row-major order: a view is copied once, so that the kernels that read it
/// next need not each copy it.
pub fn contiguous<const D: usize>(tensor: Tensor<D>) -> Tensor<D> {
    Tensor::from_primitive::<Wgpu>(cube(tensor))
}

/// The contiguous wgpu primitive of a tensor on a wgpu device.
fn cube<const D: usize>(tensor: Tensor<D>) -> CubeTensor {
    into_contiguous(tensor.try_into_primitive::<Wgpu>().expect("a tensor on a wgpu device is a wgpu tensor"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn slices_cover_each_group_without_an_empty_one() {
        for count in [1, 15, 4096, 4097, 40_960, 524_288, 1_048_576, 5_000_000] {
            let (slices, chunk) = super::slicing(count);
            assert!((1..=super::MAX_SLICES).contains(&slices), "{count}: {slices} slices");
            assert!(slices * chunk >= count && (slices - 1) * chunk < count, "{count}: {slices} × {chunk}");
        }
    }
}
