#!/usr/bin/env python3
"""Builds the test fixtures: tiny SD1.5-structured models with random weights, and diffusers' outputs on them.

Runs offline (no Hugging Face hub): the models come from configs written here, the CLIP vocabulary from the
BPE file that the PyPI package open_clip_torch ships. Everything is seeded, so a rerun gives the same files.

    python tests/reference/make_fixtures.py                 # tests/fixtures/ (committed)
    python tests/reference/make_fixtures.py --full DIR      # SD1.5-sized random model + references in DIR
    python tests/reference/make_fixtures.py --variants-only # only tests/fixtures/tiny-variants/ + its references

The tiny model is laid out like the real SD1.5 folder: legacy VAE attention names (query/key/value/proj_attn),
CLIP keys with the `text_model.` prefix in `model.fp16.safetensors` (f16), the UNet in f32, PNDM scheduler config,
and a tokenizer folder with vocab.json + merges.txt only. The Rust tests derive the other namings from it.
"""

import argparse
import gzip
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

ROOT = Path(__file__).resolve().parents[1]

TINY_UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[32, 64],
    layers_per_block=2,
    attention_head_dim=2,  # diffusers' SD1.5 quirk: this is the number of heads
    cross_attention_dim=32,
    norm_num_groups=8,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
    up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
    block_out_channels=[16, 32],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=32,
    scaling_factor=0.18215,
)
TINY_CLIP = dict(
    vocab_size=49408,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=32,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)
# The variants set each option the tiny model sets one way the other way, so the model code's other branches are
# compared with diffusers too: linear projections, per-block heads, layers and transformer depths, sin-first
# timestep features shifted by 1; a VAE without (post-)quantisation convolutions or mid-block attention; a CLIP with
# exact GELU (and a small vocabulary, to stay small).
VARIANT_UNET = dict(
    TINY_UNET,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[16, 32],
    layers_per_block=[1, 2],
    attention_head_dim=[2, 4],
    transformer_layers_per_block=[1, 2],
    use_linear_projection=True,
    flip_sin_to_cos=False,
    freq_shift=1,
)
VARIANT_VAE = dict(TINY_VAE, use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=False)
VARIANT_CLIP = dict(TINY_CLIP, vocab_size=1000, bos_token_id=998, eos_token_id=999, hidden_act="gelu")
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2,
    attention_head_dim=8,
    cross_attention_dim=768,
    norm_num_groups=32,
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
SD15_CLIP = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    projection_dim=768,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)
# SD1.5 ships a PNDM config; its betas are what the DDIM schedule uses.
SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "A Photo of a CAT, sitting on a mat!",
    "  lots   of\twhitespace \n here  ",
    "numbers 1234567890 and 3.14159, 42nd street",
    "punctuation: (brackets) [square] {curly} 'quotes' \"double\" ... ?!;",
    "café naïve résumé Ångström",
    "日本語のテキスト and 中文",
    "emoji 🚀🔥 and symbols © ® ™ € £",
    "don't won't it's we're they've I'll he'd",
    "hyphen-ated well-known state-of-the-art e-mail",
    "",
    "a very long prompt " + " ".join(f"word{i} and colour" for i in range(60)),
]


def clip_vocab():
    """vocab.json and merges.txt of SD1.5's tokenizer, rebuilt from open_clip's BPE file."""
    from open_clip.tokenizer import bytes_to_unicode

    spec = importlib.util.find_spec("open_clip")
    bpe = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_tokenizer(out: Path):
    vocab, merges = clip_vocab()
    tok_dir = out / "tokenizer"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    # As in SD1.5's folder: no tokenizer.json (the Rust tests make their own copy with one, see token_fixtures).
    (tok_dir / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True}, indent=2)
    )
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (tok_dir / "special_tokens_map.json").write_text(json.dumps({**specials, "pad_token": "<|endoftext|>"}, indent=2))
    return CLIPTokenizer.from_pretrained(tok_dir)


