"""PANNs Cnn14 (AudioSet tagging, 32 kHz) built from `panns-inference`'s model classes, with the
checkpoint and the label list both from the registry.

`import panns_inference` runs the package `__init__`, whose config module shells out to `wget` for
AudioSet's label CSV and writes `~/panns_data`, and `AudioTagging` re-downloads any checkpoint
under 300 MB. So neither is used: `panns_inference.models` is imported under an empty parent
package (the `__init__` never runs), matplotlib (imported by models.py) is pointed at `work_dir`,
and the weights are loaded here with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np

from model_serving.event_tagger import AudioClass, read_class_map
from model_serving.registry import ModelError, ResolvedModel

MODEL_RATE = 32000
# Cnn14's published front end (panns_inference.AudioTagging, the 0.431 mAP checkpoint).
CNN14_ARGS = dict(sample_rate=MODEL_RATE, window_size=1024, hop_size=320, mel_bins=64, fmin=50,
                  fmax=14000)


def import_models(work_dir: Path):
    """`panns_inference.models`, imported without the package's downloading `__init__`."""
    if "panns_inference" not in sys.modules:
        spec = importlib.util.find_spec("panns_inference")  # finds it without running it
        if spec is None or not spec.submodule_search_locations:
            raise ModelError("the `panns-inference` package is not installed; run `make install`")
        shell = types.ModuleType("panns_inference")
        shell.__path__ = list(spec.submodule_search_locations)
        sys.modules["panns_inference"] = shell
    mpl_dir = Path(work_dir) / "matplotlib"
    mpl_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLCONFIGDIR", str(mpl_dir))
    os.environ.setdefault("MPLBACKEND", "Agg")
    return importlib.import_module("panns_inference.models")


class PannsTagger:
    window_s = 1.0
    hop_s = 0.5

    def __init__(self, model: ResolvedModel, *, work_dir: Path, cpu_threads: int = 1,
                 device: str = "cpu", batch_windows: int = 16):
        import torch

        torch.set_num_threads(max(1, cpu_threads))
        self.model_label = model.label
        self.classes: list[AudioClass] = read_class_map(model.only_file(".csv", "label list"))
        checkpoint = model.only_file(".pth", "checkpoint")
        models = import_models(work_dir)
        self._net = models.Cnn14(classes_num=len(self.classes), **CNN14_ARGS)
        state = torch.load(str(checkpoint), map_location=device, weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
        try:
            self._net.load_state_dict(state)
        except RuntimeError as exc:
            n = state.get("fc_audioset.weight").shape[0] if "fc_audioset.weight" in state else "?"
            raise ModelError(f"model '{model.name}': checkpoint {checkpoint.name} does not fit "
                             f"Cnn14 with {len(self.classes)} classes from the label list "
                             f"(checkpoint has {n}): {str(exc).splitlines()[0]}") from exc
        self._net.eval().to(device)
        self._device = device
        self._batch = batch_windows

    def frame_scores(self, audio: np.ndarray) -> np.ndarray:
        import torch
        from scipy.signal import resample_poly

        audio = np.nan_to_num(np.asarray(audio, dtype=np.float32))
        wave = resample_poly(audio, 2, 1).astype(np.float32)  # 16 kHz -> 32 kHz
        win, hop = int(self.window_s * MODEL_RATE), int(self.hop_s * MODEL_RATE)
        n = 1 + max(0, -(-(wave.size - win) // hop))
        wave = np.pad(wave, (0, max(0, (n - 1) * hop + win - wave.size)))
        windows = np.stack([wave[i * hop: i * hop + win] for i in range(n)])
        out = []
        with torch.no_grad():
            for start in range(0, n, self._batch):
                x = torch.from_numpy(windows[start:start + self._batch]).to(self._device)
                out.append(self._net(x)["clipwise_output"].cpu().numpy())
        return np.concatenate(out).astype(np.float32)
