"""Speaker embeddings over fixed windows of speech, behind one small protocol.

Embedded default: resemblyzer's GE2E encoder (weights inside the `resemblyzer` wheel, verified by
the registry). One L2-normalised 256-d embedding per 1.6 s window (the model's partial-utterance
length), windows every `hop_s`; a segment shorter than one window is zero-padded into one.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from model_serving.registry import ModelError, ResolvedModel

RESEMBLYZER_WINDOW_S = 1.6
TARGET_DBFS = -30.0  # resemblyzer's own volume normalisation target


class SpeakerEncoder(Protocol):
    model_label: str
    window_s: float

    def embed_windows(self, audio: np.ndarray, hop_s: float) -> np.ndarray:
        """(windows, dim) float32, L2-normalised; window i starts at i * hop_s."""
        ...


class ResemblyzerEncoder:
    window_s = RESEMBLYZER_WINDOW_S

    def __init__(self, model: ResolvedModel, cpu_threads: int = 1, device: str = "cpu"):
        import torch
        from resemblyzer import VoiceEncoder

        torch.set_num_threads(max(1, cpu_threads))
        self.model_label = model.label
        self._encoder = VoiceEncoder(device, verbose=False,
                                     weights_fpath=model.only_file(".pt", "encoder weights"))

    def embed_windows(self, audio: np.ndarray, hop_s: float) -> np.ndarray:
        audio = np.nan_to_num(np.asarray(audio, dtype=np.float32))
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
        if rms < 1e-6:  # near-silence: nothing to embed, and normalising it would divide by 0
            return np.zeros((0, 256), dtype=np.float32)
        wav = audio * np.float32(10.0 ** (TARGET_DBFS / 20.0) / rms)
        _, partials, _ = self._encoder.embed_utterance(wav, return_partials=True,
                                                       rate=1.0 / hop_s, min_coverage=0.5)
        return np.asarray(partials, dtype=np.float32)


def load_speaker_encoder(model: ResolvedModel, *, cpu_threads: int = 1) -> SpeakerEncoder:
    if model.family == "resemblyzer":
        return ResemblyzerEncoder(model, cpu_threads=cpu_threads)
    raise ModelError(f"model '{model.name}' has family '{model.family}', which is not a speaker "
                     f"encoder (known: resemblyzer)")