def test_image(size):
    """A smooth colour image in [-1, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return torch.stack([torch.cos(4 * xx * yy), torch.sin(3 * yy + xx), xx - yy], 0)[None].clamp(-1, 1)


def config_json(model, path: Path, extra=None):
    cfg = dict(model.config)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_") or k == "_class_name"}
    cfg["_class_name"] = type(model).__name__
    if extra:
        cfg.update(extra)
    path.write_text(json.dumps(cfg, indent=2, default=list))


def legacy_vae_keys(state):
    """Real SD1.5 files name the VAE mid-block attention query/key/value/proj_attn."""
    rename = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    out = {}
    for k, v in state.items():
        for new, old in rename.items():
            k = k.replace(new, old)
        out[k] = v
    return out


def contiguous(state):
    return {k: v.detach().contiguous() for k, v in state.items()}


def build(out: Path, unet_cfg, vae_cfg, clip_cfg, latent, refs_path: Path, clip_f16: bool):
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    slow_tok = write_tokenizer(out)

    # --- models -------------------------------------------------------------------------------------------------
    unet = UNet2DConditionModel(**unet_cfg).eval()
    vae = AutoencoderKL(**vae_cfg).eval()
    clip = CLIPTextModel(CLIPTextConfig(**clip_cfg)).eval()
    # Random init leaves the position table tiny; give it the token table's scale so a position bug shows.
    with torch.no_grad():
        emb = getattr(clip, "text_model", clip).embeddings  # transformers 5 dropped the text_model level
        emb.position_embedding.weight.normal_(0.0, 0.5)
        if clip_f16:
            for p in clip.parameters():
                p.copy_(p.half().float())

    (out / "unet").mkdir(exist_ok=True)
    config_json(unet, out / "unet" / "config.json")
    save_file(contiguous(unet.state_dict()), out / "unet" / "diffusion_pytorch_model.safetensors")

    # As SD's authors chose 0.18215: the scaling factor that gives the latents unit variance. Random weights give
    # latents ~0.27 in scale; unscaled, GroupNorm's scale invariance would blow up ε's Jacobian on them.
    with torch.no_grad():
        factor = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
        std = float(vae.encode(test_image(latent * factor)).latent_dist.mean.std())
    vae.register_to_config(scaling_factor=round(1.0 / std, 4))
    (out / "vae").mkdir(exist_ok=True)
    config_json(vae, out / "vae" / "config.json")
    save_file(legacy_vae_keys(contiguous(vae.state_dict())), out / "vae" / "diffusion_pytorch_model.safetensors")

    (out / "text_encoder").mkdir(exist_ok=True)
    clip.config.architectures = ["CLIPTextModel"]
    clip.config.to_json_file(out / "text_encoder" / "config.json")
    # Keys as in SD1.5's file: with the `text_model.` prefix (transformers 5 writes them without it).
    clip_state = {
        k if k.startswith("text_model.") else "text_model." + k: v for k, v in contiguous(clip.state_dict()).items()
    }
    clip_state.pop("text_model.embeddings.position_ids", None)
    if clip_f16:
        save_file({k: v.half() for k, v in clip_state.items()}, out / "text_encoder" / "model.fp16.safetensors")
    else:
        save_file(clip_state, out / "text_encoder" / "model.safetensors")

    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=2))
    (out / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "scheduler": ["diffusers", "PNDMScheduler"],
            },
            indent=2,
        )
    )

    # --- reference outputs --------------------------------------------------------------------------------------
    g = torch.Generator().manual_seed(1)
    refs = {}
    with torch.no_grad():
        ids = slow_tok(PROMPTS[:2], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        refs["clip.ids"] = ids.to(torch.int64)
        refs["clip.hidden"] = clip(ids).last_hidden_state

        ctx_dim = unet_cfg["cross_attention_dim"]
        h = w = latent
        refs["unet.b1.sample"] = torch.randn(1, 4, h, w, generator=g)
        refs["unet.b1.timestep"] = torch.tensor([981], dtype=torch.int64)
        refs["unet.b1.context"] = torch.randn(1, 77, ctx_dim, generator=g)
        refs["unet.b1.eps"] = unet(refs["unet.b1.sample"], 981, refs["unet.b1.context"]).sample
        refs["unet.b2.sample"] = torch.randn(2, 4, h, w, generator=g)
        refs["unet.b2.timestep"] = torch.tensor([21], dtype=torch.int64)
        refs["unet.b2.context"] = torch.randn(2, 77, ctx_dim, generator=g)
        refs["unet.b2.eps"] = unet(refs["unet.b2.sample"], 21, refs["unet.b2.context"]).sample

        factor = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
        size = latent * factor
        # A smooth image with detail, in [-1, 1].
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        img = torch.stack([torch.sin(3 * xx + yy), torch.cos(2 * yy - xx), xx * yy], 0)[None]
        img = (img + 0.1 * torch.randn(img.shape, generator=g)).clamp(-1, 1)
        posterior = vae.encode(img).latent_dist
        refs["vae.image"] = img
        refs["vae.mean"] = posterior.mean
        refs["vae.logvar"] = posterior.logvar
        z = torch.randn(1, 4, h, w, generator=g)
        refs["vae.latent"] = z
        refs["vae.decoded"] = vae.decode(z).sample
    refs_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(contiguous(refs), refs_path)
    return slow_tok


def token_fixtures(tok: CLIPTokenizer, json_dir: Path):
    """Token ids of PROMPTS from transformers' CLIPTokenizer, and the same tokenizer saved as tokenizer.json."""
    json_dir.mkdir(parents=True, exist_ok=True)
    tok.backend_tokenizer.save(str(json_dir / "tokenizer.json"))
    cases = []
    for p in PROMPTS:
        full = tok(p).input_ids
        ids = tok(p, padding="max_length", max_length=77, truncation=True).input_ids
        cases.append({"prompt": p, "ids": ids, "truncated": len(full) > 77})
    assert any(c["truncated"] for c in cases)
    rows = ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)
    (json_dir.parent / "tokens.json").write_text("[\n" + rows + "\n]\n")


