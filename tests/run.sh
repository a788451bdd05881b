#!/usr/bin/env bash
# Runs the test suite: every test on the ndarray backend, then the model tests and the CLI end to end on wgpu
# (a GPU, or lavapipe where there is none).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
FPI_TEST_DEVICE=wgpu cargo test --test model_parity --test loading_errors
FPI_TEST_DEVICE=wgpu cargo test -p fpi-cli --test cli invert_then_reconstruct_a_photo
