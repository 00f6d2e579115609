"""Speakers: window embeddings per speech segment (a row stage with the model), then one
clustering per recording (a recording stage, DESIGN.md section 4), so that speaker ids are
consistent across the segments of a recording.

Clustering is average-linkage over cosine distance with a fixed threshold
(`speakers.distance_threshold`), which needs no speaker count up front. Windows that straddle a
change of speaker embed as a blend of both and can form a tiny cluster of their own; a cluster
with fewer than `speakers.min_speaker_windows` windows (or under `min_speaker_share` of the
recording's windows) is folded into the nearest large one.
Ids are `spk1`, `spk2`, ... in order of first appearance in the recording.

Each speaker also gets a gender from the pitch of its own windows across the recording
(operators/voice.py): the embedding stage measures the median f0 of every window it embeds, and
the clustering pools them per speaker (`speaker_f0_hz`, `speaker_genders`,
`speaker_gender_confidence`, aligned with `speaker_ids`).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from operators.audio import from_bytes
from operators.base import ModelStage, Stage, model_identity
from operators.voice import gender_of, pooled_median, segment_window_pitch
from schemas.config import SpeakersConfig, StageResources
from schemas.tables import SPEAKER_EMBEDDINGS_FIELD, SPEAKER_FIELDS, SPEAKER_WINDOW_PITCH_FIELD

EMBED_FIELDS = [SPEAKER_EMBEDDINGS_FIELD, SPEAKER_WINDOW_PITCH_FIELD] + [
    f for f in SPEAKER_FIELDS if f.name == "speaker_model"]


def cluster_windows(embeddings: np.ndarray, threshold: float, min_windows: int,
                    min_share: float = 0.0) -> np.ndarray:
    """One cluster label per window (0, 1, ... in order of first appearance)."""
    n = len(embeddings)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage

    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    labels = fcluster(linkage(x.astype(np.float64), method="average", metric="cosine"),
                      t=threshold, criterion="distance")
    sizes = {c: int(np.sum(labels == c)) for c in np.unique(labels)}
    least = max(min_windows, min_share * n)
    large = [c for c, size in sizes.items() if size >= least]
    if large and len(large) < len(sizes):
        centroids = np.stack([x[labels == c].mean(axis=0) for c in large])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        for i in np.nonzero(~np.isin(labels, large))[0]:
            labels[i] = large[int(np.argmax(centroids @ x[i]))]
    order = {c: k for k, c in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[c] for c in labels], dtype=np.int64)


class SpeakerEmbedStage(ModelStage):
    """segment rows -> + `speaker_embeddings` (speech segments of at least min_segment_s)."""

    name = "speaker_embed"
    config_section = "speakers"
    requires = ("audio", "content_type", "duration_s", "reject_reason")
    adds = pa.schema(EMBED_FIELDS)
    # The GE2E LSTM runs at ~100x real time on one thread.
    resources = StageResources(num_cpus=0.5, concurrency=1, batch_size=8)

    @classmethod
    def outcome_settings(cls, cfg):
        return {"hop_s": cfg.speakers.hop_s, "min_segment_s": cfg.speakers.min_segment_s,
                "model": model_identity(cfg, cfg.speakers.model)}

    cfg: SpeakersConfig

    def setup(self) -> None:
        from model_serving.speaker_encoder import load_speaker_encoder

        self.encoder = load_speaker_encoder(self.registry.resolve(self.cfg.model),
                                            cpu_threads=self.cfg.cpu_threads)

    def process_row(self, row: dict) -> None:
        if (row["reject_reason"] is not None or row["content_type"] != "speech"
                or row["duration_s"] < self.cfg.min_segment_s):
            return
        audio = from_bytes(row["audio"])
        windows = self.encoder.embed_windows(audio, self.cfg.hop_s)
        if len(windows):
            row["speaker_embeddings"] = windows.tolist()
            row["speaker_model"] = self.encoder.model_label
            # The pitch of the same windows, so the clustering can give each speaker the
            # median pitch of its own windows (WORLD runs ~100x real time).
            medians, voiced, frames = segment_window_pitch(audio, len(windows), self.cfg.hop_s,
                                                           self.encoder.window_s)
            row[SPEAKER_WINDOW_PITCH_FIELD.name] = [[float("nan") if m is None else m, v, n]
                                                    for m, v, n in zip(medians, voiced, frames)]


class SpeakerClusterStage(Stage):
    """All rows of one recording -> + SPEAKER_FIELDS. No model; consumes the embeddings."""

    # A recording stage (DESIGN.md section 4): it needs every segment of a recording at once,
    # which a night's partition blocks guarantee (pipeline/dag.py); it groups within the batch.
    name = "speakers"
    per_recording = True
    requires = ("recording_id", "segment_index", "reject_reason", SPEAKER_EMBEDDINGS_FIELD.name,
                SPEAKER_WINDOW_PITCH_FIELD.name)
    adds = pa.schema([f for f in SPEAKER_FIELDS if f.name != "speaker_model"])
    consumes = (SPEAKER_EMBEDDINGS_FIELD.name, SPEAKER_WINDOW_PITCH_FIELD.name)
    resources = StageResources(num_cpus=0.25, concurrency=1, batch_size=1)

    @classmethod
    def config_kwargs(cls, cfg, storage, caption=None):
        return {"cfg": cfg.speakers}

    @classmethod
    def outcome_settings(cls, cfg):
        return {k: getattr(cfg.speakers, k) for k in ("distance_threshold",
                                                      "min_speaker_windows", "min_speaker_share")}

    def __init__(self, cfg: SpeakersConfig):
        super().__init__()
        self.cfg = cfg

    def process(self, batch: pa.Table) -> pa.Table:
        rows = sorted(batch.to_pylist(), key=lambda r: (r["recording_id"],
                                                        r["segment_index"] if r["segment_index"]
                                                        is not None else -1))
        by_recording: dict[str, list[dict]] = {}
        for row in rows:
            by_recording.setdefault(row["recording_id"], []).append(row)
        for group in by_recording.values():
            self._assign(group)
        for row in rows:
            row.pop(SPEAKER_EMBEDDINGS_FIELD.name, None)
            row.pop(SPEAKER_WINDOW_PITCH_FIELD.name, None)
        return self.to_table(rows, batch)

    def _assign(self, rows: list[dict]) -> None:
        owners, chunks, pitch = [], [], []
        for k, row in enumerate(rows):
            windows = row.get(SPEAKER_EMBEDDINGS_FIELD.name)
            if windows:
                chunks.append(np.asarray(windows, dtype=np.float32))
                owners.extend([k] * len(windows))
                pitch.extend(row.get(SPEAKER_WINDOW_PITCH_FIELD.name)
                             or [[float("nan"), 0, 0]] * len(windows))
        segments = [r for r in rows if r["reject_reason"] is None]
        if not chunks:
            for row in segments:
                row["recording_speaker_count"] = 0
            return
        labels = cluster_windows(np.concatenate(chunks), self.cfg.distance_threshold,
                                 self.cfg.min_speaker_windows, self.cfg.min_speaker_share)
        owners = np.asarray(owners)
        voices = self._voices(labels, pitch)
        for row in segments:
            row["recording_speaker_count"] = int(labels.max()) + 1
        for k in np.unique(owners):
            mine = labels[owners == k]
            ids, counts = np.unique(mine, return_counts=True)
            ranked = sorted(zip(ids.tolist(), counts.tolist()), key=lambda t: (-t[1], t[0]))
            rows[k]["speaker_ids"] = [f"spk{i + 1}" for i, _ in ranked]
            rows[k]["speaker_count"] = len(ranked)
            rows[k]["speaker_f0_hz"] = [voices[i][0] for i, _ in ranked]
            rows[k]["speaker_genders"] = [voices[i][1] for i, _ in ranked]
            rows[k]["speaker_gender_confidence"] = [voices[i][2] for i, _ in ranked]

    @staticmethod
    def _voices(labels: np.ndarray, pitch: list) -> dict[int, tuple]:
        """Per speaker label: (median f0 over its windows in the recording, gender, confidence)."""
        out = {}
        for label in np.unique(labels).tolist():
            mine = [pitch[i] for i in np.flatnonzero(labels == label)]
            medians = [None if m is None or m != m else float(m) for m, _, _ in mine]
            voiced = [int(v) for _, v, _ in mine]
            median = pooled_median(medians, voiced)
            gender, confidence = gender_of(median, sum(voiced), sum(int(n) for _, _, n in mine))
            out[label] = (None if median is None else round(median, 1), gender, confidence)
        return out
