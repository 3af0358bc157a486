#!/usr/bin/env bash
# Builds method_deny.wasm: C → core wasm (clang, wasi-libc) → component (wasm-tools).
# Needs: clang, lld, wasi-libc, libclang-rt-dev-wasm32 (Debian), and `wit-bindgen`,
# `wasm-tools` (cargo install wit-bindgen-cli wasm-tools).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../../build}"
gen="$here/../../target/c-gen/method-deny"
mkdir -p "$gen" "$out"
wit-bindgen c "$here/../../../wit" --world interceptor --out-dir "$gen" >"$gen/wit-bindgen.log" 2>&1 || { cat "$gen/wit-bindgen.log"; exit 1; }
clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Werror \
    -I "$gen" -o "$gen/method_deny.core.wasm" \
    "$here/method_deny.c" "$gen/interceptor.c" "$gen/interceptor_component_type.o"
wasm-tools component new "$gen/method_deny.core.wasm" -o "$out/method_deny.wasm"
