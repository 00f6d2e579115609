"""The release's distributed selection (pipeline/release_select.py) equals the reference
(operators/selection.py `select`, row by row in pandas) on committed runs in the real S3 server
with real Ray: exact duplicates, many forced ties, hours mode, strata by language, excluded
content types and dropped rows, a stratum with nothing eligible, a source taken down since the
run, a source re-annotated by a later run, and a view spanning an annotation file written by an
older schema version (columns added since read as null) and one written by today's.

The runs' rows come from a replay stage (bench/replay.py) fed with generated rows, so every case
is present and the oracle sees the very rows the runs wrote; the rest is the real night and the
real release selection (only tokenization is left out: tests/test_release.py covers it)."""
import io
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.replay import ReplayStage
from operators.parquet_io import read_parquet
from operators.selection import select
from operators.storage import ObjectStore
from pipeline.ledger import read_snapshot
from pipeline.release_select import VIEW_COLUMNS, select_release
from pipeline.runner import run_pipeline
from schemas.config import StorageConfig
from schemas.layout import Layout
from schemas.tables import ANNOTATIONS_SCHEMA, SCHEMA_VERSION
from tests.conftest import TEST_BUCKET
from tests.helpers import CHEAP
from tests.test_scoring import view as generated_view

pytestmark = pytest.mark.integration

RAW = f"s3://{TEST_BUCKET}/sel/raw/"
OUT = f"s3://{TEST_BUCKET}/sel/out/"
OLD_SCHEMA = 4  # before audio_sha256 (5) and caption_provenance (6)
DROPPED_IN_OLD = ["audio_sha256", "caption_provenance"]


def template(rows: int, seed: int) -> pa.Table:
    """Result rows for the replay stage: generated view rows (3 segments a recording, discrete
    values, so scores tie often and audio hashes collide) in the full annotation schema."""
    # without the generated caption provenance: its many combinations spread the scores, and
    # these runs need ties at the cut (tests/test_scoring.py covers provenance in the score)
    gen = generated_view(rows, seed).drop_columns(["caption_provenance"])
    fields = [f.with_nullable(True) for f in ANNOTATIONS_SCHEMA if f.name != "pipeline_version"]
    cols = [gen.column(f.name) if f.name in gen.column_names else pa.nulls(rows, f.type)
            for f in fields]
    for name in ("reject_stage", "reject_reason", "reject_detail"):
        fields.append(pa.field(name, pa.string()))
        cols.append(pa.nulls(rows, pa.string()))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def stage_objects(s3_client, names: list[str], content: bytes = b"x") -> None:
    for name in names:
        s3_client.put_object(Bucket=TEST_BUCKET, Key=f"sel/raw/{name}", Body=content)


def rewrite_as_old_schema(store: ObjectStore, prefix: str, summary: dict) -> None:
    """Rewrite a run's annotation files as an older pipeline wrote them: without the columns
    added since, and with that schema version in the metadata."""
    for entry in summary["files"]["annotations"]:
        uri = prefix + entry["path"]
        table = read_parquet(store, uri).drop_columns(DROPPED_IN_OLD)
        meta = dict(table.schema.metadata or {})
        assert meta[b"schema_version"] == SCHEMA_VERSION.encode()
        meta[b"schema_version"] = str(OLD_SCHEMA).encode()
        buf = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(meta), buf)
        store.put(uri, buf.getvalue())


def run_rows(store: ObjectStore, prefix: str, summary: dict) -> pd.DataFrame:
    """A run's annotation rows as pandas, with the view's columns (missing ones as null) and the
    schema version each row was written with (the score reads asr_agreement by it)."""
    tables = []
    for entry in summary["files"]["annotations"]:
        table = read_parquet(store, prefix + entry["path"])
        version = int(table.schema.metadata[b"schema_version"])
        tables.append(table.append_column("schema_version",
                                          pa.array([version] * table.num_rows, pa.int32())))
    df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    for name in VIEW_COLUMNS:
        if name not in df:
            df[name] = None
    return df[VIEW_COLUMNS + ["schema_version"]]


@pytest.fixture(scope="module")
def runs(s3_server, s3_client, ray_runtime, local_config):
    """Night 1 (rewritten as schema 4) over 60 objects; night 2 over 50 new ones and one changed;
    then one night-1 source is added to the takedown list. Returns the store, a config maker
    and the expected dataset view (pandas) the oracle selects from."""
    store = ObjectStore(StorageConfig())
    layout = Layout(OUT)
    takedown_uri = f"s3://{TEST_BUCKET}/sel/takedowns.txt"
    s3_client.put_object(Bucket=TEST_BUCKET, Key="sel/takedowns.txt", Body=b"")

    def config(*more: str):
        return local_config(f"input.uri={RAW}", f"output.uri={OUT}", *CHEAP,
                            f"input.takedown_uri={takedown_uri}", "run.partition_objects=20",
                            *more)

    replay = [(ReplayStage, {"template": template(900, seed=7), "segments": 3})]
    first = [f"a/{i:03d}.wav" for i in range(60)]
    stage_objects(s3_client, first)
    night1 = run_pipeline(config(), run_id="sel-1", middle=replay)
    assert night1.exit_code == 0 and night1.summary["segments"] > 0
    rewrite_as_old_schema(store, night1.prefix, night1.summary)

    stage_objects(s3_client, [f"b/{i:03d}.wav" for i in range(50)])
    stage_objects(s3_client, ["a/005.wav"], b"changed")  # a new version: night 2 annotates it
    night2 = run_pipeline(config(), run_id="sel-2", middle=replay)
    assert night2.exit_code == 0 and night2.summary["inputs"] == 51

    s3_client.put_object(Bucket=TEST_BUCKET, Key="sel/takedowns.txt", Body=b"a/007.wav\n")
    old = run_rows(store, night1.prefix, night1.summary)
    new = run_rows(store, night2.prefix, night2.summary)
    gone = {RAW + "a/007.wav"} | set(new["source_uri"])
    view = pd.concat([old[~old["source_uri"].isin(gone)],
                      new[new["source_uri"] != RAW + "a/007.wav"]], ignore_index=True)
    assert view["audio_sha256"].isna().sum() > 0 and view["audio_sha256"].notna().sum() > 0
    return store, layout, config, view


