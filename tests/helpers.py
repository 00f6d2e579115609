"""Helpers for stage tests: build listing rows from the real test bucket, run stages in order."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

from operators.decode import DecodeStage
from operators.storage import ObjectStore
from pipeline.listing import list_inputs
from schemas.config import DecodeConfig, InputConfig, StorageConfig


# A cheap config for end-to-end runs: two fast recognisers are enough for agreement; captions
# and pitch are tested elsewhere.
CHEAP = ["caption.enabled=false", "measures.pitch=false", "asr.language=en",
         "asr.systems=" + json.dumps([
             {"name": "whisper-tiny-en", "model": "asr/whisper-tiny-en", "cpu_threads": 2},
             {"name": "pocketsphinx-en", "model": "asr/pocketsphinx-en-us"}])]


AUDIOVERSE_CLI = [sys.executable, "-m", "pipeline.cli"]
ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, env=None, timeout=120) -> tuple[subprocess.CompletedProcess, float]:
    """`audioverse ARGS` as its own process (as cron runs it); returns it and its wall time."""
    started = time.monotonic()
    proc = subprocess.run([*AUDIOVERSE_CLI, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    return proc, time.monotonic() - started


def listing_for(keys: list[str], bucket: str, run_id: str = "test") -> pa.Table:
    """Listing rows (real ETags and sizes) for the given keys under s3://bucket/raw/."""
    table = list_inputs(ObjectStore(StorageConfig()), InputConfig(uri=f"s3://{bucket}/raw/"),
                        run_id)
    wanted = {f"s3://{bucket}/raw/{k}" for k in keys}
    rows = [r for r in table.to_pylist() if r["source_uri"] in wanted]
    assert len(rows) == len(keys), f"not staged: {wanted - {r['source_uri'] for r in rows}}"
    return pa.Table.from_pylist(rows, schema=table.schema)


def by_name(table: pa.Table) -> dict[str, dict]:
    return {r["source_uri"].rsplit("/", 1)[-1]: r for r in table.to_pylist()}


def decoded_for(keys: list[str], bucket: str) -> pa.Table:
    """The decode stage's output for the given keys, as the VAD stage receives it."""
    stage = DecodeStage(StorageConfig(), InputConfig(uri=f"s3://{bucket}/raw/"), DecodeConfig())
    return stage(listing_for(keys, bucket))
