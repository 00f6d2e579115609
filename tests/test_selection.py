"""Selection over a dataset view (operators/selection.py), checked independently with DuckDB:
exact top fraction per stratum, deterministic ties, hours mode, stratified mode, duplicates by
audio hash, splits by recording."""
import dataclasses
import math

import duckdb
import numpy as np
import pandas as pd
import pytest

from operators.selection import select, split_of
from schemas.config import ReleaseConfig, SplitConfig

CFG = ReleaseConfig()


def view(n_recordings=40, seed=3) -> pd.DataFrame:
    """A view with varied measurements: several segments per recording, three content types,
    two languages, some dropped segments, and ties in score."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_recordings):
        ctype = ["speech", "speech", "music", "sound"][r % 4]
        for i in range(int(rng.integers(1, 5))):
            snr = float(rng.choice([10.0, 20.0, 40.0]))  # few values: ties happen
            rows.append({
                "run_id": "night-1", "recording_id": f"rec-{r:03d}",
                "segment_id": f"rec-{r:03d}-{i:05d}", "source_uri": f"s3://b/raw/{r:03d}.flac",
                "source_etag": f"e{r}", "content_type": ctype,
                "language": (["en", "fr"][r % 2] if ctype == "speech" else None),
                "duration_s": float(rng.choice([2.0, 5.0, 9.0, 14.0])),
                "snr_db": snr, "clipped_ratio": 0.0,
                "speech_fraction": 0.9 if ctype == "speech" else 0.1,
                "music_fraction": 0.9 if ctype == "music" else 0.0,
                "noise_fraction": 0.9 if ctype == "sound" else 0.1,
                "asr_agreement": float(rng.choice([0.7, 0.9, 1.0])) if ctype == "speech" else None,
                "asr_confidence": 0.8 if ctype == "speech" else None,
                "caption_description": None, "caption_source": None, "caption_flags": None,
                "drop_reason": "asr_disagreement" if rng.random() < 0.1 else None,
                "audio_sha256": f"h-{r}-{i}",
            })
    return pd.DataFrame(rows)


def duckdb_expected(frame: pd.DataFrame, fraction: float) -> set[str]:
    """The top fraction per stratum, computed from the stored scores by SQL alone."""
    con = duckdb.connect()
    con.register("sel", frame[["segment_id", "stratum", "quality_score", "quality_eligible"]])
    rows = con.execute(f"""
        WITH e AS (SELECT * FROM sel WHERE quality_eligible),
        r AS (SELECT segment_id, stratum,
                     row_number() OVER (PARTITION BY stratum
                                        ORDER BY quality_score DESC, segment_id) AS rn,
                     count(*) OVER (PARTITION BY stratum) AS n
              FROM e)
        SELECT segment_id FROM r WHERE rn <= ceil({fraction} * n - 1e-9)""").fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 1.0])
def test_selection_is_exactly_the_top_fraction_per_content_type(fraction):
    cfg = dataclasses.replace(CFG, fraction=fraction)
    frame, summary = select(view(), cfg)
    chosen = set(frame.loc[frame["selected"], "segment_id"])
    assert chosen == duckdb_expected(frame, fraction)
    for stratum, s in summary["strata"].items():
        n = int((frame["quality_eligible"] & (frame["stratum"] == stratum)).sum())
        assert s["eligible"] == n and s["selected"] == math.ceil(fraction * n - 1e-9)
    assert summary["selected"] == len(chosen)
    assert not frame.loc[frame["selected"], "drop_reason"].notna().any()


def test_reselecting_with_another_fraction_keeps_a_superset_and_is_deterministic():
    small, _ = select(view(), dataclasses.replace(CFG, fraction=0.2))
    large, _ = select(view(), dataclasses.replace(CFG, fraction=0.4))
    again, _ = select(view(), dataclasses.replace(CFG, fraction=0.2))
    s = set(small.loc[small["selected"], "segment_id"])
    assert s < set(large.loc[large["selected"], "segment_id"])
    assert s == set(again.loc[again["selected"], "segment_id"])
    # Input order does not matter (ties broken by segment id, not by position).
    shuffled, _ = select(view().sample(frac=1.0, random_state=1), dataclasses.replace(
        CFG, fraction=0.2))
    assert s == set(shuffled.loc[shuffled["selected"], "segment_id"])


def test_stratified_mode_takes_the_top_fraction_within_each_language():
    cfg = dataclasses.replace(CFG, fraction=0.3, stratify_by=["language"])
    frame, summary = select(view(), cfg)
    assert {"speech/en", "speech/fr", "music/unknown", "sound/unknown"} <= set(summary["strata"])
    assert set(frame.loc[frame["selected"], "segment_id"]) == duckdb_expected(frame, 0.3)


def test_hours_mode_keeps_the_shortest_prefix_reaching_the_fraction_of_hours():
    cfg = dataclasses.replace(CFG, fraction=0.3, unit="hours")
    frame, summary = select(view(), cfg)
    for stratum, group in frame[frame["quality_eligible"]].groupby("stratum"):
        ranked = group.sort_values("rank_in_stratum")
        kept = ranked[ranked["selected"]]
        total = ranked["duration_s"].sum()
        assert kept["duration_s"].sum() >= 0.3 * total - 1e-9
        assert kept["duration_s"].sum() - kept["duration_s"].iloc[-1] < 0.3 * total
        assert list(kept["rank_in_stratum"]) == list(range(1, len(kept) + 1))


def test_exact_duplicates_keep_one_copy_by_source_key():
    v = view(8)
    dup = v[v["recording_id"] == "rec-001"].copy()
    dup["recording_id"], dup["source_uri"] = "rec-copy", "s3://b/raw/000-copy.flac"
    dup["segment_id"] = dup["segment_id"].str.replace("rec-001", "rec-copy")
    frame, summary = select(pd.concat([v, dup], ignore_index=True),
                            dataclasses.replace(CFG, fraction=1.0))
    copies = frame[frame["recording_id"] == "rec-copy"]
    originals = frame[frame["recording_id"] == "rec-001"]
    # s3://b/raw/000-copy.flac sorts before s3://b/raw/001.flac: the copy is the one kept.
    assert originals["duplicate_of"].tolist() == copies["segment_id"].tolist()
    assert not originals["quality_eligible"].any() and not originals["selected"].any()
    assert copies["duplicate_of"].isna().all()
    assert summary["duplicates"] == len(originals)


def test_splits_are_by_recording_stable_and_near_their_shares():
    frame, _ = select(view(400), dataclasses.replace(CFG, fraction=1.0))
    assert frame.groupby("recording_id")["split"].nunique().max() == 1
    shares = frame.drop_duplicates("recording_id")["split"].value_counts(normalize=True)
    assert 0.85 <= shares["train"] <= 0.95
    assert 0.02 <= shares["test"] <= 0.09 and 0.02 <= shares["validation"] <= 0.09
    # The split depends on the key and salt only: not on the ETag or on other recordings.
    assert split_of("s3://b/raw/7.flac", CFG.splits) == split_of("s3://b/raw/7.flac", CFG.splits)
    other = SplitConfig(salt="another")
    moved = sum(split_of(f"s3://b/{i}", CFG.splits) != split_of(f"s3://b/{i}", other)
                for i in range(200))
    assert moved > 5
