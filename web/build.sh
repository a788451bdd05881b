#!/usr/bin/env bash
# Builds the servable site: the fpi-web crate for wasm32 (release), its JS bindings (wasm-bindgen --target web),
# and the page's static files. With FPI_WASM_OPT=1, wasm-opt from npm's binaryen (`npm ci`) also shrinks the wasm
# (43 MB → 23 MB; it takes minutes).
# Usage: bash web/build.sh [OUT]   (OUT defaults to target/site)
# Needs: rustup target add wasm32-unknown-unknown, and wasm-bindgen-cli at Cargo.lock's version:
#   cargo install wasm-bindgen-cli --version $(bash web/wasm-bindgen-version.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/site}

cargo build --release --target wasm32-unknown-unknown -p fpi-web
wanted=$(bash web/wasm-bindgen-version.sh)
if ! wasm-bindgen --version 2>/dev/null | grep -qF "$wanted"; then
  echo "wasm-bindgen-cli $wanted is needed (the version in Cargo.lock): cargo install wasm-bindgen-cli --version $wanted" >&2
  exit 1
fi
rm -rf "$out"
mkdir -p "$out/pkg"
wasm-bindgen --target web --no-typescript --out-dir "$out/pkg" target/wasm32-unknown-unknown/release/fpi_web.wasm
# Debian's wasm-opt breaks the output; npm's binaryen (npm ci) works.
if [ "${FPI_WASM_OPT:-}" = 1 ]; then
  node_modules/.bin/wasm-opt -O2 --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    "$out/pkg/fpi_web_bg.wasm" -o "$out/pkg/fpi_web_bg.wasm"
fi
cp web/*.html web/*.js web/*.css "$out/"
echo "site: $out ($(du -sh "$out/pkg/fpi_web_bg.wasm" | cut -f1) of wasm); serve it with: python3 -m http.server -d $out 8080"
