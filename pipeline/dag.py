"""Build the Ray Data DAG of a night: a partition's objects (from the frozen plan) -> decode ->
VAD -> signal measures -> acoustic events -> ASR (several systems) -> agreement -> hallucination
rules -> speaker embeddings -> speaker clustering per recording -> captions (which need the speaker
count) -> the partition's files written by a worker. The only module that knows Ray's scheduling
knobs; each stage's resources come from `ray.resources.<stage>` in the config.

A partition (schemas/layout.py) is one block from start to end: every stage takes a whole block
per call, and Ray Data neither splits nor merges blocks here (no target block size), so every
segment of a recording is in the same block when the speakers are clustered, and the writer gets
exactly one partition. There is no shuffle and no barrier: partitions stream through, the first
is written while later ones are still decoded, and progress shows from the first minute.
"""
from __future__ import annotations

import hashlib
import pickle
import warnings
from dataclasses import dataclass

import pyarrow as pa

from operators.agreement import AgreementStage
from operators.asr import AsrStage
from operators.base import Stage
from operators.caption import CaptionStage
from operators.decode import DecodeStage
from operators.events import EventsStage
from operators.hallucination import HallucinationStage
from operators.measures import MeasuresStage
from operators.partition_io import LoadPartitionStage, WritePartitionStage
from operators.speakers import SpeakerClusterStage, SpeakerEmbedStage
from operators.vad import VadSegmentStage
from pipeline import __version__
from schemas.config import PipelineConfig, StageResources
from schemas.layout import Layout
from schemas.tables import AUDIO_FIELD

# The annotation stages of a night, in order: the one list (the DAG, the stage order of drop
# reasons, and the names `ray.resources.<stage>` accepts all come from it).
STAGES: tuple[type[Stage], ...] = (DecodeStage, VadSegmentStage, MeasuresStage, EventsStage,
                                   AsrStage, AgreementStage, HallucinationStage,
                                   SpeakerEmbedStage, SpeakerClusterStage, CaptionStage)

_task_stages: dict[tuple, Stage] = {}


def _run_task_stage(batch: pa.Table, stage_cls: type[Stage], kwargs: dict) -> pa.Table:
    """Stateless stages run as tasks; keep one instance per worker process across batches (per
    stage and arguments: a worker serves later runs too, with their own run id and config)."""
    key = (stage_cls.__qualname__, hashlib.sha1(pickle.dumps(kwargs)).hexdigest())
    if key not in _task_stages:
        _task_stages[key] = stage_cls(**kwargs)
    return _task_stages[key](batch)


@dataclass(frozen=True)
class CaptionEndpoint:
    """Where the caption stage sends its requests: resolved by the driver before Ray starts
    (the embedded server's port is only known once it runs)."""

    url: str
    model_label: str


def stage_plan(cfg: PipelineConfig, storage, caption: CaptionEndpoint | None = None
               ) -> list[tuple[type[Stage], dict]]:
    """STAGES with their constructor arguments (each stage's `config_kwargs`)."""
    return [(stage_cls, stage_cls.config_kwargs(cfg, storage, caption)) for stage_cls in STAGES]


def stage_resources(cfg: PipelineConfig, stage_cls: type[Stage]) -> StageResources:
    """What the stage declares, with `ray.resources.<stage>` from the config applied on top."""
    override = cfg.ray.resources.get(stage_cls.name)
    return override.apply(stage_cls.resources) if override else stage_cls.resources


def cpu_claims(cfg: PipelineConfig) -> tuple[float, float]:
    """(CPUs the model actors hold for the whole run, CPUs of the largest task). Actors keep
    their CPUs while idle; if they leave less than one task's worth, no decode task is ever
    scheduled and the run hangs without an error, so the config check refuses that."""
    actors = tasks = 0.0
    for stage_cls in STAGES:
        res = stage_resources(cfg, stage_cls)
        if stage_cls.runs_as_actor:
            actors += res.num_cpus * res.concurrency
        else:
            tasks = max(tasks, res.num_cpus)
    return actors, tasks


def apply_stage(ds, stage_cls: type[Stage], kwargs: dict, res: StageResources,
                whole_blocks: bool = True):
    """`ds` through one stage. `whole_blocks`: one block per call (a night's partitions);
    otherwise batches of `res.batch_size` rows (the release's tokenizer)."""
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    common = dict(batch_format="pyarrow", batch_size=None if whole_blocks else res.batch_size,
                  num_cpus=res.num_cpus, zero_copy_batch=True)
    if res.num_gpus:
        common["num_gpus"] = res.num_gpus
    if res.resources:
        common["resources"] = dict(res.resources)
    if stage_cls.runs_as_actor:
        # max_restarts=0: Ray Data passes every actor its constructor arguments by reference,
        # and Ray restarts such actors unreliably (ray-project/ray#53727: the arguments may be
        # gone by then; Ray logs an ERROR line at every run saying so). A worker that dies
        # fails the execution instead, and the runner runs what is not done again
        # (pipeline/ray_session.py `run_with_worker_retries`).
        with warnings.catch_warnings():
            # Ray 2.60 marks **ray_remote_args (max_restarts here) deprecated for 2.64 with no
            # named replacement yet; Ray is pinned, and an upgrade will meet this line.
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            return ds.map_batches(stage_cls, fn_constructor_kwargs=kwargs,
                                  compute=ActorPoolStrategy(size=res.concurrency),
                                  max_restarts=0, **common)
    return ds.map_batches(_run_task_stage, fn_kwargs={"stage_cls": stage_cls, "kwargs": kwargs},
                          compute=TaskPoolStrategy(size=res.concurrency), **common)


def build_dataset(partitions: list[str], cfg: PipelineConfig, *, run_id: str,
                  fingerprints: dict[str, str], caption: CaptionEndpoint | None = None,
                  middle: list[tuple[type[Stage], dict]] | None = None):
    """The streaming dataset of a night over `partitions` (ids of the frozen plan): one row of
    stats per partition written. `middle`: the stages between loading and writing (default:
    every annotation stage; the scale benchmark replays rows instead)."""
    import ray

    from pipeline.fingerprint import stage_order

    # A partition stays one block from the loader to the writer (see the module docstring).
    ray.data.DataContext.get_current().target_max_block_size = None
    layout = Layout(cfg.output.uri)
    ds = ray.data.from_arrow([pa.table({"partition": [p],
                                        "plan_uri": [layout.plan_part(run_id, p)]})
                              for p in partitions])
    # Workers get the config's storage section, not resolved keys: they read the AWS_*
    # variables of their own environment (a mounted secret on a cluster), so credentials never
    # travel inside task arguments.
    stages = [(LoadPartitionStage, {"storage": cfg.storage})]
    stages += middle if middle is not None else stage_plan(cfg, cfg.storage, caption)
    stages += [(WritePartitionStage, {
        "storage": cfg.storage, "output_uri": cfg.output.uri, "run_id": run_id,
        "version": __version__, "stage_order": stage_order(),
        "fingerprints": fingerprints})]
    for stage_cls, kwargs in stages:
        ds = apply_stage(ds, stage_cls, kwargs, stage_resources(cfg, stage_cls))
        if stage_cls is SpeakerEmbedStage:
            # No stage after this one needs the segment audio: do not carry it further.
            ds = ds.drop_columns([AUDIO_FIELD.name])
    return ds
