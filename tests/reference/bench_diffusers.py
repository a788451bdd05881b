#!/usr/bin/env python3
"""PyTorch/diffusers side of `fpi bench --random`: the same parts of a randomly initialised SD1.5, timed the same way.

    python tests/reference/bench_diffusers.py [--device cpu|cuda] [--dtype float32|float16] [--threads N] [--size S]
    python tests/reference/bench_diffusers.py --compare FPI_JSON TORCH_JSON [TORCH_JSON ...]

The first form builds SD1.5's UNet, VAE and CLIP text encoder (the configs of make_fixtures.py's `--full`, imported from
it: the GPU machine gets the repository's tests/ too, and needs torch, diffusers and transformers) with random
weights in memory, times each part as `fpi bench` does (one warm-up call, then one timed call whose result is read
back to the host; on CUDA after a synchronisation), all under `torch.inference_mode()` with diffusers' and
transformers' default attention (SDPA), and prints one JSON object on stdout (times in seconds, memory in MiB):

    {"device": "pytorch-cpu", "dtype": "float32", "size": 512, "steps": 50, "model": "random SD1.x", "load_s": ...,
     "parts": {"clip": ..., "unet_batch1": ..., "unet_batch2": ..., "vae_encode": ..., "vae_decode": ...,
               "edit_step": ...},
     "inversion_s": null, "peak_resident_mib": ..., "device_in_use_mib": ..., "device_reserved_mib": ...,
     "largest_allocation_mib": ..., ...}

Parts (as in crates/fpi-cli/src/commands.rs, `bench`):
  clip         CLIP on 2 prompts ("" and the prompt), token ids [2, 77] (fixed ids: tokenising is not timed)
  unet_batch1  UNet at timestep 501 on N(0, 1) latents [1, 4, S/8, S/8], text states [1, 77, 768]
  unet_batch2  the same at batch 2 (one guided evaluation)
  vae_encode   VAE encoder on a uniform(-1, 1) image [1, 3, S, S], the posterior mean
  vae_decode   VAE decoder on N(0, 1) latents [1, 4, S/8, S/8]
  edit_step    one Prompt-to-Prompt sampling step: CLIP on 3 prompts, the UNet at batch 4 (both branches, guided),
               guidance and a DDIM step. fpi's step also runs its attention controller on explicit attention
               probabilities; here no controller runs, and attention is SDPA unless `--edit-attention explicit`
               (diffusers' AttnProcessor, the probabilities materialised as Prompt-to-Prompt's processors do).
  load_s       building the random model (and moving it to the device and dtype)
No inversion is timed here (`inversion_s` is null). Memory: `peak_resident_mib` is the process's peak resident set
(getrusage ru_maxrss); on CUDA, `device_in_use_mib` / `device_reserved_mib` are torch.cuda.memory_allocated /
memory_reserved at the end (as fpi reports its pool at the end), `device_peak_allocated_mib` /
`device_peak_reserved_mib` their peaks, and `largest_allocation_mib` the largest segment of the caching allocator
(an upper bound of the largest allocation, rounded up to 2 MiB).

The second form reads fpi's JSON (`fpi bench --random --json`, the first file) and one or more of this script's and
prints a Markdown table: each part's time on each side and the ratio fpi / PyTorch (above 1: fpi is slower).
"""

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

# SD1.5's configuration: the one make_fixtures.py's `--full` models have (the same random architecture fpi times).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import SD15_CLIP, SD15_UNET, SD15_VAE  # noqa: E402