def selection_of(store, layout, cfg, release_id: str) -> tuple[pd.DataFrame, dict, list]:
    chosen = select_release(cfg, store, layout, release_id,
                            read_snapshot(store, layout, cfg.run.ledger_buckets))
    files = chosen.write({})
    prefix = layout.release(release_id)
    table = pa.concat_tables([pq.read_table(io.BytesIO(store.get(prefix + f["path"])))
                              for f in files])
    return table.to_pandas(), chosen.summary, files


def _plain(value):
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


CASES = {
    "segments": ["release.fraction=0.3", "release.content_types=[speech, music]"],
    "hours_by_language": ["release.fraction=0.25", "release.unit=hours",
                          "release.stratify_by=[language]"],
    # 0.4: a cut that falls inside a run of tied scores (the tie-break by segment id)
    "no_dedupe_gated": ["release.fraction=0.4", "release.dedupe=false",
                        "release.stratify_by=[language]", "release.quality.min_agreement=0.7",
                        "release.quality.min_snr_db=5"],
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("range_rows", [10, 200_000])
def test_distributed_selection_equals_the_reference(runs, case, range_rows, monkeypatch):
    """range_rows: rows a rank task takes; 10 makes many ranges of the order (ranges that cut
    strata, tie bins kept whole), 200,000 one."""
    import pipeline.release_select as release_select

    monkeypatch.setattr(release_select, "ROWS_PER_RANGE", range_rows)
    store, layout, config, view = runs
    cfg = config(*CASES[case])
    got, summary, files = selection_of(store, layout, cfg, f"sel-{case}-{range_rows}")
    want, want_summary = select(view, cfg.release)

    # Nothing lost, nothing twice: one selection row per view row.
    assert got["segment_id"].is_unique and len(got) == len(want)
    assert set(got["segment_id"]) == set(want["segment_id"])
    got = got.set_index("segment_id")
    want = want.set_index("segment_id").loc[got.index]
    for col in ("selected", "quality_eligible", "quality_gate", "duplicate_of",
                "rank_in_stratum", "stratum", "split", "run_id", "source_uri"):
        g = [_plain(v) for v in got[col]]
        w = [_plain(v) for v in want[col]]
        bad = [(i, a, b) for i, a, b in zip(got.index, g, w) if a != b]
        assert not bad, (col, bad[:5])
    assert np.array_equal(np.float32(want["quality_score"].to_numpy(dtype=float)),
                          got["quality_score"].to_numpy(dtype=np.float32), equal_nan=True)

    for key in ("segments_in_view", "eligible", "duplicates", "not_eligible_by_gate",
                "selected", "selected_by_split"):
        assert summary[key] == want_summary[key], key
    assert summary["strata"].keys() == want_summary["strata"].keys()
    for name, s in want_summary["strata"].items():
        mine = summary["strata"][name]
        for key in ("eligible", "selected", "threshold_score"):
            assert mine[key] == s[key], (name, key)
        for key in ("eligible_hours", "selected_hours"):
            assert mine[key] == pytest.approx(s[key], abs=2e-6), (name, key)

    # The case is not trivial: ties at the cut, duplicates, strata with nothing eligible.
    sel = got[got["selected"]]
    assert 0 < len(sel) < got["quality_eligible"].sum()
    last = sel.groupby("stratum")["quality_score"].min()
    below = got[got["quality_eligible"] & ~got["selected"]]
    tied = below[below["quality_score"] == below["stratum"].map(last)]
    if case == "no_dedupe_gated":
        assert len(tied) > 0, "no tie at any cut: the tie-break by segment id is not exercised"
    if cfg.release.dedupe:
        assert summary["duplicates"] > 0
    all_strata = set(got["stratum"])
    assert all_strata - set(summary["strata"]), "no stratum without an eligible segment"
    # Rows read from the older schema carry its version and have no duplicate check.
    old = got[got["schema_version"] == OLD_SCHEMA]
    assert len(old) and old["audio_sha256"].isna().all() and old["duplicate_of"].isna().all()
    assert set(got["schema_version"]) == {OLD_SCHEMA, int(SCHEMA_VERSION)}
    assert len(files) >= 2
    eligible_parts = [f for f in files if f["path"].startswith("selection/part-e")]
    assert (len(eligible_parts) > 3) == (range_rows == 10)


def test_view_leaves_out_takedowns_and_superseded_annotations(runs):
    store, layout, config, view = runs
    got, summary, _ = selection_of(store, layout, config(), "sel-view")
    uris = set(got["source_uri"])
    assert RAW + "a/007.wav" not in uris  # in the takedown list now, annotated before
    changed = got[got["source_uri"] == RAW + "a/005.wav"]
    assert len(changed) and set(changed["run_id"]) == {"sel-2"}  # the newer version only
    assert set(got["run_id"]) == {"sel-1", "sel-2"}
    assert summary["segments_in_view"] == len(got) == len(view)