INVERSION_PROMPT = "a photograph of an astronaut riding a horse"
INVERSION_STEPS = 50


def ddim_scheduler():
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config({**SCHEDULER, "_class_name": "DDIMScheduler"})
    sched.set_timesteps(INVERSION_STEPS)
    return sched


def guided_eps(unet, z, t, ctx, guidance):
    """ε with classifier-free guidance from one batch of 2 ([unconditional; conditional]), as the pipeline does."""
    if guidance == 1.0:
        return unet(z, t, ctx[1:]).sample
    eps = unet(torch.cat([z, z]), t, ctx).sample
    uncond, cond = eps.chunk(2)
    return uncond + guidance * (cond - uncond)


def ddim_sample(unet, sched, z, ctx, guidance):
    for t in sched.timesteps:
        z = sched.step(guided_eps(unet, z, t, ctx, guidance), t, z).prev_sample
    return z


def invert(unet, sched, z, ctx, guidance, iterations):
    """Fixed-point inversion with ε at the destination timestep; iterations=1 is DDIM inversion."""
    ac = sched.alphas_cumprod.double()
    timesteps = list(reversed(sched.timesteps.tolist()))
    prev_alpha = sched.final_alpha_cumprod.double()
    psi = lambda a: (1 / a - 1).sqrt()
    for t in timesteps:
        a_t = ac[t]
        c1 = float((a_t / prev_alpha).sqrt())
        c2 = float(a_t.sqrt() * (psi(a_t) - psi(prev_alpha)))
        anchor = c1 * z
        zi = z
        for _ in range(iterations):
            zi = anchor + c2 * guided_eps(unet, zi, t, ctx, guidance)
        z = zi
        prev_alpha = a_t
    return z


