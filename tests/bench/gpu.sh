#!/usr/bin/env bash
# fpi on wgpu (f32 and f16) against PyTorch CUDA (f32 and f16) on the same random SD1.5, on a machine with an NVIDIA
# GPU:
#
#     tests/bench/gpu.sh            # FPI=path/to/fpi (default ./fpi), PYTHON (default python3), SIZE (default 512)
#
# Needs no network and no model files: an `fpi` binary (built elsewhere with `cargo build --profile dist -p fpi-cli`,
# 45 MB, and carried), Python with
# torch (CUDA), diffusers and transformers, and a Vulkan loader. Where the system has no libvulkan.so.1, one carried
# beside fpi, in ./lib, or as Debian packages in ./.gl/*.deb (unpacked into a temporary folder, never into /) is used.
# NVIDIA's Vulkan driver (libGLX_nvidia) also needs glvnd: carry libglvnd0 with libvulkan1 (the first run found no
# adapter without it). Where no NVIDIA Vulkan driver manifest is installed, the container toolkit's
# /usr/local/nvidia/... one is named.
# Each step runs under `timeout` (FPI_TIMEOUT, default 200 s each; TORCH_TIMEOUT, default 90 s each), so the whole
# run ends within 10 minutes; a step that fails or times out leaves its column empty. KEEP=DIR keeps the JSON files.
set -uo pipefail
fpi=${FPI:-./fpi}
[[ -x $fpi ]] || fpi=$(dirname "$0")/../../target/release/fpi
[[ -x $fpi ]] && fpi=$(cd "$(dirname "$fpi")" && pwd)/$(basename "$fpi")
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
size=${SIZE:-512}
helper=tests/reference/bench_diffusers.py
out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
[[ -n ${KEEP:-} ]] || trap 'rm -rf "$out"' EXIT
started=$SECONDS

if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    loader=
    for dir in "$(dirname "$fpi")" "$(dirname "$fpi")/lib" lib; do
        [[ -e $dir/libvulkan.so.1 ]] && { loader=$(cd "$dir" && pwd); break; }
    done
    if [[ -z $loader ]] && compgen -G '.gl/*.deb' >/dev/null && command -v dpkg >/dev/null; then
        for deb in .gl/*.deb; do dpkg -x "$deb" "$out/gl"; done
        loader=$out/gl/usr/lib/x86_64-linux-gnu
    fi
    [[ -n $loader ]] && export LD_LIBRARY_PATH=$loader${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "gpu.sh: Vulkan loader: ${loader:-none found (wgpu will fail)}" >&2
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [[ -z ${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-} && -e $icd ]] \
    && ! compgen -G '/usr/share/vulkan/icd.d/nvidia*.json' >/dev/null \
    && ! compgen -G '/etc/vulkan/icd.d/nvidia*.json' >/dev/null; then
    export VK_DRIVER_FILES=$icd VK_ICD_FILENAMES=$icd
fi

gpus=$(timeout 10 nvidia-smi -L 2>&1) || gpus="nvidia-smi -L failed: $gpus"
for dtype in float32 float16; do
    echo "== PyTorch CUDA $dtype, size $size" >&2
    timeout -k 5 "${TORCH_TIMEOUT:-90}" "$python" "$helper" --device cuda --dtype "$dtype" --size "$size" \
        >"$out/pytorch-cuda-$dtype.json" || echo "gpu.sh: PyTorch $dtype failed or timed out (exit $?)" >&2
done
for precision in f32 f16; do
    echo "== fpi wgpu $precision ($fpi), size $size" >&2
    timeout -k 5 "${FPI_TIMEOUT:-200}" "$fpi" bench --random --json --device wgpu --precision "$precision" \
        --size "$size" --no-inversion >"$out/fpi-$precision.json" \
        || echo "gpu.sh: fpi bench $precision failed or timed out (exit $?)" >&2
done

echo
echo "$gpus"
status=0
for precision in f32 f16; do
    "$python" "$helper" --compare "$out/fpi-$precision.json" "$out/pytorch-cuda-float32.json" \
        "$out/pytorch-cuda-float16.json" || status=$?
    echo
done
echo
echo "gpu.sh: $((SECONDS - started)) s in all"
exit $status
