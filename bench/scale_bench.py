"""Scale benchmark: does the driver stay flat while a night grows from 10k to 1M result rows?

    make bench-scale      # or: .venv/bin/python -m bench.scale_bench [--sizes 10000 100000 1000000]

For each size N, against the local S3 server and one local Ray runtime:

- run: a night over N/k synthetic objects (k = result rows per recording of the template) with
  the model stages replaced by a replay stage (bench/replay.py) that copies result rows of real
  recordings (a real run over a few demo clips, made once and cached); everything else is the
  night's real code path: planning in tasks, partitions loaded from the frozen plan, workers
  writing the annotation, reject and ledger parts and the done markers, summary.json from their
  stats, the ledger merge. The listing is written by tasks instead of listing S3 (N/k objects
  would take long to upload; listing S3 is I/O, paged, in tasks either way).
- plan: planning over a ledger snapshot of N rows and a listing of N objects (90% of them known
  to the ledger and unchanged, 10% new), both written by tasks.
- release: `run_release` over the night's output (its dataset view is every annotated row of the
  night) with a cheap codec (bench/cheap_codec.py: codes from the segment's length, no audio
  read), then its selection compared with operators/selection.py `select` over the same view
  (gathered for the check only, in a worker of its own, outside the measurement).

A sampler thread reads, every 0.2 s, the RSS of the driver (this process) and the PSS of every
process of the Ray runtime (proportional set size: the shared object store counted once), so
rows moved into a helper actor would show up. It prints a table and writes
`.local/bench/scale.json`: {"rows": {"10000": {...}, ...}} with run_driver_peak_mb,
run_total_peak_mb, plan_driver_peak_mb, plan_total_peak_mb, run_s, plan_s, release_s,
release_driver_peak_mb, release_total_peak_mb, selection_equals_reference, view_rows, selected.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import pyarrow as pa

from infra.processes import descendants

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "audioverse-scale"
TEMPLATE = ROOT / ".local" / "bench" / "scale_template.parquet"


# --- memory ------------------------------------------------------------------------------------
def _kb(path: str, field: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler:
    """Peak driver RSS and peak total PSS (driver + every process it started) while running."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.driver_peak = self.total_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def now() -> tuple[int, int]:
        me = os.getpid()
        driver = _kb(f"/proc/{me}/status", "VmRSS:")
        total = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in [me, *descendants(me)])
        return driver, total

    def _loop(self) -> None:
        while not self._stop.is_set():
            driver, total = self.now()
            self.driver_peak = max(self.driver_peak, driver)
            self.total_peak = max(self.total_peak, total)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# --- synthetic inputs, written by tasks ----------------------------------------------------------
def _uri(n: int, i: int) -> str:
    return f"s3://{BUCKET}/raw/n{n}/obj-{i:09d}.wav"


def write_listing(storage, output_uri: str, n: int, start: int, count: int, run_id: str,
                  buckets: int) -> int:
    """Listing rows of objects [start, start + count) into the run's staging, by bucket, as the
    listing tasks of a night write them."""
    from operators.storage import ObjectInfo, ObjectStore
    from pipeline.listing import recording_id
    from pipeline.plan import write_listing_parts
    from schemas.layout import Layout
    from schemas.tables import LISTING_SCHEMA

    rows = []
    for i in range(start, start + count):
        info = ObjectInfo(BUCKET, _uri(n, i)[len(f"s3://{BUCKET}/"):], f"etag{i}", 48_000)
        rows.append({"run_id": run_id, "recording_id": recording_id(info), "source_uri": info.uri,
                     "source_etag": info.etag, "source_version_id": None,
                     "source_bytes": info.size})
    return write_listing_parts(ObjectStore(storage, reached=True), Layout(output_uri), run_id,
                               pa.Table.from_pylist(rows, schema=LISTING_SCHEMA), buckets,
                               f"synthetic-{start:09d}")


def write_snapshot_bucket(storage, output_uri: str, n: int, known: int, bucket: int,
                          buckets: int) -> int:
    """Bucket `bucket` of a v1 snapshot holding the first `known` objects as annotated."""
    from operators.parquet_io import write_parquet
    from operators.storage import ObjectInfo, ObjectStore
    from pipeline.listing import recording_id
    from schemas.layout import Layout, source_bucket
    from schemas.tables import LEDGER_SCHEMA

    rows = []
    for i in range(known):
        uri = _uri(n, i)
        if source_bucket(uri, buckets) != bucket:
            continue
        info = ObjectInfo(BUCKET, uri[len(f"s3://{BUCKET}/"):], f"etag{i}", 48_000)
        rows.append({"run_id": "seed", "source_uri": uri, "source_etag": info.etag,
                     "source_version_id": None, "recording_id": recording_id(info),
                     "state": "annotated", "drop_reasons": [], "settings_stage": "caption"})
    table = pa.Table.from_pylist(rows, schema=LEDGER_SCHEMA).sort_by("source_uri")
    write_parquet(ObjectStore(storage, reached=True),
                  Layout(output_uri).ledger_bucket(1, bucket), table, LEDGER_SCHEMA, "ledger")
    return table.num_rows


