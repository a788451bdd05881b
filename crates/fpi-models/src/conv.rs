//! 2-D convolutions: our own kernel for f32 on flex, matrix products for f16 ([`taps`]), burn's everywhere else.
//!
//! burn's flex convolution copies the input to channels-last on one thread, builds an im2col tile for every 512
//! output pixels and has gemm pack the weights again for each tile. Ours needs no im2col: a k×k convolution of a
//! zero-padded map is the sum of k² matrix products `W[:, :, i, j] · X`, where X is the padded map (C rows, one
//! per channel) shifted by `i·Wp + j` elements, Wp the padded width. Outputs are computed on the padded grid (Wp
//! columns a row; the extra columns are thrown away), in blocks of rows and output channels small enough to stay
//! in the cache while their k² products accumulate, then cropped into the output with the bias. Each block is one
//! thread's work, so the threads never share a matrix product. A stride s first splits the padded map into its s²
//! phases (rows and columns by their remainder modulo s), each of which is a stride-1 problem for the taps of its
//! phase.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor};

use crate::profile::{self, Op};

/// `conv`'s output for `x` `[B, C, H, W]`: as `conv.forward`, by our kernel on flex.
pub fn forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    profile::timed(Op::convolution(conv.kernel_size[0]), &device, || untimed(conv, x))
}

fn untimed(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right],
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Same => return conv.forward(x),
    };
    let [stride, stride_w] = conv.stride;
    if conv.dilation != [1, 1] || conv.groups != 1 || stride != stride_w {
        return conv.forward(x);
    }
    conv2d(x, conv.weight.val(), conv.bias.as_ref().map(|b| b.val()), stride, padding)
}

/// A convolution with one group and no dilation, the same `stride` along both axes and zero padding
/// `[top, left, bottom, right]`.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    padding: [usize; 4],
) -> Tensor<4> {
    #[cfg(not(target_family = "wasm"))]
    if cpu::handles(&x, &weight, &bias) {
        return cpu::conv2d(x, weight, bias, stride, padding);
    }
    if x.dtype() == DType::F16 {
        return taps::conv2d(x, weight, bias, stride, padding);
    }
    let [top, left, bottom, right] = padding;
    let options = ConvOptions::new_with_padding([stride, stride], [(top, bottom), (left, right)], [1, 1], 1);
    burn_conv2d(x, weight, bias, options)
}

/// Half-precision convolutions as k² matrix products summed in f32.
///
/// burn's direct convolution, which wgpu adapters without cooperative matrices run (lavapipe, most browsers), sums
/// in the tensors' type: over SD's 320–1280 channels an f16 sum is off by about 1e-2. Matrix products accumulate in
/// f32, so `Σ W[:, :, i, j] · X[shifted by (i, j)]` rounds each tap's product to f16 once and keeps their sum in f32
/// (a 1×1 convolution is one product).
mod taps {
    use burn::tensor::{FloatDType, Tensor, s};

    pub(super) fn conv2d(
        x: Tensor<4>,
        weight: Tensor<4>,
        bias: Option<Tensor<1>>,
        stride: usize,
        padding: [usize; 4],
    ) -> Tensor<4> {
        let dtype = FloatDType::from(x.dtype());
        let [top, left, bottom, right] = padding;
        let x = if padding == [0; 4] { x } else { x.pad([(top, bottom), (left, right)], 0.0) };
        let [b, c_in, h, w] = x.dims();
        let [c_out, _, k, _] = weight.dims();
        let (ho, wo) = ((h - k) / stride + 1, (w - k) / stride + 1);
        let mut sum: Option<Tensor<3>> = None;
        for i in 0..k {
            for j in 0..k {
                let (rows, cols) = (i..i + (ho - 1) * stride + 1, j..j + (wo - 1) * stride + 1);
                let tap = if stride == 1 {
                    x.clone().slice(s![.., .., rows, cols])
                } else {
                    x.clone().slice(s![.., .., rows;stride as isize, cols;stride as isize])
                };
                let taps = weight.clone().slice(s![.., .., i, j]).reshape([1, c_out, c_in]).expand([b, c_out, c_in]);
                let product = taps.matmul(tap.reshape([b, c_in, ho * wo])).cast(FloatDType::F32);
                sum = Some(match sum {
                    Some(sum) => sum + product,
                    None => product,
                });
            }
        }
        let out = sum.expect("a kernel has taps").reshape([b, c_out, ho, wo]);
        let out = match bias {
            Some(bias) => out + bias.cast(FloatDType::F32).reshape([1, c_out, 1, 1]),
            None => out,
        };
        out.cast(dtype)
    }
}

