"""The quality columns of a whole table at once: operators/quality.py's rules, vectorized.

A release scores the dataset view in tasks, one Arrow table at a time; this computes exactly what
`quality.assess` computes row by row (the same float64 operations in the same order, then the
score as float32), plus the split and the stratum, with no Python loop over rows (only over the
distinct source URIs, for the split hash). operators/selection.py stays the reference, and the
tests hold the two equal.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.quality import (COMPONENTS, CREDITED_CAPTION_FIELDS, SUPPORT_SCHEMA_VERSION,
                               provenance_credit)
from schemas.config import ReleaseConfig, SplitConfig
from schemas.provenance import HEARD, INFERRED, MEASURED

SHARE = {"speech": "speech_fraction", "music": "music_fraction", "sound": "noise_fraction"}


def _f64(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(values as float64 with NaN for null, present mask)."""
    col = table.column(name)
    values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    present = pc.is_valid(col).to_numpy(zero_copy_only=False)
    return np.where(present, values, np.nan), present


def _ramp(value: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.where(value >= high, 1.0, 0.0)
    return np.minimum(1.0, np.maximum(0.0, (value - low) / (high - low)))


def _duration_fit(d: np.ndarray, limits: list[float]) -> np.ndarray:
    lo, ideal_lo, ideal_hi, hi = limits
    return np.where(d <= ideal_lo, _ramp(d, lo, ideal_lo),
                    np.where(d <= ideal_hi, 1.0, 1.0 - _ramp(d, ideal_hi, hi)))


def split_of_uris(uris: pa.ChunkedArray | pa.Array, cfg: SplitConfig) -> pa.Array:
    """operators/selection.py `split_of`, hashed once per distinct URI."""
    dictionary = pc.dictionary_encode(uris).combine_chunks() if isinstance(
        uris, pa.ChunkedArray) else pc.dictionary_encode(uris)
    names = []
    for uri in dictionary.dictionary.to_pylist():
        digest = hashlib.sha256(f"{cfg.salt}\n{uri}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        names.append("test" if u < cfg.test else "validation" if u < cfg.test + cfg.validation
                     else "train")
    return pc.take(pa.array(names, pa.string()), dictionary.indices)


def stratum(table: pa.Table, keys: list[str]) -> pa.Array:
    """"speech", or "speech/en" with stratify_by [language]; a missing value is "unknown"."""
    out = pc.cast(table.column("content_type"), pa.string())
    out = pc.fill_null(out, "None")
    for key in keys:
        values = table.column(key) if key in table.column_names else \
            pa.nulls(table.num_rows, pa.string())
        out = pc.binary_join_element_wise(out, pc.fill_null(pc.cast(values, pa.string()),
                                                            "unknown"), "/")
    return out


def score_table(view: pa.Table, cfg: ReleaseConfig) -> pa.Table:
    """`view` with q_<component>, quality_score (float32), quality_gate, quality_eligible,
    split and stratum appended."""
    q = cfg.quality
    n = view.num_rows
    ctype = pc.fill_null(pc.cast(view.column("content_type"), pa.string()), "").to_numpy(
        zero_copy_only=False).astype(object)
    speech = ctype == "speech"
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    agreement, has = _f64(view, "asr_agreement")
    if "schema_version" in view.column_names:   # see quality.agreement_is_support
        version, has_version = _f64(view, "schema_version")
        has &= ~has_version | (version >= SUPPORT_SCHEMA_VERSION)
    parts["agreement"] = (np.minimum(1.0, np.maximum(0.0, agreement)), speech & has)
    confidence, has = _f64(view, "asr_confidence")
    parts["confidence"] = (np.minimum(1.0, np.maximum(0.0, confidence)), speech & has)
    snr, has_snr = _f64(view, "snr_db")
    parts["snr"] = (_ramp(snr, q.snr_floor_db, q.snr_good_db), has_snr)
    content = np.full(n, np.nan)
    has_content = np.zeros(n, dtype=bool)
    for kind, column in SHARE.items():
        values, has = _f64(view, column)
        mine = (ctype == kind) & has
        content = np.where(mine, np.minimum(1.0, np.maximum(0.0, values)), content)
        has_content |= mine
    parts["content"] = (content, has_content)
    clipped, has = _f64(view, "clipped_ratio")
    parts["clipping"] = (1.0 - _ramp(clipped, 0.0, q.clip_tolerance), has)
    duration, has_duration = _f64(view, "duration_s")
    fit = np.full(n, np.nan)
    has_fit = np.zeros(n, dtype=bool)
    for kind, limits in q.durations.items():
        mine = (ctype == kind) & has_duration
        fit = np.where(mine, _duration_fit(duration, limits), fit)
        has_fit |= mine
    parts["duration"] = (fit, has_fit)
    described = pc.is_valid(view.column("caption_description")).to_numpy(zero_copy_only=False)
    corrected = _any_corrected(view.column("caption_flags"))
    source = pc.is_valid(view.column("caption_source")).to_numpy(zero_copy_only=False)
    caption = np.where(described, np.where(corrected, q.corrected_caption, 1.0)
                       * _caption_credit(view, q), 0.0)
    parts["caption"] = (caption, described | source)

    # Weighted mean over the present components, in COMPONENTS order (as quality.score sums).
    weights = {k: np.zeros(n) for k in COMPONENTS}
    for kind, table in q.weights.items():
        mine = ctype == kind
        for k in COMPONENTS:
            weights[k][mine] = table.get(k, 0.0)
    total = np.zeros(n)
    acc = np.zeros(n)
    for k in COMPONENTS:
        value, has = parts[k]
        total = total + np.where(has, weights[k], 0.0)
        acc = acc + np.where(has, weights[k] * np.where(has, value, 0.0), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(total > 0, acc / np.where(total > 0, total, 1.0), np.nan)
    score32 = score.astype(np.float32)

    drop = view.column("drop_reason")
    gate = pc.if_else(pc.is_valid(drop), pc.binary_join_element_wise(
        pa.scalar("dropped"), pc.cast(drop, pa.string()), ":"), pa.scalar(None, pa.string()))
    gate = gate.to_numpy(zero_copy_only=False).astype(object)
    open_ = pc.is_null(drop).to_numpy(zero_copy_only=False)
    if q.min_duration_s is not None:
        hit = open_ & (np.where(has_duration, duration, 0.0) < q.min_duration_s)
        gate[hit] = "min_duration_s"
        open_ = open_ & ~hit
    if q.min_snr_db is not None:
        hit = open_ & has_snr & (np.where(has_snr, snr, np.inf) < q.min_snr_db)
        gate[hit] = "min_snr_db"
        open_ = open_ & ~hit
    if q.min_agreement is not None:
        agree, has_agree = _f64(view, "asr_agreement")
        hit = open_ & speech & (~has_agree | (np.where(has_agree, agree, np.inf)
                                              < q.min_agreement))
        gate[hit] = "min_agreement"
        open_ = open_ & ~hit
    eligible = open_ & ~np.isnan(score)
    released = np.isin(ctype, list(cfg.content_types))
    gate[eligible & ~released] = "content_type_not_released"
    eligible &= released

    out = view
    for k in COMPONENTS:
        value, has = parts[k]
        out = out.append_column(f"q_{k}", pa.array(np.where(has, value, np.nan),
                                                   pa.float32(), mask=~has))
    out = out.append_column("quality_score", pa.array(score32, pa.float32(),
                                                      mask=np.isnan(score)))
    out = out.append_column("quality_gate", pa.array(gate, pa.string()))
    out = out.append_column("quality_eligible", pa.array(eligible, pa.bool_()))
    out = out.append_column("split", split_of_uris(view.column("source_uri"), cfg.splits))
    return out.append_column("stratum", stratum(view, list(cfg.stratify_by)))


def _caption_credit(view: pa.Table, q) -> np.ndarray:
    """Per row: the mean provenance credit of CREDITED_CAPTION_FIELDS (quality.components)."""
    n = view.num_rows
    none = provenance_credit(None, q)
    if "caption_provenance" not in view.column_names:
        return np.full(n, none)
    prov = view.column("caption_provenance").combine_chunks()
    full, inferred = provenance_credit(MEASURED, q), provenance_credit(INFERRED, q)
    total = np.zeros(n)
    for key in CREDITED_CAPTION_FIELDS:
        values = pc.struct_field(prov, key) if prov.null_count < n else pa.nulls(n, pa.string())
        strong = pc.fill_null(pc.is_in(values, value_set=pa.array([MEASURED, HEARD])), False)
        weak = pc.fill_null(pc.equal(values, INFERRED), False)
        missing = pc.is_null(values)
        total = total + np.select(
            [strong.to_numpy(zero_copy_only=False), weak.to_numpy(zero_copy_only=False),
             missing.to_numpy(zero_copy_only=False)], [full, inferred, none],
            provenance_credit("unknown", q))
    return total / len(CREDITED_CAPTION_FIELDS)


def _any_corrected(flags: pa.ChunkedArray) -> np.ndarray:
    """Per row: whether any flag starts with "corrected:" (no flags: False)."""
    flags = flags.combine_chunks() if isinstance(flags, pa.ChunkedArray) else flags
    out = np.zeros(len(flags), dtype=bool)
    flat = pc.list_flatten(flags)
    if len(flat):
        hit = pc.fill_null(pc.starts_with(flat, "corrected:"), False).to_numpy(
            zero_copy_only=False)
        parents = pc.list_parent_indices(flags).to_numpy(zero_copy_only=False)
        out[parents[hit]] = True
    return out
