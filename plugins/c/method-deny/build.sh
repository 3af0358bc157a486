#!/usr/bin/env bash
# Builds method_deny.wasm: C → core wasm (clang, wasi-libc) → component (wasm-tools).
# Needs: clang, lld, wasi-libc, libclang-rt-dev-wasm32 (Debian), and `wit-bindgen`,
# `wasm-tools` (cargo install wit-bindgen-cli wasm-tools).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../build}"
# WIT and NAME let plugins/build.sh build the same plugin against another 0.1.x of the WIT (the C example stays on 0.1).
wit="${WIT:-$here/../../../wit/v0.1}"
name="${NAME:-method_deny}"
gen="$here/../../target/c-gen/$name"
mkdir -p "$gen" "$out"
wit-bindgen c "$wit" --world interceptor --out-dir "$gen" >"$gen/wit-bindgen.log" 2>&1 || { cat "$gen/wit-bindgen.log"; exit 1; }
clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Werror \
    -I "$gen" -o "$gen/$name.core.wasm" \
    "$here/method_deny.c" "$gen/interceptor.c" "$gen/interceptor_component_type.o"
wasm-tools component new "$gen/$name.core.wasm" -o "$out/$name.wasm"