def synthetic_listing(cfg, run_id: str, n: int, objects: int, per_part: int = 100_000) -> None:
    import ray

    task = ray.remote(num_cpus=0.5)(write_listing)
    ray.get([task.remote(cfg.storage, cfg.output.uri, n, start, min(per_part, objects - start),
                         run_id, cfg.run.ledger_buckets)
             for start in range(0, objects, per_part)])


# --- the template: result rows of real recordings ------------------------------------------------
def template_rows(cfg_base) -> pa.Table:
    """Result rows (segments with reject_* null, and rejects) of a real run over a few demo
    clips; made once, cached in .local/bench/."""
    import pyarrow.parquet as pq

    if TEMPLATE.exists():
        return pq.read_table(TEMPLATE)
    from infra.demo_corpus import LIBRIVOX, POCKETSPHINX, TUXPAINT, StagedFile, stage
    from operators.parquet_io import read_parquet
    from operators.storage import ObjectStore
    from pipeline.runner import run_pipeline
    from schemas.config import StorageConfig

    # Two fast recognisers, no pitch, no captions: the rows are what matters here.
    cheap = ["caption.enabled=false", "measures.pitch=false", "asr.language=en",
             "asr.systems=" + json.dumps([
                 {"name": "whisper-tiny-en", "model": "asr/whisper-tiny-en", "cpu_threads": 2},
                 {"name": "pocketsphinx-en", "model": "asr/pocketsphinx-en-us"}])]

    files = [StagedFile(f"librivox/{p.name}", p.read_bytes())
             for p in sorted(LIBRIVOX.glob("*.wav"))[:2]]
    files += [StagedFile(f"cards/{p.name}", p.read_bytes())
              for p in sorted((POCKETSPHINX / "cards").glob("*.wav"))[:2]]
    files += [StagedFile("fx/violin.ogg",
                         (TUXPAINT / "hobbies/music/string/violin.ogg").read_bytes()),
              StagedFile("bad/not_audio.wav", b"RIFF" + os.urandom(4000))]
    raw = f"s3://{BUCKET}/template-raw/"
    stage(files, raw)
    from dataclasses import replace
    from pipeline.config import load_config

    cfg = load_config(ROOT / "configs" / "local.yaml", [
        f"input.uri={raw}", f"output.uri=s3://{BUCKET}/template/", *cheap])
    cfg = replace(cfg, storage=cfg_base.storage)
    result = run_pipeline(cfg, run_id=f"template-{int(time.time())}", full=True)
    store = ObjectStore(StorageConfig())
    ann = pa.concat_tables([read_parquet(store, result.prefix + f["path"])
                            for f in result.summary["files"]["annotations"]])
    rej = pa.concat_tables([read_parquet(store, result.prefix + f["path"])
                            for f in result.summary["files"]["rejects"]])
    ann = ann.drop_columns(["pipeline_version"])
    for name in ("reject_stage", "reject_reason", "reject_detail"):
        ann = ann.append_column(name, pa.nulls(ann.num_rows, pa.string()))
    rej = rej.rename_columns({"stage": "reject_stage", "reason": "reject_reason",
                              "detail": "reject_detail"}).drop_columns(["pipeline_version"])
    rej_full = pa.table({f.name: (rej.column(f.name) if f.name in rej.column_names
                                  else pa.nulls(rej.num_rows, f.type)) for f in ann.schema})
    table = pa.concat_tables([ann, rej_full.cast(ann.schema)])
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, TEMPLATE)
    return table


