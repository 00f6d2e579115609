"""Shared fixtures: a real SeaweedFS S3 server, the real demo clips staged into it, local Ray.

Nothing here replaces a component: the server is the real `weed` binary on loopback, the audio
is real recorded audio from Debian packages, the models are the packaged ones.
"""
from __future__ import annotations

import os
import re
import string
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Stages also run in this process (unit tests call them directly): the same fixed CPU kernels as
# the Ray workers (pipeline/dag.py REPRODUCIBLE_CPU_ENV), set before any model library loads.
from pipeline.ray_session import REPRODUCIBLE_CPU_ENV  # noqa: E402 - imports no model library

for _key, _value in REPRODUCIBLE_CPU_ENV.items():
    os.environ.setdefault(_key, _value)
LOCAL_CONFIG = ROOT / "configs" / "local.yaml"
TEST_BUCKET = "audioverse-test"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    from infra import local_s3

    data_dir = tmp_path_factory.mktemp("seaweedfs")
    server = local_s3.start(data_dir, bucket=TEST_BUCKET)
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())  # the pipeline reads the standard AWS variables
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    local_s3.stop(data_dir)


@pytest.fixture(scope="session")
def s3_client(s3_server):
    from model_serving.s3client import make_s3_client
    from schemas.config import StorageConfig

    return make_s3_client(StorageConfig())


@pytest.fixture(scope="session")
def demo_corpus(s3_server, s3_client):
    """The few-clip demo set (all containers, planted bad files) under s3://audioverse-test/raw/."""
    from infra import demo_corpus

    files = demo_corpus.demo_files(small=True)
    demo_corpus.stage(files, f"s3://{TEST_BUCKET}/raw/", client=s3_client)
    return {f.key: f for f in files}


@pytest.fixture(scope="session")
def local_config():
    """configs/local.yaml pointed at the test bucket, with a cheap Ray footprint."""
    from pipeline.config import load_config

    def make(*overrides: str):
        return load_config(LOCAL_CONFIG, [
            f"input.uri=s3://{TEST_BUCKET}/raw/",
            f"output.uri=s3://{TEST_BUCKET}/",
            "ray.object_store_mb=300",
            "run.progress_interval_s=5",
            # A few ledger buckets: a night plans and merges in one task per bucket, and these
            # runs hold a few dozen objects (the default, 16, is for the demo's growth).
            "run.ledger_buckets=4",
            *overrides,
        ])

    return make


@pytest.fixture(scope="session")
def ray_runtime():
    """One local Ray runtime for the whole session (starting Ray costs seconds)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from pipeline.ray_session import WORKER_ENV

    ray.init(num_cpus=6, object_store_memory=300 * 1024 * 1024, include_dashboard=False,
             _node_ip_address="127.0.0.1", runtime_env={"env_vars": WORKER_ENV},
             log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def registry():
    from model_serving.registry import ModelRegistry
    from pipeline.config import load_config

    cfg = load_config(LOCAL_CONFIG)
    return ModelRegistry(cfg.models, cfg.model_cache_dir)


# --- reference-based scoring -----------------------------------------------------------------
_WORDS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def normalise(text: str) -> str:
    """Lower case, hyphens as spaces, no punctuation, common abbreviations spelled out."""
    text = text.lower().replace("-", " ")
    text = text.translate(str.maketrans("", "", string.punctuation))
    return " ".join(_WORDS.get(w, w) for w in re.split(r"\s+", text) if w)


def corpus_wer(references: list[str], hypotheses: list[str]) -> float:
    import jiwer

    return jiwer.wer([normalise(r) for r in references], [normalise(h) for h in hypotheses])