#[cfg(not(target_family = "wasm"))]
mod cpu {
    use std::cell::RefCell;

    use burn::tensor::Tensor;
    use gemm::{Parallelism, gemm};
    use rayon::prelude::*;

    use crate::flex::{elements, is_flex_f32, primitive, tensor_from_vec};

    /// Output columns (of the padded grid) one block aims at: with 512 channels in, the shifted right-hand side of
    /// one product is 512 × 1024 floats (2 MiB) and a block of 128 output channels accumulates in 512 KiB.
    const BLOCK_COLUMNS: usize = 1024;

    /// Blocks per thread the work is cut into at least (where the map allows), so threads finish together.
    const BLOCKS_PER_THREAD: usize = 4;

    /// Whether our kernel computes this convolution: f32 tensors on flex and a kernel larger than 1×1 (flex's own
    /// 1×1 path is already one matrix product).
    pub(super) fn handles(x: &Tensor<4>, weight: &Tensor<4>, bias: &Option<Tensor<1>>) -> bool {
        let [.., kh, kw] = weight.dims();
        is_flex_f32(x) && is_flex_f32(weight) && bias.as_ref().is_none_or(is_flex_f32) && kh * kw > 1
    }

    pub(super) fn conv2d(
        x: Tensor<4>,
        weight: Tensor<4>,
        bias: Option<Tensor<1>>,
        stride: usize,
        padding: [usize; 4],
    ) -> Tensor<4> {
        let shape = Shape::new(x.dims(), weight.dims(), stride, padding);
        let (x, weight, bias) = (primitive(x), primitive(weight), bias.map(primitive));
        let out = convolve(&shape, elements(&x), elements(&weight), bias.as_ref().map(elements));
        tensor_from_vec(out, shape.out_dims())
    }

    /// The sizes of one convolution on the padded grid.
    #[derive(Debug, Clone, Copy)]
    struct Shape {
        batch: usize,
        c_in: usize,
        h: usize,
        w: usize,
        c_out: usize,
        kh: usize,
        kw: usize,
        stride: usize,
        /// Zero rows above and columns left of the map.
        top: usize,
        left: usize,
        /// Width of one phase of the padded map (the padded width over the stride, rounded up); also the columns
        /// of the output grid a row.
        wq: usize,
        /// Rows of one phase as stored: enough that the last row's thrown-away columns read inside it.
        rows: usize,
        out_h: usize,
        out_w: usize,
    }

    impl Shape {
        fn new(x: [usize; 4], weight: [usize; 4], stride: usize, [top, left, bottom, right]: [usize; 4]) -> Self {
            let [batch, c_in, h, w] = x;
            let [c_out, c_w, kh, kw] = weight;
            assert_eq!(c_in, c_w, "convolution of {c_in} channels with weights for {c_w}");
            let (hp, wp) = (h + top + bottom, w + left + right);
            assert!(hp >= kh && wp >= kw, "convolution window {kh}×{kw} larger than the padded map {hp}×{wp}");
            let (out_h, out_w) = ((hp - kh) / stride + 1, (wp - kw) / stride + 1);
            let wq = wp.div_ceil(stride);
            // The furthest element any tap reads in its phase: the last grid column, shifted by the largest tap.
            let last_read = (out_h * wq - 1) + (kh - 1) / stride * wq + (kw - 1) / stride;
            let rows = hp.div_ceil(stride).max(last_read / wq + 1);
            Self { batch, c_in, h, w, c_out, kh, kw, stride, top, left, wq, rows, out_h, out_w }
        }

        fn out_dims(&self) -> [usize; 4] {
            [self.batch, self.c_out, self.out_h, self.out_w]
        }

        /// Elements of one phase of one channel.
        fn phase(&self) -> usize {
            self.rows * self.wq
        }

        /// Elements of one channel: its s² phases.
        fn channel(&self) -> usize {
            self.stride * self.stride * self.phase()
        }
    }

    /// A pointer that blocks writing disjoint parts of one output may share between threads.
    #[derive(Clone, Copy)]
    struct Output(*mut f32);
    // SAFETY: each block writes only its own rows of its own output channels.
    unsafe impl Send for Output {}
    unsafe impl Sync for Output {}

