"""Quality score of a segment (issue 6, first part; not yet a stage in the DAG).

Each component is a number in [0, 1] kept as its own column, so an auditor can see why a segment
scored as it did; a component that does not apply (no ASR on a sound segment, captions turned
off) is null and its weight is left out. The score is the weighted mean of the present
components, with weights per content type (`QualityConfig.weights`). Hard gates make a segment
ineligible whatever its score; the first gate that fails is named. Weights, ramps and gates:
`schemas.config.QualityConfig`.
"""
from __future__ import annotations

from typing import Optional

from schemas.config import QualityConfig
from schemas.provenance import HEARD, INFERRED, MEASURED

COMPONENTS = ("agreement", "confidence", "snr", "content", "clipping", "duration", "caption")
# The caption fields whose provenance scales the caption component (QualityConfig
# inferred_caption_credit); the speakers' fields are "unknown" for every segment a text model
# captions and do not apply to music or sounds, so they would only add a constant.
CREDITED_CAPTION_FIELDS = ("scene", "environment", "description")


def provenance_credit(provenance: str | None, cfg: QualityConfig) -> float:
    """How much one caption field counts: measured/heard 1, inferred the configured credit,
    unknown 0. A row without provenance (before schema 6: the text captioner) is inferred."""
    if provenance in (MEASURED, HEARD):
        return 1.0
    if provenance is None or provenance == INFERRED:
        return cfg.inferred_caption_credit
    return 0.0


# Since schema 7, asr_agreement is the independent support of the selected transcript (1 - the
# error of its closest confirmation by another model family). Before, it was 1 - the mean
# pairwise error of all systems, which one wrong system pulls down whatever the others agree on.
# The score uses only the new meaning: for older rows the component is left out (its weight
# goes to the others) until they are re-annotated; the min_agreement gate still applies.
SUPPORT_SCHEMA_VERSION = 7


def agreement_is_support(row: dict) -> bool:
    version = row.get("schema_version")
    return version is None or int(version) >= SUPPORT_SCHEMA_VERSION


def _ramp(value: float, low: float, high: float) -> float:
    if high <= low:
        return 1.0 if value >= high else 0.0
    return min(1.0, max(0.0, (value - low) / (high - low)))


def duration_fit(duration_s: float, limits: list[float]) -> float:
    lo, ideal_lo, ideal_hi, hi = limits
    if duration_s <= ideal_lo:
        return _ramp(duration_s, lo, ideal_lo)
    if duration_s <= ideal_hi:
        return 1.0
    return 1.0 - _ramp(duration_s, ideal_hi, hi)


def components(row: dict, cfg: QualityConfig) -> dict[str, Optional[float]]:
    """Each component in [0, 1], or None where it does not apply to this segment."""
    ctype = row.get("content_type")
    speech = ctype == "speech"
    out: dict[str, Optional[float]] = dict.fromkeys(COMPONENTS)
    if speech and row.get("asr_agreement") is not None and agreement_is_support(row):
        out["agreement"] = min(1.0, max(0.0, float(row["asr_agreement"])))
    if speech and row.get("asr_confidence") is not None:
        out["confidence"] = min(1.0, max(0.0, float(row["asr_confidence"])))
    if row.get("snr_db") is not None:
        out["snr"] = _ramp(float(row["snr_db"]), cfg.snr_floor_db, cfg.snr_good_db)
    share = {"speech": "speech_fraction", "music": "music_fraction",
             "sound": "noise_fraction"}.get(ctype)
    if share and row.get(share) is not None:
        out["content"] = min(1.0, max(0.0, float(row[share])))
    if row.get("clipped_ratio") is not None:
        out["clipping"] = 1.0 - _ramp(float(row["clipped_ratio"]), 0.0, cfg.clip_tolerance)
    if row.get("duration_s") is not None and ctype in cfg.durations:
        out["duration"] = duration_fit(float(row["duration_s"]), cfg.durations[ctype])
    if row.get("caption_description") is not None:
        corrected = any(f.startswith("corrected:") for f in row.get("caption_flags") or [])
        prov = row.get("caption_provenance") or {}
        credit = sum(provenance_credit(prov.get(k), cfg) for k in CREDITED_CAPTION_FIELDS)
        out["caption"] = (cfg.corrected_caption if corrected else 1.0) * (
            credit / len(CREDITED_CAPTION_FIELDS))
    elif row.get("caption_source") is not None:  # captioning ran and failed
        out["caption"] = 0.0
    return out


def score(parts: dict[str, Optional[float]], weights: dict[str, float]) -> Optional[float]:
    """Weighted mean over the components that are present; None if none is."""
    total = sum(weights.get(k, 0.0) for k, v in parts.items() if v is not None)
    if total <= 0:
        return None
    return sum(weights.get(k, 0.0) * v for k, v in parts.items() if v is not None) / total


def failed_gate(row: dict, cfg: QualityConfig) -> Optional[str]:
    """The first hard gate the segment fails, or None."""
    if row.get("drop_reason"):
        return f"dropped:{row['drop_reason']}"
    if cfg.min_duration_s is not None and (row.get("duration_s") or 0.0) < cfg.min_duration_s:
        return "min_duration_s"
    if cfg.min_snr_db is not None and row.get("snr_db") is not None \
            and row["snr_db"] < cfg.min_snr_db:
        return "min_snr_db"
    if cfg.min_agreement is not None and row.get("content_type") == "speech" \
            and (row.get("asr_agreement") is None or row["asr_agreement"] < cfg.min_agreement):
        return "min_agreement"
    return None


def assess(row: dict, cfg: QualityConfig) -> dict:
    """The quality columns of one segment row."""
    parts = components(row, cfg)
    value = score(parts, cfg.weights.get(row.get("content_type"), {}))
    gate = failed_gate(row, cfg)
    return {**{f"q_{k}": v for k, v in parts.items()}, "quality_score": value,
            "quality_gate": gate, "quality_eligible": gate is None and value is not None}
