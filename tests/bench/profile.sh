#!/usr/bin/env bash
# Where fpi's time goes on wgpu, by kernel: runs `fpi bench --random --no-inversion --device wgpu --parts PARTS`
# (default: unet_batch2, one guided UNet step, timed twice) with CubeCL's kernel profiler on and prints a Markdown
# table of the kernels' total time, grouped by kind (burn's kernel type and operation), largest first.
#
#     tests/bench/profile.sh [SIZE] [PRECISION]      # defaults: 256, f32; PARTS=clip,vae_decode,… for others
#
# The binary: $FPI, else target/release/fpi. Each kernel's first launch includes its compilation and is left out.
# The profiler waits for every kernel, so the total exceeds the bench's own times. KEEP=DIR keeps the raw log.
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-256}
precision=${2:-f32}
fpi=${FPI:-target/release/fpi}
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
[[ -n ${KEEP:-} ]] || trap 'rm -rf "$out"' EXIT
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/xdg}
mkdir -p "$XDG_RUNTIME_DIR"

CUBECL_DEBUG_LOG="$out/cubecl.log" CUBECL_DEBUG_OPTION=profile "$fpi" bench --random --device wgpu \
    --precision "$precision" --size "$size" --no-inversion --parts "${PARTS:-unet_batch2}" --quiet >"$out/bench.txt"

python3 - "$out/cubecl.log" "$size" "$precision" <<'EOF'
import collections, re, sys
log, size, precision = sys.argv[1:]
units = {"ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
seen, total, count = set(), collections.Counter(), collections.Counter()
for line in open(log, encoding="utf-8", errors="replace"):
    m = re.match(r"\|\s*([\d.]+)(ns|µs|ms|s)\s*\|\s*(\S+)\s*\|\s*(\S+)", line)
    if not m:
        continue
    seconds = float(m.group(1)) * units[m.group(2)]
    kernel, variant = m.group(3), m.group(4)
    if (kernel, variant) not in seen:  # the first launch compiles
        seen.add((kernel, variant))
        continue
    kind = f"{kernel} {re.sub(r'_[0-9a-f]{8}$', '', variant)}"
    total[kind] += seconds
    count[kind] += 1
whole = sum(total.values())
print(f"fpi bench --random --size {size} --precision {precision} on wgpu: {whole:.1f} s in kernels\n")
print("| kernel | launches | seconds | share |")
print("| --- | ---: | ---: | ---: |")
for kind, seconds in total.most_common(15):
    print(f"| {kind} | {count[kind]} | {seconds:.2f} | {100 * seconds / whole:.1f} % |")
EOF