    thread_local! {
        /// One block's accumulator, kept per thread so that blocks do not allocate.
        static ACCUMULATOR: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    fn convolve(s: &Shape, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let padded = pad(s, x);
        let threads = rayon::current_num_threads();
        // Cut rows into blocks of about BLOCK_COLUMNS grid columns, then halve the channel blocks (to 32) and the
        // row blocks (to one row) until every thread has BLOCKS_PER_THREAD blocks.
        let mut block_rows = (BLOCK_COLUMNS / s.wq).clamp(1, s.out_h);
        let mut block_channels = s.c_out;
        let blocks = |rows: usize, channels: usize| s.batch * s.out_h.div_ceil(rows) * s.c_out.div_ceil(channels);
        while blocks(block_rows, block_channels) < threads * BLOCKS_PER_THREAD {
            if block_channels > 32 {
                block_channels = block_channels.div_ceil(2);
            } else if block_rows > 1 {
                block_rows = block_rows.div_ceil(2);
            } else {
                break;
            }
        }
        let (row_blocks, channel_blocks) = (s.out_h.div_ceil(block_rows), s.c_out.div_ceil(block_channels));

        let mut out = vec![0f32; s.batch * s.c_out * s.out_h * s.out_w];
        let target = Output(out.as_mut_ptr());
        (0..s.batch * row_blocks * channel_blocks).into_par_iter().for_each(|index| {
            // The closure must capture the whole `Output` (Send and Sync), not only its raw pointer field.
            #[allow(clippy::redundant_locals)]
            let target = target;
            let (b, rest) = (index / (row_blocks * channel_blocks), index % (row_blocks * channel_blocks));
            let (row0, channel0) = ((rest / channel_blocks) * block_rows, (rest % channel_blocks) * block_channels);
            let rows = block_rows.min(s.out_h - row0);
            let channels = block_channels.min(s.c_out - channel0);
            ACCUMULATOR.with_borrow_mut(|acc| {
                let columns = rows * s.wq;
                acc.resize(channels * columns, 0.0);
                accumulate_taps(s, &padded, weight, b, row0, channel0, channels, columns, acc);
                for c in 0..channels {
                    let shift = bias.map_or(0.0, |bias| bias[channel0 + c]);
                    for r in 0..rows {
                        let at = ((b * s.c_out + channel0 + c) * s.out_h + row0 + r) * s.out_w;
                        // SAFETY: `at..at + out_w` is inside `out` and belongs to this block alone.
                        let to = unsafe { std::slice::from_raw_parts_mut(target.0.add(at), s.out_w) };
                        for (x, o) in to.iter_mut().enumerate() {
                            *o = acc[(r * s.wq + x) * channels + c] + shift;
                        }
                    }
                }
            });
        });
        out
    }

    /// The map with its zero border, each (image, channel) as its s² phases: padded row y and column x go to
    /// phase (y mod s, x mod s) at row y / s and column x / s.
    fn pad(s: &Shape, x: &[f32]) -> Vec<f32> {
        let mut padded = vec![0f32; s.batch * s.c_in * s.channel()];
        padded.par_chunks_mut(s.channel()).zip(x.par_chunks(s.h * s.w)).for_each(|(to, from)| {
            for (y, row) in from.chunks(s.w).enumerate() {
                let y = s.top + y;
                let phase_row = (y % s.stride) * s.stride * s.phase() + (y / s.stride) * s.wq;
                if s.stride == 1 {
                    to[phase_row + s.left..][..s.w].copy_from_slice(row);
                    continue;
                }
                for (x, &v) in row.iter().enumerate() {
                    let x = s.left + x;
                    to[phase_row + (x % s.stride) * s.phase() + x / s.stride] = v;
                }
            }
        });
        padded
    }

    /// `acc` = Σ over taps (i, j) of `W[channel0.., :, i, j] · X_b` shifted by the tap, for the grid columns from
    /// row `row0` on, stored column by column (`acc[n · channels + c]`): one single-threaded matrix product a tap.
    /// (With the output channels contiguous, gemm packs both operands, which it would not do for the map's long
    /// rows, and its kernel then reads only packed memory.)
    #[allow(clippy::too_many_arguments)]
    fn accumulate_taps(
        s: &Shape,
        padded: &[f32],
        weight: &[f32],
        b: usize,
        row0: usize,
        channel0: usize,
        channels: usize,
        columns: usize,
        acc: &mut [f32],
    ) {
        let taps = s.kh * s.kw;
        let image = &padded[b * s.c_in * s.channel()..][..s.c_in * s.channel()];
        let filters = &weight[channel0 * s.c_in * taps..][..channels * s.c_in * taps];
        for i in 0..s.kh {
            for j in 0..s.kw {
                let phase = ((i % s.stride) * s.stride + j % s.stride) * s.phase();
                let shift = (i / s.stride) * s.wq + j / s.stride;
                let start = phase + row0 * s.wq + shift;
                // The last element this tap reads stays in its phase (`Shape::rows` makes it so).
                debug_assert!(start + columns <= phase + s.phase());
                let first = i == 0 && j == 0;
                // SAFETY: dst is `acc` (channels × columns, column-major); lhs element (c, k) is
                // filters[c·C·taps + k·taps + i·kw + j], inside `filters`; rhs element (k, n) is
                // image[k·channel + start + n], inside `image` by the assertion above.
                unsafe {
                    gemm(
                        channels,
                        columns,
                        s.c_in,
                        acc.as_mut_ptr(),
                        channels as isize,
                        1,
                        !first,
                        filters.as_ptr().add(i * s.kw + j),
                        taps as isize,
                        (s.c_in * taps) as isize,
                        image.as_ptr().add(start),
                        1,
                        s.channel() as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            }
        }
    }
}

#[cfg(all(test, not(target_family = "wasm")))]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor, TensorData, Tolerance};

    use super::conv2d;

    /// Our flex kernel against burn's ndarray convolution (an independent implementation) on the same numbers.
    fn check(x: [usize; 4], weight: [usize; 4], bias: bool, stride: usize, padding: [usize; 4]) {
        let (flex, ndarray) = (Device::flex(), {
            #[allow(deprecated)]
            Device::ndarray()
        });
        let x_data = Tensor::<4>::random(x, Distribution::Normal(0.0, 1.0), &flex).into_data();
        let w_data = Tensor::<4>::random(weight, Distribution::Normal(0.0, 0.1), &flex).into_data();
        let b_data = bias.then(|| Tensor::<1>::random([weight[0]], Distribution::Normal(0.0, 1.0), &flex).into_data());
        let run = |device: &Device| {
            let tensor = |data: &TensorData| data.clone();
            conv2d(
                Tensor::from_data(tensor(&x_data), device),
                Tensor::from_data(tensor(&w_data), device),
                b_data.as_ref().map(|b| Tensor::from_data(b.clone(), device)),
                stride,
                padding,
            )
            .into_data()
        };
        let (ours, reference) = (run(&flex), run(&ndarray));
        assert_eq!(ours.shape(), reference.shape(), "x {x:?} weight {weight:?} stride {stride} padding {padding:?}");
        ours.assert_approx_eq::<f32>(&reference, Tolerance::absolute(1e-4));
    }

    #[test]
    fn three_by_three_same_padding_matches_burn() {
        check([2, 5, 7, 9], [6, 5, 3, 3], true, 1, [1, 1, 1, 1]);
        check([1, 64, 16, 16], [33, 64, 3, 3], false, 1, [1, 1, 1, 1]);
    }

    #[test]
    fn stride_two_matches_burn_with_symmetric_and_bottom_right_padding() {
        check([2, 4, 8, 10], [3, 4, 3, 3], true, 2, [1, 1, 1, 1]);
        check([1, 4, 9, 7], [5, 4, 3, 3], true, 2, [1, 1, 1, 1]);
        check([1, 3, 8, 8], [4, 3, 3, 3], true, 2, [0, 0, 1, 1]);
        check([1, 3, 7, 9], [4, 3, 3, 3], false, 2, [0, 0, 1, 1]);
    }

    #[test]
    fn unpadded_and_asymmetric_windows_match_burn() {
        check([1, 3, 6, 5], [2, 3, 3, 3], true, 1, [0, 0, 0, 0]);
        check([1, 3, 6, 5], [2, 3, 3, 2], true, 1, [0, 1, 2, 0]);
        check([3, 2, 1, 12], [4, 2, 1, 3], true, 1, [0, 1, 0, 1]);
    }
}