# --- one size -------------------------------------------------------------------------------------
def bench_size(base, n: int, template: pa.Table) -> dict:
    import ray

    from bench.replay import ReplayStage
    from dataclasses import replace
    from pipeline.fingerprint import stage_fingerprints
    from pipeline.ledger import Snapshot
    from pipeline.plan import make_plan
    from pipeline.runner import run_pipeline
    from schemas.layout import Layout

    import pyarrow.compute as pc

    rejected = pc.is_valid(template.column("reject_reason"))
    rejects = len(set(template.filter(rejected).column("recording_id").to_pylist()))
    recordings = len(set(template.column("recording_id").to_pylist()))
    # ReplayStage: ten rows per annotated recording, one per rejected one.
    per_object = (10 * (recordings - rejects) + rejects) / recordings
    objects = max(1, round(n / per_object))
    out = {}
    # the night
    cfg = replace(base, output=replace(base.output, uri=f"s3://{BUCKET}/n{n}/"))
    run_id = f"scale-{int(time.time())}"
    synthetic_listing(cfg, run_id, n, objects)
    baseline = Sampler.now()
    with Sampler() as sampler:
        t0 = time.perf_counter()
        result = run_pipeline(cfg, run_id=run_id, full=True, listed=True,
                              middle=[(ReplayStage, {"template": template, "vary": True})])
        out["run_s"] = round(time.perf_counter() - t0, 1)
    s = result.summary
    assert s["inputs"] == objects, (s["inputs"], objects)
    out.update(objects=objects, result_rows=s["segments"] + s["recordings_rejected"],
               partitions=s["partitions"],
               run_driver_peak_mb=round(sampler.driver_peak / 1024, 1),
               run_driver_growth_mb=round((sampler.driver_peak - baseline[0]) / 1024, 1),
               run_total_peak_mb=round(sampler.total_peak / 1024, 1))
    # planning over a ledger of N rows and a listing of N objects
    cfg = replace(base, output=replace(base.output, uri=f"s3://{BUCKET}/plan-n{n}/"))
    layout = Layout(cfg.output.uri)
    buckets = cfg.run.ledger_buckets
    known = int(n * 0.9)
    task = ray.remote(num_cpus=0.5)(write_snapshot_bucket)
    ledger_rows = sum(ray.get([task.remote(cfg.storage, cfg.output.uri, n, known, b, buckets)
                               for b in range(buckets)]))
    snapshot = Snapshot(version=1, buckets=buckets, merged_runs=["seed"],
                        counts={"annotated": ledger_rows})
    plan_id = f"scale-plan-{int(time.time())}"
    synthetic_listing(cfg, plan_id, n, n)
    from operators.storage import ObjectStore
    from model_serving.s3client import resolve_storage

    store = ObjectStore(resolve_storage(cfg.storage))
    baseline = Sampler.now()
    with Sampler() as sampler:
        t0 = time.perf_counter()
        plan = make_plan(cfg, store, layout, plan_id, snapshot, set(), False,
                         stage_fingerprints(cfg), frozenset(), listed=True)
        out["plan_s"] = round(time.perf_counter() - t0, 1)
    assert plan["counts"]["listed"] == n and plan["counts"]["unchanged"] == known, plan["counts"]
    out.update(ledger_rows=ledger_rows, planned=plan["counts"]["to_process"],
               plan_driver_peak_mb=round(sampler.driver_peak / 1024, 1),
               plan_driver_growth_mb=round((sampler.driver_peak - baseline[0]) / 1024, 1),
               plan_total_peak_mb=round(sampler.total_peak / 1024, 1))
    store.delete_prefix(layout.staging(plan_id))
    out.update(bench_release(replace(base, output=replace(base.output,
                                                          uri=f"s3://{BUCKET}/n{n}/"))))
    return out


def bench_release(cfg) -> dict:
    """The release over the night just committed (its view: every annotated row of the night),
    with a cheap codec; then the selection checked against the reference (operators/selection.py,
    over the whole view gathered here, outside the measurement)."""
    from bench.cheap_codec import CheapCodec
    from pipeline.release import run_release

    release_id = f"bench-{int(time.time())}"
    baseline = Sampler.now()
    with Sampler() as sampler:
        t0 = time.perf_counter()
        result = run_release(cfg, release_id=release_id, tokenizer=CheapCodec)
        release_s = round(time.perf_counter() - t0, 1)
    m = result.manifest
    out = {"release_s": release_s, "view_rows": m["selection"]["segments_in_view"],
           "selected": m["selection"]["selected"],
           "release_driver_peak_mb": round(sampler.driver_peak / 1024, 1),
           "release_driver_growth_mb": round((sampler.driver_peak - baseline[0]) / 1024, 1),
           "release_total_peak_mb": round(sampler.total_peak / 1024, 1)}
    # In a worker of its own (it gathers the whole view), so the driver's peak of the next
    # size is not this check's.
    import ray

    check = ray.remote(num_cpus=1, max_calls=1)(selection_equals_reference)
    out["selection_equals_reference"] = ray.get(check.remote(cfg, result.prefix,
                                                             result.manifest))
    return out


