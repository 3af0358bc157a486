#!/usr/bin/env bash
# Builds a JavaScript plugin into a component with esbuild and componentize-js:
#
#     plugins/js/build.sh ENTRY.js OUT.wasm
#
# ENTRY.js exports the world's functions, usually as
# `export const { init, onRequest, onResponse, onRequestMessage, onResponseMessage } = serve(MyPlugin);`
# esbuild bundles it with what it imports into one ES module: the SDK (plugins/js/sdk) is the
# bare import `synapsor-plugin`, npm packages of the toolchain (`@noble/hashes`) resolve from
# its node_modules, and the contract's own imports (`synapsor:plugin/...`) stay imports.
# componentize-js then builds the component against wit/plugin.wit, world `interceptor`, with
# wasi:http left out. The SDK and the contract come from this checkout, so it works from any
# folder.
#
# The toolchain (package.json and package-lock.json here: componentize-js, the preview2-shim it
# loads without declaring it, esbuild and @noble/hashes, pinned) is installed with `npm ci`
# under plugins/target/toolchains/js the first time and whenever the lockfile changes (seconds
# with npm's cache warm; 400 MB; SYNAPSOR_JS_TOOLCHAIN moves it). A build takes 5 to 8 s.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 ENTRY.js OUT.wasm" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
entry="$1"
out="$2"
tc="${SYNAPSOR_JS_TOOLCHAIN:-$root/plugins/target/toolchains/js}"
[ -f "$entry" ] || { echo "$0: $entry not found" >&2; exit 1; }
command -v npm >/dev/null || { echo "$0: needs Node.js (18 or later) and npm" >&2; exit 1; }

# The toolchain is current when its stamp is the hash of this package.json and lockfile.
want="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -c1-64)"
current() { [ -x "$tc/node_modules/.bin/componentize-js" ] && [ "$(cat "$tc/.stamp" 2>/dev/null)" = "$want" ]; }
if ! current; then
    mkdir -p "$tc"
    # One installer at a time (plugins/build.sh may start builds side by side).
    exec 9>"$tc/.lock"
    command -v flock >/dev/null && flock 9
    if ! current; then
        echo "plugins/js/build.sh: installing the JavaScript toolchain into $tc (npm ci, once)" >&2
        rm -f "$tc/.stamp"
        cp "$here/package.json" "$here/package-lock.json" "$tc/"
        (cd "$tc" && npm ci --silent --no-audit --no-fund --update-notifier=false >&2)
        echo "$want" >"$tc/.stamp"
    fi
    exec 9>&-
fi

entry="$(cd "$(dirname "$entry")" && pwd)/$(basename "$entry")"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
# The bundle is named after the entry's folder (examples/ext-authz/app.js: ext-authz.js), the
# name stack traces in the gateway's log show (with the bundle's line numbers).
# componentize-js splits paths at spaces: the name keeps letters, digits, '.', '_' and '-', and
# the scratch folder is under /tmp when TMPDIR has a space.
name="$(basename "$(dirname "$entry")" | tr -c 'A-Za-z0-9._\n-' _).js"
tmp="${TMPDIR:-/tmp}"
case "$tmp" in *" "*) tmp=/tmp ;; esac
work="$(mktemp -d "$tmp/synapsor-js.XXXXXX")"
trap 'rm -rf "$work"' EXIT
NODE_PATH="$tc/node_modules" "$tc/node_modules/.bin/esbuild" "$entry" \
    --bundle --format=esm --platform=neutral --main-fields=module,main \
    --alias:synapsor-plugin="$here/sdk" \
    '--external:synapsor:*' '--external:wasi:*' \
    --log-level=warning --outfile="$work/$name"
# componentize-js prints nothing on success; it keeps its scratch files under TMPDIR, and
# names the source relative to the current folder.
cd "$work"
TMPDIR="$work" "$tc/node_modules/.bin/componentize-js" "$name" \
    --wit "$root/wit/plugin.wit" --world-name interceptor --disable http fetch-event \
    --out "$out"
