//! Times SD1.5's convolution shapes on flex: ours (`fpi_models::conv`) against burn's own.
use std::time::Instant;

use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};

fn main() {
    let device = Device::flex();
    let shapes: &[(usize, usize, usize, usize)] = &[(320, 320, 64, 1), (640, 640, 32, 1), (1280, 1280, 16, 1), (1280, 1280, 8, 1), (128, 128, 256, 1), (256,256,128,1), (512,512,64,1), (320,320,64,2)];
    for &(ci, co, hw, stride) in shapes {
        let x = Tensor::<4>::random([1, ci, hw, hw], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<4>::random([co, ci, 3, 3], Distribution::Normal(0.0, 0.05), &device);
        let b = Tensor::<1>::random([co], Distribution::Normal(0.0, 1.0), &device);
        let ours = || fpi_models::conv::conv2d(x.clone(), w.clone(), Some(b.clone()), stride, [1; 4]).into_data();
        let theirs = || burn_conv2d(x.clone(), w.clone(), Some(b.clone()), ConvOptions::new([stride, stride], [1, 1], [1, 1], 1)).into_data();
        let time = |f: &dyn Fn() -> burn::tensor::TensorData| { f(); let t = Instant::now(); f(); t.elapsed().as_secs_f64() };
        let (a, bt) = (time(&ours), time(&theirs));
        let gflop = 2.0 * (ci * co * 9) as f64 * (hw * hw / stride / stride) as f64 / 1e9;
        println!("{ci}->{co} {hw}² s{stride}: ours {a:.4} s ({:.0} GFLOP/s), burn {bt:.4} s ({:.0} GFLOP/s)", gflop / a, gflop / bt);
    }
}
