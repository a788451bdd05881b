#!/usr/bin/env python3
"""Writes the tiny model as single-file checkpoints in the original CompVis/LDM key layout, and proves them right.

Runs offline (no Hugging Face hub). The tiny checkpoint holds exactly the weights of tests/fixtures/tiny-sd (written by
make_fixtures.py), renamed as the real `v1-5-pruned-emaonly.safetensors` names them; the standalone VAE is a second
random VAE (seeded), renamed as `vae-ft-mse-840000-ema-pruned.safetensors` names it. A rerun gives the same bytes.

    python tests/reference/make_single_file.py              # tests/fixtures/single-file/ (committed)
    python tests/reference/make_single_file.py --full DIR   # DIR/sd15-ldm.safetensors (f16) from the SD1.5-sized
                                                            # random folder that make_fixtures.py --full DIR writes

Files (tests/fixtures/single-file/):
    tiny-sd.safetensors          UNet + VAE + CLIP of tiny-sd, f32, LDM keys (model.diffusion_model.,
                                 first_stage_model., cond_stage_model.transformer.) plus the extra keys real files
                                 carry (the DDPM schedule buffers betas/alphas_cumprod/..., model_ema.decay and
                                 model_ema.num_updates, the CLIP's position_ids)
    tiny-sd.fp16.safetensors     the same with every float tensor f16 (position_ids and num_updates stay integers)
    tiny-vae.safetensors         a second VAE (tiny-sd's VAE config, another seed), keys encoder./decoder./quant_conv./
                                 post_quant_conv. without a prefix, f32
    tiny-vae/                    the same VAE as a diffusers folder (config.json + diffusion_pytorch_model.safetensors)

The proof loads each file with diffusers' own single-file loaders (StableDiffusionPipeline.from_single_file and
AutoencoderKL.from_single_file, config=<diffusers folder>, local_files_only=True; no original_config yaml is needed when
`config` is a local folder), compares every component's state dict with the folder's (f32: bit-identical; f16: equal
to the folder's weights rounded to f16) and runs CLIP, UNet and VAE forwards on both.

The diffusers -> LDM renaming is written here from the two models' structure. LDM's UNet numbers its blocks
consecutively: input_blocks.0 is conv_in, then each level has layers_per_block blocks [resnet, attention?] and, except
the last level, one block [downsampler]; output_blocks has layers_per_block + 1 blocks [resnet, attention?] per level,
the level's last block also holding the upsampler (at .1 without attention, .2 with). LDM's VAE decoder numbers its
levels from the lowest resolution (up.0 is diffusers' last up block); its attention q/k/v/proj_out are 1x1 convs.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "warning")

import argparse
import hashlib
import json
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
TINY = FIXTURES / "tiny-sd"
OUT = FIXTURES / "single-file"
VAE_SEED = 11

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

# ---------------------------------------------------------------------------------------------------------------------
# diffusers -> LDM names
# ---------------------------------------------------------------------------------------------------------------------

# UNet ResBlock: diffusers' ResnetBlock2D name -> LDM's (in_layers = [GroupNorm, SiLU, Conv], emb_layers = [SiLU,
# Linear], out_layers = [GroupNorm, SiLU, Dropout, Conv]).
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# VAE ResnetBlock: same names except the shortcut.
VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
# VAE mid-block AttnBlock: both diffusers namings (modern and the legacy one SD1.5's folder uses) -> LDM's.
VAE_ATTN = {
    "group_norm": "norm",
    "to_q": "q",
    "query": "q",
    "to_k": "k",
    "key": "k",
    "to_v": "v",
    "value": "v",
    "to_out.0": "proj_out",
    "proj_attn": "proj_out",
}


def _split(key, n):
    """The first n dot-separated parts of key, and the rest joined back."""
    parts = key.split(".")
    return parts[:n], ".".join(parts[n:])


def _rename_head(rest, table):
    """Renames the leading module name(s) of rest (e.g. 'conv1.weight', 'to_out.0.bias') with table."""
    for old in sorted(table, key=len, reverse=True):
        if rest.startswith(old + "."):
            return table[old] + rest[len(old) :]
    raise KeyError(rest)


def unet_to_ldm(state):
    """diffusers UNet2DConditionModel state -> LDM UNetModel state (without the model.diffusion_model. prefix)."""
    levels = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("down_blocks."))
    per_level = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("down_blocks.0.resnets."))
    up_has_attn = {b: any(k.startswith(f"up_blocks.{b}.attentions.") for k in state) for b in range(levels)}

    def name(key):
        (head, *_), _ = _split(key, 1)
        if head == "time_embedding":
            (_, lin), rest = _split(key, 2)
            return {"linear_1": "time_embed.0", "linear_2": "time_embed.2"}[lin] + "." + rest
        if head in ("conv_in", "conv_norm_out", "conv_out"):
            ldm = {"conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}[head]
            return ldm + key[len(head) :]
        if head == "down_blocks":
            (_, b, kind, j), rest = _split(key, 4)
            b, j = int(b), int(j)
            block = 1 + b * (per_level + 1) + j  # +1: each level but the last ends with a downsampler block
            if kind == "resnets":
                return f"input_blocks.{block}.0.{_rename_head(rest, UNET_RESNET)}"
            if kind == "attentions":
                return f"input_blocks.{block}.1.{rest}"  # SpatialTransformer: same inner names as Transformer2DModel
            if kind == "downsamplers" and j == 0 and rest.startswith("conv."):
                # the level's own block after its resnets: LDM's Downsample keeps its conv as `op`
                return f"input_blocks.{(b + 1) * (per_level + 1)}.0.op.{rest[len('conv.'):]}"
        if head == "mid_block":
            (_, kind, j), rest = _split(key, 3)
            if kind == "resnets":
                return f"middle_block.{2 * int(j)}.{_rename_head(rest, UNET_RESNET)}"
            if kind == "attentions" and j == "0":
                return f"middle_block.1.{rest}"
        if head == "up_blocks":
            (_, b, kind, j), rest = _split(key, 4)
            b, j = int(b), int(j)
            up_per_level = per_level + 1
            block = b * up_per_level + j
            if kind == "resnets":
                return f"output_blocks.{block}.0.{_rename_head(rest, UNET_RESNET)}"
            if kind == "attentions":
                return f"output_blocks.{block}.1.{rest}"
            if kind == "upsamplers" and j == 0:
                # the level's last block: [resnet, attention?, upsample]
                pos = 2 if up_has_attn[b] else 1
                return f"output_blocks.{b * up_per_level + up_per_level - 1}.{pos}.{rest}"
        raise KeyError(f"no LDM name for UNet key {key}")

    return _renamed(state, name)


def vae_to_ldm(state):
    """diffusers AutoencoderKL state (either attention naming) -> LDM AutoencoderKL state (no prefix)."""
    up_levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("decoder.up_blocks."))

    def name(key):
        (part, *_), _ = _split(key, 1)
        if part in ("quant_conv", "post_quant_conv"):
            return key
        (part, head), rest = _split(key, 2)
        if head in ("conv_in", "conv_out"):
            return key
        if head == "conv_norm_out":
            return f"{part}.norm_out.{rest}"
        if head in ("down_blocks", "up_blocks"):
            (_, _, i, kind, j), rest = _split(key, 5)
            i = int(i)
            level = f"down.{i}" if head == "down_blocks" else f"up.{up_levels - 1 - i}"  # LDM's up.0: lowest res
            if kind == "resnets":
                return f"{part}.{level}.block.{j}.{_rename_head(rest, VAE_RESNET)}"
            if kind in ("downsamplers", "upsamplers") and j == "0":
                sampler = "downsample" if kind == "downsamplers" else "upsample"
                return f"{part}.{level}.{sampler}.{rest}"
        if head == "mid_block":
            (_, _, kind, j), rest = _split(key, 4)
            if kind == "resnets":
                return f"{part}.mid.block_{int(j) + 1}.{_rename_head(rest, VAE_RESNET)}"
            if kind == "attentions" and j == "0":
                return f"{part}.mid.attn_1.{_rename_head(rest, VAE_ATTN)}"
        raise KeyError(f"no LDM name for VAE key {key}")

    out = _renamed(state, name)
    for k, v in out.items():
        # LDM's AttnBlock uses 1x1 convolutions for q, k, v and proj_out
        if ".mid.attn_1." in k and k.endswith(".weight") and not k.endswith("norm.weight"):
            assert v.ndim == 2, k
            out[k] = v[:, :, None, None]
    return out


def clip_to_ldm(state):
    """transformers CLIPTextModel state (with or without the text_model. level) -> FrozenCLIPEmbedder's."""
    out = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in state.items()}
    positions = out["text_model.embeddings.position_embedding.weight"].shape[0]
    out.setdefault("text_model.embeddings.position_ids", torch.arange(positions, dtype=torch.int64)[None])
    return out


