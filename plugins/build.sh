#!/usr/bin/env bash
# Builds every plugin into plugins/build/: the Rust ones (this cargo workspace, wasm32-wasip2)
# and the C one. Run from anywhere; the gateway's tests run it before they load plugins.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
cargo build --quiet --release --target wasm32-wasip2
mkdir -p build
for f in target/wasm32-wasip2/release/*.wasm; do
    cp -p "$f" build/
done
c/method-deny/build.sh "$here/build"
