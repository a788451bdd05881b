#!/usr/bin/env bash
# Runs the test suite: every native test on the ndarray backend; the model tests and the CLI end to end on wgpu
# (a GPU, or lavapipe where there is none); then the browser: the wasm32 tests in headless Chromium on WebGPU, and
# the page test on the built site. (Each native cargo command names --workspace, so all resolve the same features and
# share one build; the wasm32 build is its own.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
FPI_TEST_DEVICE=wgpu cargo test --workspace --test model_parity --test half_precision --test shaders --test profile --test loading_errors --test edit
FPI_TEST_DEVICE=wgpu cargo test --workspace --test cli invert_then_reconstruct_a_photo

export CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver} WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-900}
cargo test --release --target wasm32-unknown-unknown -p fpi-web
node tests/web/model-files.mjs
node tests/web/seeds.mjs
bash web/build.sh target/site
node tests/web/page.mjs target/site
