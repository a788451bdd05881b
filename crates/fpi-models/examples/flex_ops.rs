//! Times fpi's own flex kernels against burn's flex ops on SD1.5's shapes at 512×512 (UNet at batch 2):
//!
//!     RAYON_NUM_THREADS=2 cargo run --release -p fpi-models --example flex_ops
//!
//! `tests/reference/bench_ops.py` times the same ops in PyTorch. Each op: one call to warm up, then the best of
//! three, read back to the host.

use std::time::Instant;

use burn::nn::GroupNormConfig;
use burn::tensor::activation::silu;
use burn::tensor::module::{attention, conv2d};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use fpi_models::{attention::blocked_attention, conv, group_norm};

/// Seconds of the fastest of three calls after a warm-up.
fn time(f: impl Fn() -> TensorData) -> f64 {
    f();
    (0..3)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn row(name: &str, ours: f64, burn: f64) {
    println!("| {name} | {ours:.4} s | {burn:.4} s | {:.1}× |", burn / ours);
}

fn main() {
    let device = Device::flex();
    let random = |dims: [usize; 4], std: f64| Tensor::<4>::random(dims, Distribution::Normal(0.0, std), &device);
    println!("| op | fpi's kernel | burn's flex op | speed-up |\n| --- | ---: | ---: | ---: |");

    // (batch, channels, side, stride, padding [top, left, bottom, right])
    let convs = [
        (2, 320, 64, 1, [1; 4]),
        (2, 640, 32, 1, [1; 4]),
        (2, 1280, 8, 1, [1; 4]),
        (1, 128, 512, 1, [1; 4]),
        (1, 512, 64, 1, [1; 4]),
        (1, 128, 512, 2, [0, 0, 1, 1]),
    ];
    for (b, c, side, stride, [top, left, bottom, right]) in convs {
        let (x, w) = (random([b, c, side, side], 1.0), random([c, c, 3, 3], 0.05));
        let bias = Tensor::<1>::zeros([c], &device);
        let options = ConvOptions::new_with_padding([stride, stride], [(top, bottom), (left, right)], [1, 1], 1);
        let ours = time(|| {
            conv::conv2d(x.clone(), w.clone(), Some(bias.clone()), stride, [top, left, bottom, right]).into_data()
        });
        let burn = time(|| conv2d(x.clone(), w.clone(), Some(bias.clone()), options.clone()).into_data());
        row(&format!("conv 3×3{} {c}→{c}, {b}×{side}²", if stride == 2 { " stride 2" } else { "" }), ours, burn);
    }

    for (b, c, side) in [(2, 320, 64), (2, 1280, 8), (1, 128, 512)] {
        let x = random([b, c, side, side], 1.0);
        let norm = GroupNormConfig::new(32, c).with_epsilon(1e-5).init(&device);
        let ours = time(|| group_norm::forward(&norm, x.clone(), true).into_data());
        let burn = time(|| silu(norm.forward(x.clone())).into_data());
        row(&format!("group norm + SiLU {c}, {b}×{side}²"), ours, burn);
    }

    // (batch, heads, query tokens, key tokens, head dim)
    for (b, h, lq, lk, d) in [(2, 8, 4096, 4096, 40), (2, 8, 4096, 77, 40), (1, 1, 4096, 4096, 512)] {
        let (q, k, v) = (random([b, h, lq, d], 1.0), random([b, h, lk, d], 1.0), random([b, h, lk, d], 1.0));
        let ours = time(|| blocked_attention(q.clone(), k.clone(), v.clone(), false).into_data());
        let options = AttentionModuleOptions::default();
        let burn = time(|| attention(q.clone(), k.clone(), v.clone(), None, None, options).into_data());
        row(&format!("attention {b}×{h} heads, {lq}×{lk} tokens, dim {d}"), ours, burn);
    }
}
