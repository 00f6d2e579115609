"""The stage abstraction (DESIGN.md section 4).

A stage declares, as class data, the columns it requires, the columns it adds (an Arrow schema),
the columns it consumes (drops), and its resources (CPUs, GPUs, pool size, batch size), which
`ray.resources.<name>` in the config may override. Its model is
loaded lazily on the first batch, inside the worker. A stage never lets one bad row kill a batch:
it writes a reject or drop reason and moves on; exceptions are for programming errors.

The DAG builder (pipeline/dag.py) is the only code that turns these declarations into Ray calls.
"""
from __future__ import annotations

import logging
from typing import ClassVar

import pyarrow as pa

from model_serving.registry import ModelRegistry
from operators import progress
from operators.logs import ensure_worker_logging
from schemas.config import ModelEntry, PipelineConfig, StageResources, StorageConfig

log = logging.getLogger("audioverse.stage")


class Stage:
    """A row stage: a batch of rows in, rows out (fan-out allowed)."""

    name: ClassVar[str] = "stage"
    requires: ClassVar[tuple[str, ...]] = ()
    adds: ClassVar[pa.Schema] = pa.schema([])
    consumes: ClassVar[tuple[str, ...]] = ()  # input columns the stage does not pass on
    # A pool of long-lived actors (models, HTTP pools, breakers set up once per worker) rather
    # than plain tasks that may start afresh for any batch.
    runs_as_actor: ClassVar[bool] = False
    per_recording: ClassVar[bool] = False       # needs every segment of a recording per batch
    # Rows of rejected recordings go through untouched, and a batch of nothing else skips the
    # stage (no model load for a batch of corrupt files); a stage that must see them says no.
    skips_rejected: ClassVar[bool] = True
    resources: ClassVar[StageResources] = StageResources()  # default; config may override

    def __init__(self) -> None:
        self._ready = False

    @classmethod
    def config_kwargs(cls, cfg: PipelineConfig, storage: StorageConfig, caption=None) -> dict:
        """The constructor arguments of this stage in a night's DAG (pipeline/dag.py), from the
        config; `caption` is the resolved caption endpoint, for the stage that needs it."""
        raise NotImplementedError(f"stage '{cls.name}' does not say how to build it from a config")

    @classmethod
    def outcome_settings(cls, cfg: PipelineConfig) -> dict:
        """The config values this stage's decisions depend on (what it rejects, drops or writes),
        not how fast it runs: a reject or drop whose settings changed since is planned again
        (pipeline/fingerprint.py). JSON-able."""
        return {}

    def setup(self) -> None:
        """Load models and clients. Runs once per worker, on the first batch."""

    def process(self, batch: pa.Table) -> pa.Table:
        """Default: `process_row` on every row. Stages that batch model calls override this."""
        out: list[dict] = []
        for row in batch.to_pylist():
            more = self.process_row(row)
            if more is None:
                out.append(row)
            else:
                out.extend(more)
        return self.to_table(out, batch)

    def process_row(self, row: dict) -> list[dict] | None:
        """Update `row` in place (None), or return the rows that replace it (fan-out)."""
        raise NotImplementedError

    def to_table(self, rows: list[dict], batch: pa.Table) -> pa.Table:
        """Python rows back into this stage's output schema for `batch`."""
        return rows_to_table(rows, self.output_schema(batch.schema))

    def drop(self, row: dict, reason: str, detail: str) -> bool:
        """Mark `row` dropped here, unless an earlier stage dropped it: the first drop wins, so
        a row names the stage that found what is wrong first. True if this drop was recorded."""
        if row.get("drop_reason") is not None:
            return False
        row.update(drop_stage=self.name, drop_reason=reason, drop_detail=detail)
        return True

    def __call__(self, batch: pa.Table) -> pa.Table:
        missing = [c for c in self.requires if c not in batch.column_names]
        if missing:
            raise KeyError(f"stage '{self.name}' needs columns {missing}; got {batch.column_names}")
        run_id = batch.column("run_id")[0].as_py() \
            if "run_id" in batch.column_names and batch.num_rows else None
        if self.skips_rejected and "reject_reason" in batch.column_names and \
                batch.column("reject_reason").null_count == 0:
            # Every row is a rejected recording, which every stage passes on untouched: no
            # need to load models for it (a batch of corrupt files costs no model start).
            out = conform(batch, self.output_schema(batch.schema))
        else:
            if not self._ready:
                ensure_worker_logging(run_id)
                self.setup()
                self._ready = True
            out = conform(self.process(batch), self.output_schema(batch.schema))
        progress.report(run_id, self.name, out)
        return out

    @classmethod
    def output_schema(cls, input_schema: pa.Schema) -> pa.Schema:
        """Input columns (less the consumed ones) followed by the added columns."""
        fields = [f for f in input_schema
                  if f.name not in cls.consumes and f.name not in cls.adds.names]
        return pa.schema(fields + list(cls.adds))


class ModelStage(Stage):
    """A row stage with models: it runs in actors, and resolves its models (by registry name,
    from its config section) in `setup`, i.e. once per worker."""

    runs_as_actor = True
    config_section: ClassVar[str] = ""           # its section of PipelineConfig

    @classmethod
    def config_kwargs(cls, cfg: PipelineConfig, storage: StorageConfig, caption=None) -> dict:
        return {"cfg": getattr(cfg, cls.config_section), "models": dict(cfg.models),
                "model_cache_dir": cfg.model_cache_dir, "storage": storage}

    def __init__(self, cfg, models: dict[str, ModelEntry], model_cache_dir: str,
                 storage: StorageConfig | None = None):
        super().__init__()
        self.cfg = cfg
        self.registry = ModelRegistry(models, model_cache_dir, storage)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Order and cast `table` to `schema`; a declared column the stage left out is all-null."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            columns.append(col if col.type == field.type else col.cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, type=field.type))
    return pa.Table.from_arrays(columns, schema=pa.schema([f.with_nullable(True) for f in schema]))


def rows_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a table from python dict rows, filling absent keys with nulls."""
    data = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(data, schema=pa.schema([f.with_nullable(True) for f in schema]))


def model_identity(cfg: PipelineConfig, name: str) -> dict:
    """A registry entry as far as results depend on it: its name, version and file checksums."""
    entry = cfg.models.get(name)
    if entry is None:
        return {"name": name}
    return {"name": name, "version": entry.version,
            "sha256": sorted(f.sha256 for f in entry.files.values())}


def section(obj, *leave_out: str) -> dict:
    """A config section as a dict, without the keys that only tune speed."""
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(obj).items() if k not in leave_out}
