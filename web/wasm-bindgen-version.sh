#!/usr/bin/env bash
# Prints the wasm-bindgen version in Cargo.lock: the wasm-bindgen-cli that web/build.sh needs (and .ci/run installs).
set -euo pipefail
grep -A1 '^name = "wasm-bindgen"$' "$(dirname "$0")/../Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p'
