"""Selection over the dataset view: score every segment, drop exact duplicates, keep the exact
top fraction of eligible segments per stratum, and assign splits by recording.

Pure functions over a pandas frame (one row per segment of the view), so a release can be
re-selected with another fraction or other weights without touching a model, and a test can
check the result independently (with DuckDB).

Rules, all deterministic:
- Order within a stratum: quality_score descending (as float32, the stored value), then
  segment_id ascending. rank_in_stratum 1 is the best.
- `unit: segments` keeps the first ceil(fraction x n) eligible segments of each stratum (so a
  non-empty stratum keeps at least one); `unit: hours` keeps the shortest prefix whose duration
  reaches fraction x the stratum's eligible hours.
- Exact duplicates (equal audio_sha256): the copy with the smallest (source_uri, segment_id) is
  kept, the others get `duplicate_of` and are not eligible.
- split: a hash of (salt, source key) -> [0, 1); below `test` is test, then validation, else
  train. By key, not by ETag, so a re-uploaded recording stays in its split; all segments of a
  recording share its split.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

from operators.quality import COMPONENTS, assess
from schemas.config import ReleaseConfig, SplitConfig


def split_of(source_uri: str, cfg: SplitConfig) -> str:
    digest = hashlib.sha256(f"{cfg.salt}\n{source_uri}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < cfg.test:
        return "test"
    if u < cfg.test + cfg.validation:
        return "validation"
    return "train"


def stratum_of(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    """"speech", or "speech/en" with stratify_by [language]; a missing value is "unknown"."""
    out = df["content_type"].astype(str)
    for key in keys:
        values = df[key] if key in df else pd.Series([None] * len(df), index=df.index)
        out = out + "/" + values.astype(object).where(values.notna(), "unknown").astype(str)
    return out


def score_view(view: pd.DataFrame, cfg: ReleaseConfig) -> pd.DataFrame:
    """The quality columns of every segment (components, score, first failed gate, eligible)."""
    rows = view.to_dict("records")
    scored = [assess(_plain(r), cfg.quality) for r in rows]
    out = view.copy()
    for k in COMPONENTS:
        out[f"q_{k}"] = [s[f"q_{k}"] for s in scored]
    # float32 is what is stored and what an auditor ranks by: rank by exactly that value.
    out["quality_score"] = [None if s["quality_score"] is None
                            else float(np.float32(s["quality_score"])) for s in scored]
    out["quality_gate"] = [s["quality_gate"] for s in scored]
    out["quality_eligible"] = [s["quality_eligible"] for s in scored]
    excluded = ~out["content_type"].isin(cfg.content_types)
    out.loc[excluded & out["quality_eligible"], "quality_gate"] = "content_type_not_released"
    out.loc[excluded, "quality_eligible"] = False
    return out


def _plain(row: dict) -> dict:
    """NaN -> None, numpy arrays -> lists: the quality functions take plain values."""
    out = {}
    for k, v in row.items():
        if isinstance(v, float) and math.isnan(v):
            v = None
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        out[k] = v
    return out


def mark_duplicates(scored: pd.DataFrame) -> pd.DataFrame:
    out = scored.copy()
    out["duplicate_of"] = None
    hashed = out[out["audio_sha256"].notna()].sort_values(["source_uri", "segment_id"])
    first = hashed.groupby("audio_sha256", sort=False)["segment_id"].transform("first")
    dup = first != hashed["segment_id"]
    out.loc[dup[dup].index, "duplicate_of"] = first[dup]
    is_dup = out["duplicate_of"].notna()
    out.loc[is_dup & out["quality_eligible"], "quality_gate"] = "duplicate"
    out.loc[is_dup, "quality_eligible"] = False
    return out


def select(view: pd.DataFrame, cfg: ReleaseConfig) -> tuple[pd.DataFrame, dict]:
    """Score, de-duplicate, rank and select. Returns (the frame with every selection column,
    a summary: per stratum the eligible count, kept count, threshold score and hours)."""
    df = score_view(view, cfg)
    df = mark_duplicates(df) if cfg.dedupe else df.assign(duplicate_of=None)
    df["stratum"] = stratum_of(df, cfg.stratify_by) if len(df) else []
    df["split"] = [split_of(u, cfg.splits) for u in df["source_uri"]]
    df["rank_in_stratum"] = pd.array([pd.NA] * len(df), dtype="Int32")
    df["selected"] = False

    strata = {}
    eligible = df[df["quality_eligible"]]
    for name, group in eligible.groupby("stratum", sort=True):
        ordered = group.assign(_neg=-group["quality_score"]).sort_values(["_neg", "segment_id"])
        n = len(ordered)
        if cfg.unit == "hours":
            cum = ordered["duration_s"].cumsum().to_numpy()
            need = cfg.fraction * cum[-1]
            k = int(np.searchsorted(cum, need - 1e-9) + 1)
        else:
            k = math.ceil(cfg.fraction * n - 1e-9)
        k = max(0, min(n, k))
        df.loc[ordered.index, "rank_in_stratum"] = np.arange(1, n + 1, dtype=np.int32)
        kept = ordered.index[:k]
        df.loc[kept, "selected"] = True
        strata[name] = {
            "eligible": n, "selected": k,
            "threshold_score": float(ordered["quality_score"].iloc[k - 1]) if k else None,
            "eligible_hours": round(float(ordered["duration_s"].sum()) / 3600, 6),
            "selected_hours": round(float(ordered["duration_s"].iloc[:k].sum()) / 3600, 6),
        }
    sel = df[df["selected"]]
    summary = {
        "fraction": cfg.fraction, "unit": cfg.unit, "stratify_by": ["content_type",
                                                                    *cfg.stratify_by],
        "segments_in_view": int(len(df)),
        "eligible": int(df["quality_eligible"].sum()),
        "duplicates": int(df["duplicate_of"].notna().sum()),
        "not_eligible_by_gate": {str(k): int(v) for k, v in
                                 df.loc[~df["quality_eligible"], "quality_gate"]
                                 .fillna("no_score").value_counts().sort_index().items()},
        "selected": int(len(sel)),
        "selected_hours": round(float(sel["duration_s"].sum()) / 3600, 6),
        "selected_by_split": {s: int((sel["split"] == s).sum())
                              for s in ("train", "validation", "test")},
        "strata": strata,
    }
    return df, summary