BOS, EOS, CONTEXT = 49406, 49407, 77
# Token ids of "", "a photograph" and "a painting" framed as SD1.5 frames prompts (padded with <|endoftext|>). The ids
# of the words do not matter for the time; tokenising is left out.
PROMPT_IDS = [[], [320, 8853], [320, 3086]]
TIMESTEP = 501
GUIDANCE = 2.0
PARTS = ["clip", "unet_batch1", "unet_batch2", "vae_encode", "vae_decode", "edit_step"]
LABELS = {
    "clip": "CLIP (2 prompts)",
    "unet_batch1": "UNet, batch 1",
    "unet_batch2": "UNet, batch 2 (guidance)",
    "vae_encode": "VAE encode",
    "vae_decode": "VAE decode",
    "edit_step": "edit step (batch 4)",
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def peak_resident_mib():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def token_ids(prompts):
    rows = [[BOS] + ids + [EOS] * (CONTEXT - 1 - len(ids)) for ids in prompts]
    import torch

    return torch.tensor(rows, dtype=torch.long)


def ddim_alphas():
    # SD1.5's scaled_linear betas; the edit step's DDIM update goes from t = 501 to t = 481 (50 steps).
    betas = [(math.sqrt(0.00085) + (math.sqrt(0.012) - math.sqrt(0.00085)) * i / 999) ** 2 for i in range(1000)]
    cumulative, products = 1.0, []
    for b in betas:
        cumulative *= 1.0 - b
        products.append(cumulative)
    return products[TIMESTEP], products[TIMESTEP - 20]


def run(args):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.strict_f32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    import diffusers
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor
    from transformers import CLIPTextConfig, CLIPTextModel

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("bench_diffusers: CUDA is not available to this torch")
    if dtype == torch.float16 and not cuda:
        log("bench_diffusers: float16 on the CPU is slow in PyTorch; timing it anyway")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    S = args.size
    if S % 8:
        sys.exit("bench_diffusers: --size must be a multiple of 8")
    h = S // 8
    log(f"building a random SD1.5 on {device} ({args.dtype}, {torch.get_num_threads()} threads) ...")
    torch.manual_seed(0)
    if cuda:
        torch.zeros(1, device=device)  # the CUDA context, outside `load_s`
    started = time.perf_counter()
    with torch.device(device):
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
        clip = CLIPTextModel(CLIPTextConfig(**SD15_CLIP))
    unet, vae, clip = (m.to(device).eval() for m in (unet, vae, clip))
    if dtype != torch.float32:  # (diffusers warns at any `to(dtype=...)`, float32 too)
        unet, vae, clip = (m.to(dtype=dtype) for m in (unet, vae, clip))
    sync()
    load_s = time.perf_counter() - started
    log(f"{'load (random model)':<28} {load_s:>9.3f} s")

    def latents(b):
        return torch.randn(b, 4, h, h, device=device, dtype=dtype)

    def t(b):
        return torch.full((b,), float(TIMESTEP), device=device)

    def condition(prompts):
        return clip(token_ids(prompts).to(device)).last_hidden_state

    parts = {}

    def timed(name, f):
        f().cpu()
        sync()
        start = time.perf_counter()
        f().cpu()  # read back to the host, as fpi's `time` does
        sync()
        parts[name] = time.perf_counter() - start
        log(f"{LABELS[name]:<28} {parts[name]:>9.3f} s")

    a_t, a_prev = ddim_alphas()

    def edit_step():
        states = condition(PROMPT_IDS)
        empty, source, target = states.split(1)
        context = torch.cat([empty, empty, source, target])
        z = latents(1)
        both = torch.cat([z, z])
        eps = unet(torch.cat([both, both]), t(4), encoder_hidden_states=context).sample
        uncond, cond = eps.chunk(2)
        eps = uncond + GUIDANCE * (cond - uncond)
        x0 = (both - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        return (math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps)[1:]

    with torch.inference_mode():
        states = condition(PROMPT_IDS[:2])
        image = torch.rand(1, 3, S, S, device=device, dtype=dtype) * 2 - 1
        timed("clip", lambda: condition(PROMPT_IDS[:2]))
        timed("unet_batch1", lambda: unet(latents(1), t(1), encoder_hidden_states=states[1:]).sample)
        timed("unet_batch2", lambda: unet(latents(2), t(2), encoder_hidden_states=states).sample)
        timed("vae_encode", lambda: vae.encode(image).latent_dist.mean)
        timed("vae_decode", lambda: vae.decode(latents(1)).sample)
        if args.edit_attention == "explicit":
            processors = unet.attn_processors
            unet.set_attn_processor(AttnProcessor())
            timed("edit_step", edit_step)
            unet.set_attn_processor(processors)
        else:
            timed("edit_step", edit_step)

    mib = 1 << 20
    cudnn = torch.backends.cudnn
    versions = {m.__name__: m.__version__ for m in (torch, diffusers, transformers)}
    result = {
        "device": f"pytorch-{device.type}",
        "dtype": args.dtype,
        "size": S,
        "steps": args.steps,
        "model": "random SD1.x",
        "load_s": load_s,
        "parts": parts,
        "inversion_s": None,
        "peak_resident_mib": peak_resident_mib(),
        "device_in_use_mib": torch.cuda.memory_allocated() / mib if cuda else None,
        "device_reserved_mib": torch.cuda.memory_reserved() / mib if cuda else None,
        "largest_allocation_mib": (
            max((s["total_size"] for s in torch.cuda.memory_snapshot()), default=0) / mib if cuda else None
        ),
        "device_peak_allocated_mib": torch.cuda.max_memory_allocated() / mib if cuda else None,
        "device_peak_reserved_mib": torch.cuda.max_memory_reserved() / mib if cuda else None,
        "threads": torch.get_num_threads(),
        "edit_attention": args.edit_attention,
        "tf32": bool(cuda and dtype == torch.float32 and (cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "versions": versions,
    }
    print(json.dumps(result))


# --- --compare ----------------------------------------------------------------------------------------------------


def read_json(path):
    """The first JSON object with "parts" in `path` (lines around it are skipped); None when there is none."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    decoder = json.JSONDecoder()
    i = text.find("{")
    while i >= 0:
        try:
            value, _ = decoder.raw_decode(text, i)
            if isinstance(value, dict) and "parts" in value:
                return value
        except json.JSONDecodeError:
            pass
        i = text.find("{", i + 1)
    return None


def name(r, fallback):
    if r is None:
        return fallback
    if str(r.get("device", "")).startswith("pytorch"):
        dtype = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}.get(r.get("dtype"), r.get("dtype", ""))
        label = f"PyTorch {r['device'].split('-', 1)[1]} {dtype}".strip()
        return label + (" (TF32)" if r.get("tf32") else "")
    return f"fpi {r.get('device', '?')} {r.get('precision', 'f32')}"


def compare(paths):
    fpi, torches = read_json(paths[0]), [read_json(p) for p in paths[1:]]
    if fpi is None:
        log(f"bench_diffusers: no fpi JSON in {paths[0]}")
    for p, r in zip(paths[1:], torches):
        if r is None:
            log(f"bench_diffusers: no PyTorch JSON in {p}")
    tnames = [name(r, "PyTorch " + Path(p).stem.removeprefix("pytorch-")) for p, r in zip(paths[1:], torches)]
    fname = name(fpi, "fpi")

    def get(r, key):
        if r is None:
            return None
        v = r.get("parts", {}).get(key) if key in PARTS else r.get(key)
        return v if isinstance(v, (int, float)) else None

    def seconds(v):
        return "—" if v is None else f"{v:.3f} s"

    def mebibytes(v):
        return "—" if v is None else f"{v:,.0f} MiB"

    def ratio(a, b):
        return "—" if a is None or not b else f"{a / b:.2f}×"

    rows = [(LABELS[k], k, seconds, True) for k in PARTS]
    rows += [
        ("full inversion", "inversion_s", seconds, True),
        ("load (random model)", "load_s", seconds, True),
        ("peak resident memory", "peak_resident_mib", mebibytes, True),
        ("device memory in use (end)", "device_in_use_mib", mebibytes, True),
        ("device memory reserved (end)", "device_reserved_mib", mebibytes, True),
        ("largest device allocation", "largest_allocation_mib", mebibytes, True),
        ("device peak allocated", "device_peak_allocated_mib", mebibytes, False),
    ]
    every = [fpi] + torches
    first = next((r for r in every if r), {}) or {}
    threads = next((r.get("threads") for r in torches if r and r.get("threads")), None)
    gpu = next((r.get("gpu") for r in torches if r and r.get("gpu")), None)
    facts = [f"size {first.get('size', '?')}×{first.get('size', '?')}", "random SD1.5 weights"]
    if threads and not gpu:
        facts.append(f"{threads} threads")
    if gpu:
        facts.append(gpu)
    sizes = {r.get("size") for r in every if r}
    if len(sizes) > 1:
        facts.append(f"SIZES DIFFER: {sorted(sizes, key=str)}")
    print(", ".join(facts))
    print()
    header = ["part"] + tnames + [fname] + [f"{fname} / {n}" for n in tnames]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|")
    for label, key, fmt, has_ratio in rows:
        values = [get(r, key) for r in every]
        if all(v is None for v in values):
            continue
        f = get(fpi, key)
        ratios = [ratio(f, get(r, key)) if has_ratio else "—" for r in torches]
        print("| " + " | ".join([label] + [fmt(get(r, key)) for r in torches] + [fmt(f)] + ratios) + " |")
    print()
    print(
        "Ratios above 1: fpi takes longer (or more memory). Each time: one call after a warm-up, read back to the host."
        " PyTorch's edit step runs no attention controller (see tests/reference/bench_diffusers.py)."
    )
    return 0 if fpi is not None and all(r is not None for r in torches) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=50, help="reported only (no inversion runs here)")
    ap.add_argument(
        "--edit-attention",
        default="sdpa",
        choices=["sdpa", "explicit"],
        help="attention in the edit step: diffusers' default (SDPA), or materialised probabilities (AttnProcessor)",
    )
    ap.add_argument("--strict-f32", action="store_true", help="CUDA: no TF32 (cuDNN convolutions allow it by default)")
    ap.add_argument("--compare", nargs="+", metavar="JSON", help="FPI_JSON TORCH_JSON...: print the table and exit")
    args = ap.parse_args()
    if args.compare:
        if len(args.compare) < 2:
            ap.error("--compare takes fpi's JSON and at least one of this script's")
        sys.exit(compare(args.compare))
    run(args)


if __name__ == "__main__":
    main()
