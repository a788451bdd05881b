#!/usr/bin/env bash
# fpi (flex, CPU) against PyTorch/diffusers on the CPU, on the same random SD1.5, in one run:
#
#     tests/bench/compare.sh [SIZE] [THREADS]        # defaults: 512, 2
#
# Runs `fpi bench --random --json --device flex --no-inversion` (the binary: $FPI, else target/release/fpi) with
# RAYON_NUM_THREADS=THREADS, then tests/reference/bench_diffusers.py on the CPU with as many torch threads (Python:
# $PYTHON, else .venv-ref/bin/python, else python3; it needs torch, diffusers and transformers), one after the other,
# and prints a Markdown table of both and their ratios. Each side's progress goes to stderr; KEEP=DIR keeps the JSON.
# At 512 each side needs some 6 GB of memory and several minutes on 2 cores.
set -uo pipefail
cd "$(dirname "$0")/../.."
size=${1:-512}
threads=${2:-2}
fpi=${FPI:-target/release/fpi}
python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x .venv-ref/bin/python ]]; then python=.venv-ref/bin/python; else python=python3; fi
fi
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
[[ -n ${KEEP:-} ]] || trap 'rm -rf "$out"' EXIT

echo "== fpi flex ($fpi), size $size, $threads threads" >&2
RAYON_NUM_THREADS=$threads "$fpi" bench --random --json --device flex --size "$size" --no-inversion >"$out/fpi.json" \
    || echo "compare.sh: fpi bench failed (exit $?)" >&2
echo "== PyTorch CPU ($python), size $size, $threads threads" >&2
OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads "$python" tests/reference/bench_diffusers.py \
    --device cpu --threads "$threads" --size "$size" >"$out/pytorch-cpu.json" \
    || echo "compare.sh: bench_diffusers.py failed (exit $?)" >&2
echo >&2
"$python" tests/reference/bench_diffusers.py --compare "$out/fpi.json" "$out/pytorch-cpu.json"