def selection_equals_reference(cfg, prefix: str, manifest: dict) -> bool:
    """Every row of the release's selection parts equals the reference's (selected, rank,
    duplicate link, gate, split, stratum, score), and the rows are the same."""
    import numpy as np
    import pyarrow.compute as pc

    from model_serving.s3client import resolve_storage
    from operators.parquet_io import read_parquet
    from operators.selection import select
    from operators.storage import ObjectStore
    from pipeline.release_select import VIEW_COLUMNS, collect_view
    from schemas.layout import Layout

    store = ObjectStore(resolve_storage(cfg.storage))
    got = pa.concat_tables([read_parquet(store, prefix + e["path"])
                            for e in manifest["selection_files"]])
    view = collect_view(cfg, store, Layout(cfg.output.uri)).select(VIEW_COLUMNS)
    want, _ = select(view.to_pandas(), cfg.release)
    del view
    if got.num_rows != len(want):
        return False
    cols = ["segment_id", "selected", "rank_in_stratum", "duplicate_of", "quality_gate",
            "quality_eligible", "split", "stratum"]
    got = got.select(cols + ["quality_score"]).sort_by("segment_id")
    want = pa.Table.from_pandas(want[cols + ["quality_score"]], preserve_index=False) \
        .sort_by("segment_id")
    for name in cols:
        a, b = got.column(name), want.column(name).cast(got.column(name).type)
        same = pc.or_(pc.fill_null(pc.equal(a, b), False),
                      pc.and_(pc.is_null(a), pc.is_null(b)))
        if not pc.all(same).as_py():
            print(f"  selection differs from the reference in {name}", flush=True)
            return False
    a = got.column("quality_score").to_numpy(zero_copy_only=False)
    b = np.float32(want.column("quality_score").to_numpy(zero_copy_only=False))
    return bool(np.array_equal(a, b, equal_nan=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args(argv)

    from infra import local_s3
    from operators.logs import setup_logging
    from pipeline.config import load_config
    from pipeline.ray_session import init_ray

    setup_logging("WARNING")
    server = local_s3.start(ROOT / ".local" / "s3", bucket=BUCKET)
    os.environ.update(server.env())
    base = load_config(ROOT / "configs" / "local.yaml", [
        f"input.uri=s3://{BUCKET}/raw/", f"output.uri=s3://{BUCKET}/", "caption.enabled=false",
        "run.partition_objects=2000", "run.ledger_buckets=16", "run.progress_interval_s=60",
        "ray.object_store_mb=1500"])
    init_ray(base)
    template = template_rows(base)
    print(f"template: {template.num_rows} result rows of "
          f"{len(set(template.column('recording_id').to_pylist()))} real recordings", flush=True)
    results = {}
    for n in args.sizes:
        results[str(n)] = bench_size(base, n, template)
        print(f"  {n:>9} rows: {json.dumps(results[str(n)])}", flush=True)
    head = (f"{'rows':>9} {'objects':>8} {'run s':>7} {'driver MB':>10} {'growth':>7} "
            f"{'total MB':>9} | {'ledger':>8} {'plan s':>7} {'driver MB':>10} {'growth':>7} "
            f"{'total MB':>9}")
    print("\nscale benchmark (night: replayed rows through the real commit path; plan: ledger "
          "join in tasks)")
    print(head)
    print("-" * len(head))
    for n, r in results.items():
        print(f"{int(n):>9} {r['objects']:>8} {r['run_s']:>7.1f} {r['run_driver_peak_mb']:>10.1f} "
              f"{r['run_driver_growth_mb']:>7.1f} {r['run_total_peak_mb']:>9.1f} | "
              f"{r['ledger_rows']:>8} {r['plan_s']:>7.1f} {r['plan_driver_peak_mb']:>10.1f} "
              f"{r['plan_driver_growth_mb']:>7.1f} {r['plan_total_peak_mb']:>9.1f}")
    head = (f"{'rows':>9} {'view':>9} {'selected':>9} {'release s':>10} {'driver MB':>10} "
            f"{'growth':>7} {'total MB':>9} {'= reference':>12}")
    print("\nrelease over the night's view (cheap codec; selection checked against "
          "operators/selection.py)")
    print(head)
    print("-" * len(head))
    for n, r in results.items():
        print(f"{int(n):>9} {r['view_rows']:>9} {r['selected']:>9} {r['release_s']:>10.1f} "
              f"{r['release_driver_peak_mb']:>10.1f} {r['release_driver_growth_mb']:>7.1f} "
              f"{r['release_total_peak_mb']:>9.1f} {str(r['selection_equals_reference']):>12}")
    sizes = list(results)
    if len(sizes) > 1:
        first, last = results[sizes[0]], results[sizes[-1]]
        print(f"\ndriver peak growth {sizes[0]} -> {sizes[-1]} rows: run "
              f"{last['run_driver_peak_mb'] - first['run_driver_peak_mb']:+.1f} MB, plan "
              f"{last['plan_driver_peak_mb'] - first['plan_driver_peak_mb']:+.1f} MB, release "
              f"{last['release_driver_peak_mb'] - first['release_driver_peak_mb']:+.1f} MB "
              f"(target: under 100 MB)")
    path = ROOT / ".local" / "bench" / "scale.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": results}, indent=2))
    print(f"(raw numbers in {path.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
