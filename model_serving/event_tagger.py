"""The one protocol every acoustic event tagger implements (AudioSet ontology), and the factory
that builds one from a registry entry by family.

A tagger turns 16 kHz mono float32 audio into frame-level class scores: row i covers
[i * hop_s, i * hop_s + window_s). Audio shorter than one window is zero-padded to one frame, so
every non-empty input gets at least one row. Classes carry their AudioSet MID, so downstream code
(speech / music fractions, audits) never depends on one model's class order.
"""
from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from model_serving.registry import ModelError, ResolvedModel


@dataclass(frozen=True)
class AudioClass:
    index: int
    mid: str           # AudioSet id, e.g. /m/0bt9lr
    name: str          # display name, e.g. Dog


class EventTagger(Protocol):
    model_label: str               # registry name@version, for provenance
    classes: list[AudioClass]
    window_s: float
    hop_s: float

    def frame_scores(self, audio: np.ndarray) -> np.ndarray:
        """(frames, len(classes)) float32 scores in [0, 1]."""
        ...


def read_class_map(path: Path) -> list[AudioClass]:
    """AudioSet's `index,mid,display_name` CSV (class_labels_indices.csv, yamnet_class_map.csv)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise ModelError(f"label file {path} cannot be read: {exc}") from exc
    if not rows or [c.strip().lower() for c in rows[0][:3]] != ["index", "mid", "display_name"]:
        raise ModelError(f"label file {path} is not an AudioSet class map: its header must be "
                         f"'index,mid,display_name'")
    classes = []
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) < 3 or not row[0].strip().isdigit():
            raise ModelError(f"label file {path}, line {line_no}: expected index,mid,name; got {row}")
        classes.append(AudioClass(int(row[0]), row[1].strip(), row[2].strip()))
    if [c.index for c in classes] != list(range(len(classes))):
        raise ModelError(f"label file {path}: indices must run 0..{len(classes) - 1} in order")
    return classes


def load_event_tagger(model: ResolvedModel, *, cpu_threads: int = 1, device: str = "cpu",
                      work_dir: Path | None = None) -> EventTagger:
    """Build the adapter for a registry entry's family. Heavy imports happen in the adapters.
    `work_dir` takes what an adapter must write (an unpacked graph, matplotlib's cache); never
    the model's own directory, which may be site-packages or a read-only mount."""
    work_dir = Path(work_dir) if work_dir else Path(tempfile.gettempdir()) / "audioverse-models"
    if model.family == "yamnet-onnx":
        from model_serving.yamnet import YamnetTagger

        return YamnetTagger(model, cpu_threads=cpu_threads, work_dir=work_dir)
    if model.family == "panns-cnn14":
        from model_serving.panns import PannsTagger

        return PannsTagger(model, cpu_threads=cpu_threads, work_dir=work_dir, device=device)
    raise ModelError(f"model '{model.name}' has family '{model.family}', which is not an event "
                     f"tagger (known: yamnet-onnx, panns-cnn14)")


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))).astype(np.float32)
