#!/usr/bin/env bash
# Build, install and test the Python package (python/) as a user would: a fresh virtual
# environment in a temporary folder, `pip install ./python pytest numpy` (pip fetches maturin and
# builds the Rust extension, in release mode, in python/target/ or $CARGO_TARGET_DIR), then pytest
# on python/tests/. CI (.ci/run) runs this; extra arguments go to pytest (`-k export`, `-x`).
#
# Needs: the Rust toolchain, python3 (3.8 or later) with venv and pip; on Debian/Ubuntu without
# them this installs python3-venv and python3-pip with apt-get (as root, or through sudo).
# Environment: PYTHON (default python3) picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
say() { echo "python-test: $*" >&2; }

venv=$(mktemp -d "${TMPDIR:-/tmp}/w2v-python-test.XXXXXX")
trap 'rm -rf "$venv"' EXIT
# Debian's python3 makes venvs (with pip) only with python3-venv installed.
if ! "$PYTHON" -m venv "$venv" >/dev/null 2>&1 || [[ ! -x "$venv/bin/pip" ]]; then
  command -v apt-get >/dev/null || { say "$PYTHON cannot make a venv with pip; install venv/pip"; exit 1; }
  say "installing python3-venv and python3-pip"
  SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
  PYTHON=/usr/bin/python3
  rm -rf "$venv" && mkdir -p "$venv"
  "$PYTHON" -m venv "$venv"
fi
"$venv/bin/python" --version
export PIP_DISABLE_PIP_VERSION_CHECK=1
start=$SECONDS
"$venv/bin/python" -m pip install --progress-bar off ./python pytest numpy
say "pip install ./python: $((SECONDS - start)) s"

# From the repository root, so that the source folder python/python/w2v is not importable and the
# tests exercise the installed package. No .pytest_cache in the checkout.
"$venv/bin/python" -m pytest -p no:cacheprovider python/tests "$@"
