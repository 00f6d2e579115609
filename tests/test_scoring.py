"""The vectorized scoring a release runs in tasks (operators/scoring.py) equals the row-by-row
reference (operators/selection.py `score_view`, quality.assess) on every column, on a table
with every content type, nulls everywhere a column can be null, drops, corrected captions,
values on and past every ramp edge and gate, caption provenance of every kind, and strata by
language."""
import math

import numpy as np
import pyarrow as pa
import pytest

from operators.scoring import score_table
from operators.selection import score_view, split_of, stratum_of
from pipeline.release_select import VIEW_COLUMNS
from schemas.config import ReleaseConfig
from schemas.tables import ANNOTATIONS_SCHEMA

VIEW_SCHEMA = pa.schema([ANNOTATIONS_SCHEMA.field(n) for n in VIEW_COLUMNS])


def view(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    prov_rng = np.random.default_rng([seed, 1])

    def maybe(value, p=0.15):
        return None if rng.random() < p else value

    rows = []
    for i in range(n):
        ctype = rng.choice(["speech", "music", "sound", "speech", "other"])
        rows.append({
            "run_id": "r", "recording_id": f"rec-{i // 3:016x}", "segment_index": i % 3,
            "segment_id": f"rec-{i // 3:016x}-{i % 3:05d}",
            "source_uri": f"s3://b/raw/{i // 3}.wav", "source_etag": "e",
            "content_type": str(ctype),
            "duration_s": maybe(float(rng.choice([0.3, 0.5, 1.0, 2.0, 3.0, 12.0, 25.0, 45.0,
                                                  rng.uniform(0, 70)]))),
            "snr_db": maybe(float(rng.choice([2.0, 3.0, 5.0, 17.5, 30.0, 40.0,
                                              rng.uniform(-10, 50)]))),
            "clipped_ratio": maybe(float(rng.choice([0.0, 0.005, 0.01, 0.5]))),
            "speech_fraction": maybe(float(rng.uniform(0, 1.2))),
            "music_fraction": maybe(float(rng.uniform(-0.1, 1))),
            "noise_fraction": maybe(float(rng.uniform(0, 1))),
            "asr_agreement": maybe(float(rng.choice([0.3, 0.6, 0.59, 1.0, rng.uniform(0, 1)]))),
            "asr_confidence": maybe(float(rng.uniform(-0.2, 1.1))),
            "language": maybe(str(rng.choice(["en", "fr", "de"])), 0.3),
            "caption_description": maybe("a caption", 0.5),
            "caption_source": maybe("text_features", 0.3),
            "caption_flags": maybe([str(f) for f in rng.choice(
                ["corrected:language", "truncated", "cleared:unheard"],
                size=int(rng.integers(0, 3)))], 0.3),
            # every provenance a caption field can have, some fields missing, some rows none
            # (its own generator: the other columns stay what they were before it existed)
            "caption_provenance": None if prov_rng.random() < 0.3 else {
                k: None if prov_rng.random() < 0.1 else str(prov_rng.choice(
                    ["measured", "heard", "inferred", "unknown"]))
                for k in ("scene", "environment", "description", "speaker_gender")},
            "drop_reason": maybe(str(rng.choice(["too_short", "clipping"])), 0.8),
            "audio_sha256": f"h{int(rng.integers(0, n // 2))}",
            # rows of older runs: their agreement meant something else (quality.py)
            "schema_version": maybe(int(rng.choice([4, 6, 7, 8])), 0.2),
        })
    return pa.Table.from_pylist(rows, schema=VIEW_SCHEMA)


@pytest.mark.parametrize("seed, stratify", [(1, []), (2, ["language"]), (3, ["language"])])
def test_vectorized_scoring_equals_the_reference(seed, stratify):
    cfg = ReleaseConfig(stratify_by=stratify, content_types=["speech", "music"] if seed == 3
                        else ["speech", "music", "sound"])
    table = view(600, seed)
    want = score_view(table.to_pandas(), cfg)
    got = score_table(table, cfg).to_pandas()
    for col in [c for c in want.columns if c.startswith("q_")] + ["quality_score"]:
        w, g = want[col].to_numpy(dtype=float), got[col].to_numpy(dtype=float)
        assert np.array_equal(np.isnan(w), np.isnan(g)), col
        # q_* are stored as float32; the score is float32 in both.
        assert np.array_equal(np.float32(w[~np.isnan(w)]), g[~np.isnan(g)]), col
    def gates(series):
        return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v
                for v in series]

    assert gates(want["quality_gate"]) == gates(got["quality_gate"])
    assert want["quality_eligible"].tolist() == got["quality_eligible"].tolist()
    assert got["split"].tolist() == [split_of(u, cfg.splits) for u in want["source_uri"]]
    assert got["stratum"].tolist() == stratum_of(want, stratify).tolist()
    assert 0 < got["quality_eligible"].sum() < len(got)  # the case is not trivial


def test_ranges_of_the_order_keep_tied_bins_whole_and_count_what_is_before():
    """pipeline/release_select.py `plan_ranges` over a merged histogram: ranges start at bin
    edges in (stratum, score descending) order, a bin of tied scores is never cut, and each
    range's offsets are the rows and seconds of every stratum before it."""
    from pipeline.release_select import merge_histograms, order_key, plan_ranges

    scores = pa.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.1, 0.0, -0.0, 1.0], pa.float32())
    keys = order_key(scores)
    ranked = np.argsort(keys, kind="stable")
    assert scores.to_numpy()[ranked].tolist() == sorted(scores.to_numpy().tolist(), reverse=True)
    assert keys[7] == keys[8]  # -0.0 ties with 0.0, as the reference sees them

    part = {"a": (np.array([1, 5, 9]), np.array([2, 6, 1]), np.array([2.0, 6.0, 1.0])),
            "b": (np.array([5]), np.array([4]), np.array([8.0]))}
    other = {"a": (np.array([5]), np.array([3]), np.array([3.0]))}
    hist = merge_histograms([part, other])
    assert hist["a"][0].tolist() == [1, 5, 9] and hist["a"][1].tolist() == [2, 9, 1]
    strata, starts, offsets = plan_ranges(hist, 4)
    assert strata == ["a", "b"]
    # 16 rows in bins a1 (2), a5 (9), a9 (1), b5 (4), cut in 4 ranges of ~4 rows: the edges
    # that fall inside the 9 tied rows of a5 move to its end; a5 is never cut.
    edges = [(int(k) >> 32, int(k) & 0xFFFFFFFF) for k in starts[1:]]
    assert edges == [(0, 9), (1, 5)]
    for start, off in zip(starts, offsets):
        before = [(i, b, n, s) for i, name in enumerate(strata)
                  for b, n, s in zip(*hist[name]) if ((i << 32) | int(b)) < start]
        for i, name in enumerate(strata):
            mine = [(n, s) for j, _, n, s in before if j == i]
            if mine:
                assert off[name] == (sum(n for n, _ in mine), sum(s for _, s in mine))
            else:
                assert name not in off
    assert plan_ranges({}, 4)[2] == [{}]
