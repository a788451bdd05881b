//! Raw access to f32 tensors on burn's flex backend, for the CPU kernels that replace burn's where they are slow
//! ([`crate::conv`], [`crate::group_norm`], [`crate::attention`]), and the vectorisable eˣ they share.

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::{DispatchDevice, Flex};
use burn::tensor::{Bytes, DType, Shape, Tensor};

/// Whether `tensor` is an f32 tensor on the flex device.
pub fn is_flex_f32<const D: usize>(tensor: &Tensor<D>) -> bool {
    matches!(tensor.device().as_dispatch(), DispatchDevice::Flex(_)) && tensor.dtype() == DType::F32
}

/// The contiguous flex primitive of a tensor for which [`is_flex_f32`] holds (a view of the same data when it is
/// already contiguous).
pub fn primitive<const D: usize>(tensor: Tensor<D>) -> FlexTensor {
    tensor.try_into_primitive::<Flex>().expect("a tensor on the flex device is a flex tensor").to_contiguous()
}

/// The elements of a primitive from [`primitive`], row-major.
pub fn elements(tensor: &FlexTensor) -> &[f32] {
    tensor.as_slice::<f32>().expect("a contiguous f32 flex tensor")
}

/// A flex tensor of the given shape holding `data` (row-major), without a copy.
pub fn tensor_from_vec<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    debug_assert_eq!(data.len(), shape.iter().product::<usize>());
    let layout = Layout::contiguous(Shape::from(shape.to_vec()));
    Tensor::from_primitive::<Flex>(FlexTensor::new(Bytes::from_elems(data), layout, DType::F32))
}

/// eˣ in f32 to a few ulp, branch-free so that loops over it vectorise: x = n·ln 2 + r with |r| ≤ ln 2 / 2,
/// e^r by its degree-7 Taylor polynomial, 2ⁿ built in the exponent bits. Inputs beyond ±87 saturate (to about
/// 1.6e-38 or 6e37): SiLU is then exact in f32, and a softmax weight that small is nothing beside its maximum (1).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split into a part exact in f32 and the remainder.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and removing 1.5·2²³ rounds to the nearest integer (ties to even) in plain SSE2 arithmetic.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 87.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_matches_the_standard_library_to_a_few_ulp() {
        let mut worst = 0f32;
        for i in -87_000..=87_000 {
            let x = i as f32 / 1000.0;
            let (ours, std) = (super::exp(x), x.exp());
            worst = worst.max(((ours - std) / std).abs());
        }
        assert!(worst < 4.0 * f32::EPSILON, "worst relative error {worst:e}");
    }
}
