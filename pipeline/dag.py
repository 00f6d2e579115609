"""Build the Ray Data DAG: listing -> decode -> VAD -> signal measures -> acoustic events -> ASR
(several systems) -> agreement -> hallucination rules -> speaker embeddings, then, per recording,
speaker clustering, then captions (which need the speaker count). The only module that knows
Ray's scheduling knobs; each stage's resources come from `ray.resources.<stage>` in the config.

Row stages stream (`map_batches`); a recording stage (one that declares `group_key`) needs every
row of a recording at once, so it runs as `groupby(...).map_groups(...)` after the segment audio
has been dropped (the shuffle then moves only small rows)."""
from __future__ import annotations

import os
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
from operators.speakers import SpeakerClusterStage, SpeakerEmbedStage
from operators.vad import VadSegmentStage
from schemas.config import PipelineConfig, StageResources
from schemas.tables import AUDIO_FIELD

# The same CPU kernels on every machine: CTranslate2 (ASR), torch / oneDNN / MKL (speakers, the
# codec) otherwise pick AVX-512 kernels where a CPU has them, and their last bits differ, which is
# enough to flip a word of a transcript (seen: one LibriVox clip read "old supposed" or
# "ill-disposed" by the instruction set alone). AVX2 is the level llama.cpp is built for too
# (scripts/llama_build.sh), so a heterogeneous cluster and CI compute alike.
REPRODUCIBLE_CPU_ENV = {"CT2_FORCE_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                        "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
# One thread per model worker: on a small machine the actors share the cores; on a cluster the
# actor's CPU count is what the scheduler reserved.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              **REPRODUCIBLE_CPU_ENV}

STAGES: tuple[type[Stage], ...] = (DecodeStage, VadSegmentStage, MeasuresStage, EventsStage,
                                   AsrStage, AgreementStage, HallucinationStage,
                                   SpeakerEmbedStage, SpeakerClusterStage, CaptionStage)

_task_stages: dict[int, Stage] = {}


def _run_task_stage(batch: pa.Table, stage_cls: type[Stage], kwargs: dict) -> pa.Table:
    """Stateless stages run as tasks; keep one instance per worker process across batches."""
    key = id(stage_cls)
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
    registry = {"models": dict(cfg.models), "model_cache_dir": cfg.model_cache_dir,
                "storage": storage}
    return [
        (DecodeStage, {"storage": storage, "input_cfg": cfg.input, "decode_cfg": cfg.decode,
                       "bandwidth_floor_db": cfg.measures.bandwidth_floor_db}),
        (VadSegmentStage, {"cfg": cfg.segment, **registry}),
        (MeasuresStage, {"cfg": cfg.measures}),
        (EventsStage, {"cfg": cfg.events, **registry}),
        (AsrStage, {"cfg": cfg.asr, **registry}),
        (AgreementStage, {"cfg": cfg.agreement}),
        (HallucinationStage, {"cfg": cfg.hallucination}),
        (SpeakerEmbedStage, {"cfg": cfg.speakers, **registry}),
        (SpeakerClusterStage, {"cfg": cfg.speakers}),
        (CaptionStage, {"cfg": cfg.caption, "endpoint_url": caption.url if caption else None,
                        "model_label": caption.model_label if caption else None,
                        "storage": storage, "decode_cfg": cfg.decode}),
    ]


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
        if stage_cls.uses_model:
            actors += res.num_cpus * res.concurrency
        else:
            tasks = max(tasks, res.num_cpus)
    return actors, tasks


def apply_stage(ds, stage_cls: type[Stage], kwargs: dict, res: StageResources):
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    if getattr(stage_cls, "group_key", None):
        return ds.groupby(stage_cls.group_key).map_groups(
            _run_task_stage, fn_kwargs={"stage_cls": stage_cls, "kwargs": kwargs},
            batch_format="pyarrow", num_cpus=res.num_cpus)
    common = dict(batch_format="pyarrow", batch_size=res.batch_size, num_cpus=res.num_cpus,
                  zero_copy_batch=True)
    if res.num_gpus:
        common["num_gpus"] = res.num_gpus
    if stage_cls.uses_model:
        # max_restarts=0: Ray Data passes every actor its constructor arguments by reference,
        # and Ray restarts such actors unreliably (ray-project/ray#53727: the arguments may be
        # gone by then; Ray logs an ERROR line at every run saying so). A worker that dies
        # fails the execution instead, and the runner runs the unfinished work again
        # (`run_with_worker_retries`).
        return ds.map_batches(stage_cls, fn_constructor_kwargs=kwargs,
                              compute=ActorPoolStrategy(size=res.concurrency), max_restarts=0,
                              **common)
    return ds.map_batches(_run_task_stage, fn_kwargs={"stage_cls": stage_cls, "kwargs": kwargs},
                          compute=TaskPoolStrategy(size=res.concurrency), **common)


def build_dataset(listing: pa.Table, cfg: PipelineConfig, storage,
                  caption: CaptionEndpoint | None = None):
    """The streaming dataset of result rows (segments and rejects), without audio."""
    import ray

    # Several small blocks so the decode tasks run in parallel from the start.
    per_block = max(1, listing.num_rows // 1000)
    blocks = [listing.slice(i, per_block) for i in range(0, listing.num_rows, per_block)]
    ds = ray.data.from_arrow(blocks)
    audio_dropped = False
    for stage_cls, kwargs in stage_plan(cfg, storage, caption):
        if getattr(stage_cls, "group_key", None) and not audio_dropped:
            ds, audio_dropped = ds.drop_columns([AUDIO_FIELD.name]), True
        ds = apply_stage(ds, stage_cls, kwargs, stage_resources(cfg, stage_cls))
    return ds if audio_dropped else ds.drop_columns([AUDIO_FIELD.name])


def init_ray(cfg: PipelineConfig) -> bool:
    """Start (or join) Ray. Returns True if this call started it, so the caller shuts it down."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = cfg.ray.address
    if address is None:
        # A driver that `ray job submit` started finds its cluster in RAY_ADDRESS; otherwise
        # "local" starts a private runtime, never silently joining a `ray start` cluster that
        # happens to run on this machine.
        address = os.environ.get("RAY_ADDRESS") or "local"
    kwargs = dict(
        address=address,
        ignore_reinit_error=True,
        log_to_driver=True,
        runtime_env={"env_vars": WORKER_ENV},
    )
    if address == "local":
        kwargs.update(num_cpus=cfg.ray.num_cpus, include_dashboard=False,
                      object_store_memory=cfg.ray.object_store_mb * 1024 * 1024,
                      _node_ip_address="127.0.0.1")
    ray.init(**kwargs)
    from pipeline.signals import after_ray_init

    after_ray_init()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.ray.progress_bars
    ctx.print_on_execution_start = False
    return True


# A Ray worker process that died (killed, out of memory, its node gone): not the data's fault,
# so the work it had is run again. Anything else a stage raises is a bug or a user error.
WORKER_DEATHS = ("ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
                 "NodeDiedError", "ObjectLostError", "OwnerDiedError",
                 "ObjectReconstructionFailedError")


def worker_died(exc: BaseException) -> bool:
    """Whether `exc` (or its chain) says a Ray worker process or node died."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in WORKER_DEATHS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def run_with_worker_retries(fn, attempts: int, what: str):
    """`fn()`, again (up to `attempts` times in all) when a Ray worker died under it."""
    from operators.logs import stage_logger

    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - only worker deaths are retried
            if attempt == attempts or not worker_died(exc):
                raise
            stage_logger("driver").warning(
                "a Ray worker died during %s (%s: %s); running it again (attempt %d of %d)",
                what, type(exc).__name__, str(exc).splitlines()[0][:200], attempt + 1, attempts)