def inversion_fixtures(model: Path, refs_path: Path):
    """DDIM sampling and DDIM/fixed-point inversion on the tiny model, 50 steps, guidance 1 and 7.5."""
    unet = UNet2DConditionModel.from_pretrained(model / "unet").eval()
    vae = AutoencoderKL.from_pretrained(model / "vae").eval()
    tok = CLIPTokenizer.from_pretrained(model / "tokenizer")
    clip = CLIPTextModel.from_pretrained(model / "text_encoder", variant="fp16", torch_dtype=torch.float32).eval()
    refs = {}
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        ids = tok(["", INVERSION_PROMPT], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        ctx = clip(ids.input_ids).last_hidden_state
        refs["context"] = ctx
        z0 = vae.encode(test_image(32)).latent_dist.mean * vae.config.scaling_factor
        refs["z0"] = z0
        z_t = torch.randn(z0.shape, generator=g)
        refs["noise"] = z_t
        sched = ddim_scheduler()
        refs["schedule.alphas_cumprod"] = sched.alphas_cumprod.clone()
        refs["schedule.final_alpha_cumprod"] = sched.final_alpha_cumprod.reshape(1).clone()
        refs["schedule.timesteps"] = sched.timesteps.to(torch.int64)
        for guidance in (1.0, 7.5):
            tag = f"g{guidance:g}"
            sched = ddim_scheduler()
            refs[f"sample.{tag}"] = ddim_sample(unet, sched, z_t, ctx, guidance)
            for k in (1, 2, 5):
                seed = invert(unet, sched, z0, ctx, guidance, k)
                refs[f"invert.{tag}.k{k}"] = seed
                if guidance == 1.0:
                    back = ddim_sample(unet, sched, seed, ctx, guidance)
                    err = float((back - z0).norm() / z0.norm())
                    print(f"guidance 1, K={k}: invert -> sample relative error {err:.3e}")
    save_file(contiguous(refs), refs_path)


def variant_fixtures(out: Path, refs_path: Path):
    """The variant UNet, VAE and CLIP (random weights) and diffusers'/transformers' outputs on them."""
    torch.manual_seed(3)
    unet = UNet2DConditionModel(**VARIANT_UNET).eval()
    vae = AutoencoderKL(**VARIANT_VAE).eval()
    clip = CLIPTextModel(CLIPTextConfig(**VARIANT_CLIP)).eval()
    with torch.no_grad():
        clip.embeddings.position_embedding.weight.normal_(0.0, 0.5)  # as in build(): so that a position bug shows
    for part, model in (("unet", unet), ("vae", vae)):
        (out / part).mkdir(parents=True, exist_ok=True)
        config_json(model, out / part / "config.json")
        save_file(contiguous(model.state_dict()), out / part / "diffusion_pytorch_model.safetensors")
    (out / "text_encoder").mkdir(parents=True, exist_ok=True)
    clip.config.architectures = ["CLIPTextModel"]
    clip.config.to_json_file(out / "text_encoder" / "config.json")
    clip_state = contiguous(clip.state_dict())
    clip_state.pop("embeddings.position_ids", None)
    save_file(clip_state, out / "text_encoder" / "model.safetensors")

    g = torch.Generator().manual_seed(4)
    refs = {}
    with torch.no_grad():
        refs["clip.ids"] = torch.randint(0, VARIANT_CLIP["vocab_size"], (2, 77), generator=g)
        refs["clip.hidden"] = clip(refs["clip.ids"]).last_hidden_state
        # Two rows at different timesteps: the timestep features differ per row.
        refs["unet.sample"] = torch.randn(2, 4, 16, 16, generator=g)
        refs["unet.timesteps"] = torch.tensor([981, 21], dtype=torch.int64)
        refs["unet.context"] = torch.randn(2, 77, VARIANT_UNET["cross_attention_dim"], generator=g)
        refs["unet.eps"] = unet(refs["unet.sample"], refs["unet.timesteps"], refs["unet.context"]).sample
        refs["vae.image"] = (test_image(32) + 0.1 * torch.randn(1, 3, 32, 32, generator=g)).clamp(-1, 1)
        posterior = vae.encode(refs["vae.image"]).latent_dist
        refs["vae.mean"] = posterior.mean
        refs["vae.logvar"] = posterior.logvar
        refs["vae.latent"] = torch.randn(1, 4, 16, 16, generator=g)
        refs["vae.decoded"] = vae.decode(refs["vae.latent"]).sample
    save_file(contiguous(refs), refs_path)


def photo_fixtures(out: Path):
    """Real photos from scikit-image, small: a non-square colour JPEG and a grey PNG."""
    from PIL import Image
    from skimage import data

    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut()).resize((48, 32), Image.LANCZOS).save(out / "astronaut.jpg", quality=92)
    Image.fromarray(data.camera()).resize((32, 32), Image.LANCZOS).save(out / "camera.png")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", type=Path, help="write an SD1.5-sized random model and references here instead")
    ap.add_argument("--variants-only", action="store_true", help="write only the variant models and references")
    args = ap.parse_args()
    torch.set_num_threads(1 if not args.full else os.cpu_count())
    if args.full:
        build(args.full, SD15_UNET, SD15_VAE, SD15_CLIP, 32, args.full / "reference.safetensors", clip_f16=False)
        return
    fixtures = ROOT / "fixtures"
    variant_fixtures(fixtures / "tiny-variants", fixtures / "reference" / "variants.safetensors")
    if args.variants_only:
        return
    model = fixtures / "tiny-sd"
    slow = build(model, TINY_UNET, TINY_VAE, TINY_CLIP, 16, fixtures / "reference" / "models.safetensors", True)
    token_fixtures(slow, fixtures / "tokenizer-json")
    inversion_fixtures(model, fixtures / "reference" / "inversion.safetensors")
    photo_fixtures(fixtures / "photos")


if __name__ == "__main__":
    main()
