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

# The same C plugin built against a later 0.1.x of the contract: the gateway must accept it.
later="$here/target/wit-0.1.9"
mkdir -p "$later"
sed 's/^package synapsor:plugin@0\.1\.0;/package synapsor:plugin@0.1.9;/' "$here/../wit/plugin.wit" >"$later/plugin.wit"
WIT="$later" NAME=method_deny_0_1_9 c/method-deny/build.sh "$here/build"
