#!/usr/bin/env bash
# Build llama-cpp-python (the embedded caption server) for ONE fixed instruction-set level, with
# no run-time CPU dispatch, into .whl/<flags hash>/ and print the wheel's path.
#
# Why: pip's default build is `-march=native` (GGML_NATIVE=ON), so each machine compiles kernels
# for its own CPU and the small caption model computes different numbers, hence writes different
# text, on another CPU model (seen: a caption test that passed here failed on a CI machine).
# Pinning the level (x86-64-v3: AVX2 + FMA + F16C + BMI2, no AVX-512, no AMX, no VNNI) and turning
# off the "all variants" dynamic backends makes every node of a heterogeneous cluster, every CI
# machine and every laptop run the same kernels. tests/test_llama_build.py asserts the level from
# llama.cpp's own system info.
#
# pip's wheel cache ignores CMAKE_ARGS, so a wheel built natively elsewhere could be reused
# silently: the wheel is built here with --no-cache-dir into a folder named by the flags' hash.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_VERSION=0.3.36
case "$(uname -m)" in
  x86_64)
    LEVEL="x86-64-v3"
    FLAGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=OFF -DGGML_CPU_ALL_VARIANTS=OFF \
-DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF \
-DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
-DGGML_OPENMP=ON -DGGML_LLAMAFILE=ON -DGGML_CPU_REPACK=ON" ;;
  *)
    echo "error: the fixed llama.cpp build level is defined for x86_64 only (this is $(uname -m));" \
         "add one for this architecture in scripts/llama_build.sh" >&2
    exit 1 ;;
esac
PYTHON="${1:-.venv/bin/python}"
HASH="$(printf '%s %s %s' "$LLAMA_VERSION" "$LEVEL" "$FLAGS" | sha256sum | cut -c1-12)"
OUT=".whl/llama-$LEVEL-$HASH"
wheel="$(ls "$OUT"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -1 || true)"
if [ -z "$wheel" ]; then
  echo "[install] building llama-cpp-python $LLAMA_VERSION for $LEVEL (no -march=native; ~10 min" \
       "on 2 cores, once per machine)" >&2
  mkdir -p "$OUT"
  CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$PYTHON" -m pip wheel -q --disable-pip-version-check --no-cache-dir --no-deps \
    "llama-cpp-python==$LLAMA_VERSION" -w "$OUT" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  wheel="$(ls "$OUT"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -1 || true)"
  [ -n "$wheel" ] || { echo "error: building llama-cpp-python failed; see the output above" >&2; exit 1; }
fi
echo "$wheel"