def _renamed(state, name):
    out = {}
    for k, v in state.items():
        new = name(k)
        assert new not in out, f"two keys map to {new}"
        out[new] = v
    return out


def ldm_extras(scheduler_config):
    """The non-model keys of a real SD1.x checkpoint: LatentDiffusion's DDPM schedule buffers (f32, [1000]) and LitEma's
    two scalars. Loaders must ignore them."""
    n = scheduler_config["num_train_timesteps"]
    assert scheduler_config["beta_schedule"] == "scaled_linear"
    betas = np.linspace(scheduler_config["beta_start"] ** 0.5, scheduler_config["beta_end"] ** 0.5, n, dtype=np.float64)
    betas = betas**2
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    buffers = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    out = {k: torch.tensor(v, dtype=torch.float32) for k, v in buffers.items()}
    out["model_ema.decay"] = torch.tensor(0.9999, dtype=torch.float32)
    out["model_ema.num_updates"] = torch.tensor(0, dtype=torch.int32)
    return out


def sd_checkpoint(folder: Path):
    """The LDM state of a diffusers SD1.x folder: read straight from its safetensors files (so values are bit-exact)."""
    unet = read_safetensors(folder / "unet" / "diffusion_pytorch_model.safetensors")
    vae = read_safetensors(folder / "vae" / "diffusion_pytorch_model.safetensors")
    te = folder / "text_encoder"
    clip_file = te / "model.safetensors" if (te / "model.safetensors").exists() else te / "model.fp16.safetensors"
    clip = read_safetensors(clip_file)
    ckpt = {}
    parts = ((UNET_PREFIX, unet_to_ldm(unet)), (VAE_PREFIX, vae_to_ldm(vae)), (CLIP_PREFIX, clip_to_ldm(clip)))
    for prefix, part in parts:
        ckpt.update({prefix + k: v for k, v in part.items()})
    ckpt.update(ldm_extras(json.loads((folder / "scheduler" / "scheduler_config.json").read_text())))
    return ckpt


