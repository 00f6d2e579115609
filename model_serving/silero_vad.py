"""Silero VAD v6 (ONNX, shipped inside faster-whisper) as frame-level speech probabilities.

The region logic (thresholds, padding, merging) lives in operators/segmenting.py, so that it is
the pipeline's own, testable without the model, and the same for any VAD model of this shape.
"""
from __future__ import annotations

import numpy as np

from model_serving.registry import ResolvedModel

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512  # 32 ms: one probability per frame


class SileroVad:
    def __init__(self, model: ResolvedModel, filename: str = "silero_vad_v6.onnx"):
        from faster_whisper.vad import SileroVADModel  # onnxruntime, one thread

        self._model = SileroVADModel(str(model.file(filename)))

    def speech_probs(self, audio: np.ndarray) -> np.ndarray:
        """One speech probability per 512-sample frame of 16 kHz mono float32 audio."""
        if audio.size == 0:
            return np.zeros(0, dtype=np.float32)
        pad = (-audio.shape[0]) % FRAME_SAMPLES
        padded = np.pad(audio.astype(np.float32), (0, pad))
        return np.asarray(self._model(padded), dtype=np.float32).reshape(-1)
