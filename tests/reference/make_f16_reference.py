#!/usr/bin/env python3
"""diffusers'/transformers' outputs in half precision, for the inputs of the f32 references that make_fixtures.py wrote.

The Rust f16 path is compared against these: same inputs, same models, but weights and inputs in torch.float16.

    python tests/reference/make_f16_reference.py              # model tests/fixtures/tiny-sd
    python tests/reference/make_f16_reference.py --full DIR   # model DIR, written by make_fixtures.py --full

~8 s for the tiny model (1 thread); ~45 s for an SD1.5-sized DIR (2 CPU cores).

Writes tests/fixtures/reference/models-f16.safetensors (resp. DIR/reference-f16.safetensors) with the keys
clip.hidden, unet.b1.eps, unet.b2.eps, vae.mean, vae.logvar, vae.decoded: each computed as in make_fixtures.py's
build() from the f32 inputs in reference/models.safetensors (resp. DIR/reference.safetensors) (clip.ids,
unet.bN.{sample,timestep,context}, vae.image, vae.latent) cast to float16, by the model loaded with
torch_dtype=float16. Outputs are stored as float32 (the f16 values, widened); inputs are not copied. A key whose
inputs the input file lacks is skipped. For each key it prints the relative L2 error ||f16 - f32|| / ||f32|| against
the f32 output stored under the same key: how far f16 alone moves diffusers.

CPU, offline (HF_HUB_OFFLINE=1), deterministic. Every op involved (conv2d, group_norm, layer_norm, linear,
scaled_dot_product_attention, silu/gelu, nearest upsampling) runs in float16 on CPU; this script upcasts nothing
(diffusers' own upcasts, such as its f32 timestep features, stay as they are). One speed workaround: torch's CPU
float16 conv2d on contiguous (NCHW) tensors takes a slow fallback (~40 s for a single 128-channel 3x3 conv at
256x256), while on channels_last tensors it goes through oneDNN. Both accumulate in f32 and round the output to f16
(they agree to 1 f16 ulp with each other and with "f32 conv of the f16 values, rounded"), so the UNet and VAE and
their image inputs are put in channels_last memory format: a layout change, not a numerical one.
"""

import argparse
import os
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel

ROOT = Path(__file__).resolve().parents[1]
F16 = torch.float16
CL = torch.channels_last


def load(model: Path):
    unet = UNet2DConditionModel.from_pretrained(model / "unet", torch_dtype=F16).eval().to(memory_format=CL)
    vae = AutoencoderKL.from_pretrained(model / "vae", torch_dtype=F16).eval().to(memory_format=CL)
    # The tiny model ships its CLIP as model.fp16.safetensors only (as SD1.5 does), the --full one as model.safetensors.
    variant = "fp16" if (model / "text_encoder" / "model.fp16.safetensors").exists() else None
    clip = CLIPTextModel.from_pretrained(model / "text_encoder", variant=variant, torch_dtype=F16).eval()
    return unet, vae, clip


def outputs(unet, vae, clip, inp):
    """Yields (key, f16 output) for each reference key whose inputs are in `inp`, computed as in build()."""
    half = lambda k: inp[k].to(F16)
    image = lambda k: half(k).contiguous(memory_format=CL)
    if "clip.ids" in inp:
        yield "clip.hidden", clip(inp["clip.ids"]).last_hidden_state
    for b in ("b1", "b2"):
        if f"unet.{b}.sample" in inp:
            yield f"unet.{b}.eps", unet(
                image(f"unet.{b}.sample"), inp[f"unet.{b}.timestep"], half(f"unet.{b}.context")
            ).sample
    if "vae.image" in inp:
        posterior = vae.encode(image("vae.image")).latent_dist
        yield "vae.mean", posterior.mean
        yield "vae.logvar", posterior.logvar
    if "vae.latent" in inp:
        yield "vae.decoded", vae.decode(image("vae.latent")).sample


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", type=Path, help="model folder written by make_fixtures.py --full (inputs from there)")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() if args.full else 1)
    if args.full:
        model, inputs, out = args.full, args.full / "reference.safetensors", args.full / "reference-f16.safetensors"
    else:
        refs = ROOT / "fixtures" / "reference"
        model, inputs, out = ROOT / "fixtures" / "tiny-sd", refs / "models.safetensors", refs / "models-f16.safetensors"
    inp = load_file(inputs)
    unet, vae, clip = load(model)
    result = {}
    with torch.no_grad():
        start = time.time()
        for key, y in outputs(unet, vae, clip, inp):
            assert y.dtype == F16, (key, y.dtype)
            y = y.float().contiguous()
            result[key] = y
            f32 = inp[key]
            err = float((y - f32).norm() / f32.norm())
            shape = str(tuple(y.shape))
            print(f"{key:14s} {shape:18s} f16 vs f32 relative L2 error {err:.3e}   ({time.time() - start:.1f} s)")
    save_file(result, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
