#!/usr/bin/env bash
# `make check-reader-extra`: what a trainer image gets from `pip install 'audioverse-pipeline[reader]'`
# alone. A fresh venv with only that extra (torch, pyarrow, boto3; no Ray, no ASR, no librosa)
# must import pipeline.reader and read a release from S3. Run by .ci/run, not by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.local/reader-venv
DATA=.local/s3-reader-check
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

rm -rf "$VENV" build
"$PYTHON" -m venv "$VENV"
# torch first, pinned to the CPU build (an unpinned torch would pull GBs of CUDA wheels)
pip_quiet() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
  | { grep -v "^WARNING: Location" || true; }; }
pip_quiet torch==2.13.0
pip_quiet ".[reader]"
rm -rf build

.venv/bin/python -m infra.local_s3 start --data-dir "$DATA" --bucket audioverse-test >/dev/null
trap '.venv/bin/python -m infra.local_s3 stop --data-dir "$DATA" >/dev/null' EXIT
eval "$(.venv/bin/python -m infra.local_s3 env --data-dir "$DATA")"
uri="$(.venv/bin/python scripts/check_reader_extra.py write)"
# Not from the checkout: the installed wheel (the script's directory is scripts/, not the root).
(cd /tmp && "$OLDPWD/$VENV/bin/python" "$OLDPWD/scripts/check_reader_extra.py" read "$uri")
# The plain-Parquet route of the README: Hugging Face datasets' Parquet loader, added only now
# (it is not part of the extra), offline.
pip_quiet datasets==5.2.0
(cd /tmp && HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 \
  "$OLDPWD/$VENV/bin/python" "$OLDPWD/scripts/check_reader_extra.py" read-hf "$uri")
