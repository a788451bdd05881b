#!/usr/bin/env bash
# Runs the test suite: all tests on the ndarray backend, then the model tests on wgpu (a GPU, or lavapipe).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace
FPI_TEST_DEVICE=wgpu cargo test --test model_parity --test loading_errors
