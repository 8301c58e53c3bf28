#!/bin/sh
# The own-hosts install path: build the wheel, install it (no dev extras) into a fresh
# venv of the given Python, and run the installed `shoal`. Nothing is left behind.
#   scripts/check-install.sh [PYTHON]     (default python3; e.g. ~/.pyenv/versions/3.10.13/bin/python)
set -eu
PY=${1:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT INT TERM
"$PY" -m venv "$WORK/build" && "$WORK/build/bin/pip" -q install build 2>/dev/null
"$WORK/build/bin/python" -m build -q --wheel --outdir "$WORK/dist" "$ROOT" >/dev/null
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" -q install "$WORK"/dist/shoal-*.whl
cd "$WORK"  # not the source tree: the installed package is what runs
"$WORK/venv/bin/shoal" --version
"$WORK/venv/bin/shoal" --help >/dev/null
"$WORK/venv/bin/shoal" lab --help >/dev/null
SHOAL_HOME="$WORK/home" "$WORK/venv/bin/shoal" nodes add web1 >/dev/null
SHOAL_HOME="$WORK/home" "$WORK/venv/bin/shoal" nodes list >/dev/null
"$WORK/venv/bin/python" -c 'import shoal, shoal.agent.build as b; print("python", __import__("sys").version.split()[0], "agent", b.build().build_id)'
echo "install ok: $("$WORK/venv/bin/python" -V)"