def read_safetensors(path: Path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def floats_to(state, dtype):
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def write(state, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, path, metadata={"format": "pt"})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(state)} tensors, sha256 {digest}…)")


def print_key_counts(state, title):
    """Keys per prefix: the three models' prefixes, their second level, and the extra keys."""
    top, sub = Counter(), Counter()
    for k in state:
        p = k.split(".")
        if k.startswith(UNET_PREFIX):
            top[UNET_PREFIX] += 1
            sub[UNET_PREFIX + p[2]] += 1
        elif k.startswith(CLIP_PREFIX):
            top[CLIP_PREFIX] += 1
        elif k.startswith(VAE_PREFIX):
            top[VAE_PREFIX] += 1
            sub[VAE_PREFIX + p[1]] += 1
        elif p[0] in ("encoder", "decoder", "quant_conv", "post_quant_conv"):
            top[p[0] + "."] += 1
        elif p[0] == "model_ema":
            top["model_ema."] += 1
        else:
            top["(schedule buffers)"] += 1
    print(f"{title}: {len(state)} keys")
    print("    " + ", ".join(f"{k} {v}" for k, v in top.items()))
    if sub:
        print("    " + ", ".join(f"{k} {v}" for k, v in sub.items()))


# ---------------------------------------------------------------------------------------------------------------------
# proof with diffusers' single-file loaders
# ---------------------------------------------------------------------------------------------------------------------


