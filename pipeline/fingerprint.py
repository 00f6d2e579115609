"""Settings fingerprints: which config an outcome depended on, so a fixed config re-plans it.

Every stage declares the config values its decisions depend on (`Stage.outcome_settings`). The
fingerprint of a stage is a hash over those of that stage and of every stage before it in the
DAG: a recording rejected by the decoder depends only on the decode settings, a segment dropped
by the hallucination rules on everything up to them. The ledger stores with each source the stage
that decided its outcome (the reject stage, or the latest stage that dropped one of its segments)
and that stage's fingerprint; a later run whose config gives that stage another fingerprint plans
the source again (pipeline/ledger.py, `reconfigured`). Kept segments are not re-planned: a config
change that could only add drops is applied by `--full` or `--reprocess`.
"""
from __future__ import annotations

import hashlib
import json

from schemas.config import PipelineConfig


def stage_fingerprints(cfg: PipelineConfig) -> dict[str, str]:
    """stage name -> fingerprint of the outcome settings of that stage and all before it."""
    from pipeline.dag import STAGES

    settings: list = []
    out = {}
    for stage in STAGES:
        settings.append([stage.name, stage.outcome_settings(cfg)])
        blob = json.dumps(settings, sort_keys=True, default=str).encode()
        out[stage.name] = hashlib.sha256(blob).hexdigest()[:16]
    return out


def stage_order() -> dict[str, int]:
    """stage name -> its position in the DAG."""
    from pipeline.dag import STAGES

    return {stage.name: i for i, stage in enumerate(STAGES)}
