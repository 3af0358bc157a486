#!/usr/bin/env bash
# Builds every plugin into plugins/build/: the Rust ones (this cargo workspace, wasm32-wasip2),
# the C one, and the Python and JavaScript ones (NAME_py.wasm, NAME_js.wasm). Run from
# anywhere; the gateway's tests run it before they load plugins.
#
# On a fresh machine it first installs what is missing: the wasm32-wasip2 target (rustup),
# clang, lld and wasi-libc (Debian packages; needs root or sudo), wit-bindgen and wasm-tools
# (crates.io; a few minutes, once), componentize-py (PyPI) and componentize-js with esbuild
# (npm) under target/toolchains/ (seconds, once). Python and JS components are kept under
# target/lang-cache/ by a hash of their sources, the SDK, the contract and the toolchain, so
# only changed ones are built again (a build takes 6 to 15 s each).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2 >&2
fi
if ! command -v clang >/dev/null || [ ! -d /usr/include/wasm32-wasi ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || {
            echo "plugins/build.sh: install clang lld wasi-libc libclang-rt-dev-wasm32 (Debian) first" >&2
            exit 1
        }
        SUDO="sudo"
    fi
    echo "plugins/build.sh: installing clang, lld and wasi-libc for the C plugin" >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang lld wasi-libc libclang-rt-dev-wasm32 >/dev/null
fi
if ! command -v wit-bindgen >/dev/null; then
    echo "plugins/build.sh: installing wit-bindgen (once)" >&2
    cargo install --locked --quiet wit-bindgen-cli@0.61.0 --no-default-features --features c
fi
if ! command -v wasm-tools >/dev/null; then
    echo "plugins/build.sh: installing wasm-tools (once)" >&2
    cargo install --locked --quiet wasm-tools@1.263.0 --no-default-features --features component
fi

# The plugins build into their own target/ (read below), whatever CARGO_TARGET_DIR the caller
# (say, a gateway build with its target elsewhere) has set.
unset CARGO_TARGET_DIR
cargo build --quiet --release --target wasm32-wasip2
mkdir -p build
for f in target/wasm32-wasip2/release/*.wasm; do
    cp -p "$f" build/
done
c/method-deny/build.sh "$here/build"

# The same C plugin built against a later 0.1.x of the contract: the gateway must accept it.
later="$here/target/wit-0.1.9"
mkdir -p "$later"
sed 's/^package synapsor:plugin@0\.1\.0;/package synapsor:plugin@0.1.9;/' "$here/../wit/v0.1/plugin.wit" >"$later/plugin.wit"
WIT="$later" NAME=method_deny_0_1_9 c/method-deny/build.sh "$here/build"

# Python and JavaScript: each example and test plugin, built unless its cached build is
# current. The two languages build side by side (one core each).
lang_cache="$here/target/lang-cache"
mkdir -p "$lang_cache"
# build_cached SUFFIX BUILDER APP_DIR ENTRY: plugins/build/<dir name, - as _>_SUFFIX.wasm.
build_cached() {
    local suffix="$1" builder="$2" dir="$3" entry="$4"
    local name sum
    name="$(basename "$dir" | tr - _)_$suffix"
    sum="$(cd "$here" && cat "$builder" "$here/../wit/plugin.wit" \
        $(find "$dir" "$(dirname "$builder")/sdk" "$(dirname "$builder")/package-lock.json" \
            -type f -not -path '*/node_modules/*' -not -path '*/__pycache__/*' 2>/dev/null | sort) \
        | sha256sum | cut -c1-16)"
    if [ ! -f "$lang_cache/$name-$sum.wasm" ]; then
        rm -f "$lang_cache/$name"-*.wasm
        "$builder" "$entry" "$lang_cache/$name-$sum.wasm.tmp"
        mv "$lang_cache/$name-$sum.wasm.tmp" "$lang_cache/$name-$sum.wasm"
    fi
    cp -p "$lang_cache/$name-$sum.wasm" "build/$name.wasm"
}
python_all() {
    for d in python/examples/*/ python/testing/*/; do
        build_cached py "$here/python/build.sh" "$here/${d%/}" "$here/${d%/}"
    done
}
js_all() {
    for d in js/examples/*/ js/testing/*/; do
        build_cached js "$here/js/build.sh" "$here/${d%/}" "$here/${d%/}/app.js"
    done
}
python_all &
py_pid=$!
js_all &
js_pid=$!
status=0
wait "$py_pid" || { echo "plugins/build.sh: a Python plugin failed to build" >&2; status=1; }
wait "$js_pid" || { echo "plugins/build.sh: a JavaScript plugin failed to build" >&2; status=1; }
exit "$status"