class Warnings(logging.Handler):
    """Collects diffusers' and transformers' warnings (e.g. 'Some weights of the model checkpoint were not used')."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []
        for name in ("diffusers", "transformers"):
            logging.getLogger(name).addHandler(self)

    def emit(self, record):
        self.messages.append(record.getMessage())

    def take(self):
        out, self.messages = self.messages, []
        return out


def compare_states(name, loaded, folder, f16):
    """Every tensor of loaded equals the folder's (rounded to f16 first where f16); returns max |diff| to the
    unrounded folder weights (the f16 rounding's size)."""
    ls, fs = loaded.state_dict(), folder.state_dict()
    assert set(ls) == set(fs), (name, set(ls) ^ set(fs))
    worst_exact = worst_round = 0.0
    for k, v in fs.items():
        got = ls[k]
        assert not got.is_meta, f"{name}.{k} was not loaded"
        assert got.dtype == v.dtype, (name, k, got.dtype, v.dtype)
        want = v.half().to(v.dtype) if (f16 and v.is_floating_point()) else v
        assert got.shape == want.shape, (name, k)
        if v.is_floating_point():
            worst_exact = max(worst_exact, float((got - want).abs().max()))
            worst_round = max(worst_round, float((got - v).abs().max()))
        assert torch.equal(got, want), f"{name}.{k} differs"
    print(
        f"  {name:13s} {len(fs):4d} tensors: max |single-file - folder{'(f16-rounded)' if f16 else ''}| = "
        f"{worst_exact:.1e}" + (f"   (f16 rounding itself: max {worst_round:.1e})" if f16 else "")
    )


def round_to_f16(model):
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().to(t.dtype))


def forwards(unet, vae, clip, tokenizer, latent):
    g = torch.Generator().manual_seed(5)
    out = {}
    with torch.no_grad():
        ids = tokenizer(
            ["a photograph of an astronaut riding a horse"], padding="max_length", max_length=77, return_tensors="pt"
        ).input_ids
        ctx = clip(ids).last_hidden_state
        out["clip"] = ctx
        z = torch.randn(1, 4, latent, latent, generator=g)
        out["unet"] = unet(z, 500, ctx).sample
        size = latent * 2 ** (len(vae.config.block_out_channels) - 1)
        img = torch.rand(1, 3, size, size, generator=g) * 2 - 1
        post = vae.encode(img).latent_dist
        out["vae.mean"], out["vae.logvar"] = post.mean, post.logvar
        out["vae.decoded"] = vae.decode(z).sample
    return out


def compare_forwards(a, b):
    for k in a:
        d = float((a[k] - b[k]).abs().max())
        print(f"  forward {k:12s} {tuple(a[k].shape)}: max |single-file - folder| = {d:.1e}")
        assert torch.equal(a[k], b[k]), k


def prove_pipeline(path: Path, folder: Path, f16: bool, latent: int, warnings: Warnings):
    print(f"StableDiffusionPipeline.from_single_file({path.name}, config={folder}, local_files_only=True)")
    pipe = StableDiffusionPipeline.from_single_file(
        str(path),
        config=str(folder),
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
        low_cpu_mem_usage=False,  # without accelerate diffusers falls back to this, with a warning
    )
    msgs = warnings.take()
    for m in msgs:
        print("  diffusers/transformers warning:", m.splitlines()[0][:200])
    assert not any("not used" in m or "not initialized" in m or "missing" in m.lower() for m in msgs), msgs

    te = folder / "text_encoder"
    variant = None if (te / "model.safetensors").exists() else "fp16"
    ref = {
        "unet": UNet2DConditionModel.from_pretrained(folder / "unet", low_cpu_mem_usage=False).eval(),
        "vae": AutoencoderKL.from_pretrained(folder / "vae", low_cpu_mem_usage=False).eval(),
        "text_encoder": CLIPTextModel.from_pretrained(te, variant=variant, dtype=torch.float32).eval(),
    }
    for name, model in ref.items():
        compare_states(name, getattr(pipe, name), model, f16)
        if f16:
            round_to_f16(model)
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    got = forwards(pipe.unet, pipe.vae, pipe.text_encoder, tok, latent)
    want = forwards(ref["unet"], ref["vae"], ref["text_encoder"], tok, latent)
    compare_forwards(got, want)
    print(f"  scheduler: {type(pipe.scheduler).__name__}, tokenizer: {type(pipe.tokenizer).__name__}")


