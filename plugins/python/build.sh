#!/usr/bin/env bash
# Builds a Python plugin into a component with componentize-py:
#
#     plugins/python/build.sh APP_DIR OUT.wasm
#
# APP_DIR holds `app.py`, which defines `WitWorld = synapsor_plugin.export(MyPlugin)`, and any
# pure-Python modules it imports. The SDK (plugins/python/sdk/synapsor_plugin) and the contract
# (wit/plugin.wit) come from this checkout, so it works from any folder.
#
# componentize-py (pinned below) is installed from PyPI into a virtualenv under
# plugins/target/toolchains/ the first time (about 10 s; SYNAPSOR_PY_TOOLCHAIN moves it).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 APP_DIR OUT.wasm" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
app="$(cd "$1" && pwd)"
out="$2"
version=0.25.1
venv="${SYNAPSOR_PY_TOOLCHAIN:-$root/plugins/target/toolchains/python}"

if [ ! -x "$venv/bin/componentize-py" ] || [ "$("$venv/bin/componentize-py" --version)" != "componentize-py $version" ]; then
    echo "plugins/python/build.sh: installing componentize-py $version into $venv (once)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
fi
[ -f "$app/app.py" ] || { echo "$0: $app/app.py not found" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
# componentize-py bundles what the app imports from its python path and VIRTUAL_ENV's
# site-packages: the toolchain's own virtualenv, so a build does not depend on what the
# machine's Python has installed (a pure-Python package the app needs goes into APP_DIR:
# `pip install --target APP_DIR PACKAGE`). RUST_BACKTRACE would bury a SyntaxError under
# componentize-py's backtrace.
env -u RUST_BACKTRACE VIRTUAL_ENV="$venv" PYTHONNOUSERSITE=1 \
    "$venv/bin/componentize-py" --quiet -d "$root/wit/plugin.wit" -w interceptor \
    componentize -p "$app" -p "$here/sdk" app -o "$out"
