"""Run a night's stages in this process over files staged in the local S3 server: the features a
segment has when it reaches a given stage, for benches that study one stage on real audio."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "audioverse-bench"


def features_before(files: list, prefix: str, stop_at: str, overrides: list[str] = ()
                    ) -> pa.Table:
    """Stage `files` (infra.demo_corpus.StagedFile) under s3://BUCKET/<prefix>/ and run every
    stage of configs/local.yaml before the stage named `stop_at` over them (each stage as one
    call over all rows, recording stages over all rows at once, which holds every recording
    whole)."""
    from infra import demo_corpus, local_s3
    from operators.storage import ObjectStore
    from pipeline.config import load_config
    from pipeline.dag import stage_plan
    from pipeline.listing import list_inputs
    from schemas.config import StorageConfig

    server = local_s3.start(ROOT / ".local" / "s3", bucket=BUCKET)
    os.environ.update(server.env())
    uri = f"s3://{BUCKET}/{prefix.strip('/')}/"
    demo_corpus.stage(files, uri)
    cfg = load_config(ROOT / "configs" / "local.yaml", [
        f"input.uri={uri}", f"output.uri=s3://{BUCKET}/", "caption.enabled=false", *overrides])
    table = list_inputs(ObjectStore(StorageConfig()), cfg.input, "bench-features")
    for cls, kwargs in stage_plan(cfg, StorageConfig()):
        if cls.name == stop_at:
            break
        stage = cls(**kwargs)
        stage.setup()
        stage._ready = True
        table = stage(table)
    return table