def prove_vae(path: Path, folder: Path, warnings: Warnings):
    print(f"AutoencoderKL.from_single_file({path.name}, config={folder}, local_files_only=True)")
    vae = AutoencoderKL.from_single_file(str(path), config=str(folder), local_files_only=True, low_cpu_mem_usage=False)
    msgs = warnings.take()
    for m in msgs:
        print("  diffusers warning:", m.splitlines()[0][:200])
    assert not msgs, msgs
    ref = AutoencoderKL.from_pretrained(folder, low_cpu_mem_usage=False).eval()
    compare_states("vae", vae, ref, False)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        img = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
        z = torch.randn(1, 4, 16, 16, generator=g)
        a = {"vae.mean": vae.encode(img).latent_dist.mean, "vae.decoded": vae.decode(z).sample}
        b = {"vae.mean": ref.encode(img).latent_dist.mean, "vae.decoded": ref.decode(z).sample}
    compare_forwards(a, b)


# ---------------------------------------------------------------------------------------------------------------------


def config_json(model, path: Path):
    cfg = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    cfg["_class_name"] = type(model).__name__
    path.write_text(json.dumps(cfg, indent=2, default=list) + "\n")


def tiny_vae(out_dir: Path):
    """A second random VAE with tiny-sd's VAE config, as a diffusers folder; returns its state."""
    cfg = json.loads((TINY / "vae" / "config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    torch.manual_seed(VAE_SEED)
    vae = AutoencoderKL(**cfg).eval()
    state = {k: v.detach().contiguous() for k, v in vae.state_dict().items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    config_json(vae, out_dir / "config.json")
    write(state, out_dir / "diffusion_pytorch_model.safetensors")
    return state


def example_keys(ckpt):
    picks = {
        "UNet resnet": r"input_blocks\.1\.0\.(in_layers\.2|emb_layers\.1)\.weight",
        "UNet resnet skip": r"input_blocks\.\d+\.0\.skip_connection\.weight",
        "UNet attention": r"input_blocks\.1\.1\.(proj_in|transformer_blocks\.0\.attn2\.to_k)\.weight",
        "UNet downsampler": r"\.op\.weight",
        "UNet upsampler": r"output_blocks\.\d+\.\d\.conv\.weight",
        "VAE resnet": r"decoder\.up\.0\.block\.0\.(conv1|nin_shortcut)\.weight",
        "VAE attention": r"encoder\.mid\.attn_1\.(norm|q|proj_out)\.weight",
        "VAE sampling": r"(downsample|upsample)\.conv\.weight",
        "CLIP": r"layers\.0\.self_attn\.q_proj\.weight|position_ids|token_embedding",
        "extras": r"^(model_ema|alphas_cumprod|betas)",
    }
    for what, pattern in picks.items():
        hits = [k for k in ckpt if re.search(pattern, k)]
        print(f"  {what:17s} " + ", ".join(f"{k} {list(ckpt[k].shape)}" for k in hits[:4]))


def tiny(warnings: Warnings):
    OUT.mkdir(parents=True, exist_ok=True)
    ckpt = sd_checkpoint(TINY)
    print_key_counts(ckpt, "tiny-sd LDM checkpoint")
    example_keys(ckpt)
    write(ckpt, OUT / "tiny-sd.safetensors")
    write(floats_to(ckpt, torch.float16), OUT / "tiny-sd.fp16.safetensors")
    vae_state = tiny_vae(OUT / "tiny-vae")
    standalone = vae_to_ldm(vae_state)
    print_key_counts(standalone, "tiny-vae standalone checkpoint")
    write(standalone, OUT / "tiny-vae.safetensors")

    prove_pipeline(OUT / "tiny-sd.safetensors", TINY, False, 16, warnings)
    prove_pipeline(OUT / "tiny-sd.fp16.safetensors", TINY, True, 16, warnings)
    prove_vae(OUT / "tiny-vae.safetensors", OUT / "tiny-vae", warnings)


def full(folder: Path, warnings: Warnings):
    configs = ("unet/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json")
    for config in configs:
        print(f"--- {folder / config}")
        print((folder / config).read_text().strip())
    ckpt = floats_to(sd_checkpoint(folder), torch.float16)
    print_key_counts(ckpt, "SD1.5-sized LDM checkpoint")
    example_keys(ckpt)
    path = folder / "sd15-ldm.safetensors"
    write(ckpt, path)
    del ckpt
    prove_pipeline(path, folder, True, 16, warnings)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", type=Path, help="a folder from make_fixtures.py --full: write DIR/sd15-ldm.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(1 if not args.full else os.cpu_count())
    warnings = Warnings()
    if args.full:
        full(args.full, warnings)
    else:
        tiny(warnings)
    print("all checks passed")


if __name__ == "__main__":
    main()
