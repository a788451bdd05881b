#!/usr/bin/env bash
# Does fixed-point inversion still converge in f16? Inverts one photo with K = 1…8 iterations per step in f32 and in
# f16 on wgpu (an adapter with shader-f16: lavapipe has it), and prints a Markdown table of the reconstruction
# (latent error and PSNR of the seed sampled back) and of the residual ‖f(z) − z‖/‖z‖ per step: the median over
# steps of the last iterate's residual, and the largest.
#
#     tests/bench/precision.sh [MODEL] [SIZE] [STEPS]      # defaults: tests/fixtures/tiny-sd, 64, 10
#
# The binary: $FPI, else target/release/fpi. Guidance 2 and no adjustment, as the paper inverts real images; no
# tolerance, so every step makes exactly K evaluations (keep-best still applies). KEEP=DIR keeps seeds and traces.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-tests/fixtures/tiny-sd}
size=${2:-64}
steps=${3:-10}
fpi=${FPI:-target/release/fpi}
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
[[ -n ${KEEP:-} ]] || trap 'rm -rf "$out"' EXIT
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/xdg}
mkdir -p "$XDG_RUNTIME_DIR"

for precision in f32 f16; do
    for k in 1 2 3 4 5 6 7 8; do
        echo "== $precision, K=$k" >&2
        "$fpi" invert --model "$model" --image tests/fixtures/photos/camera.png --prompt "a man with a camera" \
            --size "$size" --steps "$steps" --guidance 2 --adjust 0 --iterations "$k" --device wgpu \
            --precision "$precision" --quiet --output "$out/$precision-$k.safetensors" \
            --trace "$out/$precision-$k.json" --reconstruct "$out/$precision-$k.png" >"$out/$precision-$k.txt"
    done
done

python3 - "$out" "$model" "$size" "$steps" <<'EOF'
import json, re, statistics, sys
from pathlib import Path
out, model, size, steps = Path(sys.argv[1]), *sys.argv[2:]
def row(precision, k):
    text = (out / f"{precision}-{k}.txt").read_text()
    psnr, latent = re.search(r"PSNR ([\d.]+) dB.*latent error ([\d.e+-]+)", text).groups()
    trace = json.loads((out / f"{precision}-{k}.json").read_text())
    last = [s["residuals"][-1] for s in trace]
    return float(latent), float(psnr), statistics.median(last), max(last)
print(f"{model}, {size}×{size}, {steps} steps, guidance 2, on wgpu\n")
print("| K | latent error f32 | latent error f16 | PSNR f32 | PSNR f16 | residual f32 (median / max) | residual f16 (median / max) |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for k in range(1, 9):
    a, b = row("f32", k), row("f16", k)
    print(f"| {k} | {a[0]:.3e} | {b[0]:.3e} | {a[1]:.2f} dB | {b[1]:.2f} dB | {a[2]:.1e} / {a[3]:.1e} | {b[2]:.1e} / {b[3]:.1e} |")
EOF
