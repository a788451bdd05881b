"""The ops of `cargo run --release -p fpi-models --example flex_ops`, timed in PyTorch on the CPU:

    python tests/reference/bench_ops.py [--threads 2]

Same shapes, one warm-up call, then the best of three; prints one Markdown row each.
"""

import argparse
import time

import torch
import torch.nn.functional as F


def best_of_three(f):
    f()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print("| op | PyTorch |\n| --- | ---: |")
    with torch.inference_mode():
        for b, c, side, stride, (top, left, bottom, right) in [
            (2, 320, 64, 1, (1, 1, 1, 1)),
            (2, 640, 32, 1, (1, 1, 1, 1)),
            (2, 1280, 8, 1, (1, 1, 1, 1)),
            (1, 128, 512, 1, (1, 1, 1, 1)),
            (1, 512, 64, 1, (1, 1, 1, 1)),
            (1, 128, 512, 2, (0, 0, 1, 1)),
        ]:
            x, w = torch.randn(b, c, side, side), torch.randn(c, c, 3, 3) * 0.05
            bias = torch.zeros(c)
            if (top, left) == (bottom, right):
                run = lambda: F.conv2d(x, w, bias, stride, top)  # noqa: E731
            else:  # diffusers' VAE pads bottom and right before its stride-2 convolution
                run = lambda: F.conv2d(F.pad(x, (left, right, top, bottom)), w, bias, stride)  # noqa: E731
            name = f"conv 3×3{' stride 2' if stride == 2 else ''} {c}→{c}, {b}×{side}²"
            print(f"| {name} | {best_of_three(run):.4f} s |")
        for b, c, side in [(2, 320, 64), (2, 1280, 8), (1, 128, 512)]:
            x, norm = torch.randn(b, c, side, side), torch.nn.GroupNorm(32, c, eps=1e-5)
            print(f"| group norm + SiLU {c}, {b}×{side}² | {best_of_three(lambda: F.silu(norm(x))):.4f} s |")
        for b, h, lq, lk, d in [(2, 8, 4096, 4096, 40), (2, 8, 4096, 77, 40), (1, 1, 4096, 4096, 512)]:
            q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, d)
            t = best_of_three(lambda: F.scaled_dot_product_attention(q, k, v))
            print(f"| attention {b}×{h} heads, {lq}×{lk} tokens, dim {d} | {t:.4f} s |")


if __name__ == "__main__":
    main()
