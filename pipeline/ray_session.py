"""One Ray session helper for `run` and `release`: start or join Ray, stream a dataset's output to
the driver with worker errors unwrapped, run an execution again when a worker died, keep a live
progress counter, and the clock. Nothing else in the pipeline calls `ray.init` or knows how Ray
hands back an error.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Iterator

from operators.logs import stage_logger
from operators.progress import ProgressCounter, counter_name
from pipeline.errors import AudioverseError, find_cause
from schemas.config import PipelineConfig

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

# What the driver's own tasks (listing, planning, ledger merges) claim: one CPU each, so that a
# small machine runs a few at a time in reused worker processes instead of starting many.
TASK_CPUS = 1.0

# A Ray worker process that died (killed, out of memory, its node gone): not the data's fault,
# so the work it had is run again. Anything else a stage raises is a bug or a user error.
WORKER_DEATHS = ("ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
                 "NodeDiedError", "ObjectLostError", "OwnerDiedError",
                 "ObjectReconstructionFailedError")


def now() -> str:
    """UTC wall time for summaries and manifests."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


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


@contextmanager
def ray_session(cfg: PipelineConfig) -> Iterator[None]:
    """Ray for the block: started here (and shut down after) unless already running."""
    started = init_ray(cfg)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def stream(batches: Iterator):
    """Re-raise a worker's user-facing error (a dead caption endpoint, say) as itself: Ray
    delivers it wrapped, with only its traceback text, and the caller must report it, not a
    Ray traceback."""
    try:
        yield from batches
    except Exception as exc:
        cause = find_cause(exc, (AudioverseError,))
        if cause is None or cause is exc:
            raise
        raise cause from exc


def worker_died(exc: BaseException) -> bool:
    """Whether `exc` (or its chain) says a Ray worker process or node died."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ in WORKER_DEATHS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def run_with_worker_retries(fn: Callable, attempts: int, what: str):
    """`fn()`, again (up to `attempts` times in all) when a Ray worker died under it."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - only worker deaths are retried
            if attempt == attempts or not worker_died(exc):
                raise
            stage_logger("driver").warning(
                "a Ray worker died during %s (%s: %s); running it again (attempt %d of %d)",
                what, type(exc).__name__, str(exc).splitlines()[0][:200], attempt + 1, attempts)


class Progress:
    """The run's progress counter (a named Ray actor the stages report to), read on a timer by a
    thread of the driver that calls `on_tick(counts, elapsed_s)`; from the first minute on, also
    while a stage waits for the rows of the ones before it."""

    def __init__(self, run_id: str, interval_s: float,
                 on_tick: Callable[[dict, float], None]):
        import ray

        self.actor = ray.remote(num_cpus=0)(ProgressCounter).options(
            name=counter_name(run_id), lifetime=None, get_if_exists=True).remote()
        self.interval_s = interval_s
        self.on_tick = on_tick
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def counts(self) -> dict:
        import ray

        return ray.get(self.actor.snapshot.remote(), timeout=30)

    def tick(self) -> None:
        try:
            self.on_tick(self.counts(), time.monotonic() - self.started)
        except Exception as exc:  # noqa: BLE001 - progress must never stop a run
            stage_logger("progress").warning("could not read the progress counts: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        import ray

        try:
            ray.kill(self.actor)
        except Exception:  # noqa: BLE001 - gone with the session anyway
            pass
