"""Codes back to audio for listening (`decode`), and a row's codes as an array (`codes_array`).

Importing this module costs nothing: the codec (model_serving.codec, i.e. transformers, the
[codec] extra) is imported inside `decode`, so trainers that never listen do not install it.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from schemas.release import CODE_PAD

_CODECS: dict[tuple, Any] = {}
_CODECS_LOCK = threading.Lock()


def codes_array(value: Any) -> np.ndarray:
    """One row's `codes` (list<list<int16>> [codebooks][frames]) as an int16 numpy array
    [codebooks, frames], whatever read it: pyarrow (a ListScalar or Python lists), pandas (an
    object array of arrays) or DuckDB (lists)."""
    if hasattr(value, "as_py"):
        value = value.as_py()
    rows = [np.asarray(v, dtype=np.int16) for v in value]
    if not rows:
        return np.zeros((0, 0), dtype=np.int16)
    if len({r.size for r in rows}) != 1:
        raise ValueError(f"codebooks of different lengths {[r.size for r in rows]}: not one "
                         f"segment's codes")
    return np.stack(rows)


def _codec(config_path: str | Path, name: str, device: str):
    """The registry's codec `name` from the config at `config_path`, loaded once per process."""
    key = (str(Path(config_path).resolve()), name, device)
    with _CODECS_LOCK:
        if key not in _CODECS:
            from model_serving.codec import AudioCodec
            from model_serving.registry import ModelRegistry
            from pipeline.config import load_config

            cfg = load_config(config_path)
            if name not in cfg.models:
                raise ValueError(
                    f"the release's codec {name!r} is not in the registry of {config_path} "
                    f"(it has {sorted(m for m in cfg.models if m.startswith('tokenizer/'))}); "
                    f"pass config_path= the config the release was made with")
            resolved = ModelRegistry(cfg.models, cfg.model_cache_dir, cfg.storage).resolve(name)
            _CODECS[key] = AudioCodec(resolved, device=device)
        return _CODECS[key]


def decode(codes, num_frames=None, release: str | dict | None = None,
           config_path: str | Path = "configs/local.yaml", device: str = "cpu",
           storage=None) -> tuple[np.ndarray | list[np.ndarray], int]:
    """Audio of a segment's codes with the codec the release was tokenized with, to listen to.

    `codes`: int [codebooks, frames] (one segment) or a batch [B, codebooks, max_frames] padded
    with CODE_PAD (as ReleaseDataset yields it; then `num_frames` [B] says each row's length).
    `release`: the release URI or its manifest dict; its `codec` entry names the registry model
    (name) and the exact version (name@version) that must be found in the registry of
    `config_path`, so audio never comes from a different codec than the codes.

    Returns (audio, sample_rate): float32 mono at the codec's rate, trimmed to the frames given
    (frames x sample_rate / frame_rate samples); a list of arrays for a batch. Untrained
    (seeded) codecs decode too: the plumbing works, the sound is noise.
    """
    import torch

    if release is None:
        raise ValueError("decode needs release= (the release URI or its manifest) to know which "
                         "codec made the codes")
    if isinstance(release, str):
        from pipeline.reader import read_manifest

        release = read_manifest(release, storage)
    info = release.get("codec") or {}
    if not info.get("name"):
        raise ValueError("the manifest has no codec name (codec.name); cannot pick a codec")
    codec = _codec(config_path, info["name"], device)
    if info.get("version") and codec.info.version != info["version"]:
        raise ValueError(
            f"the release was tokenized with {info['version']}, but {config_path} resolves "
            f"{info['name']} to {codec.info.version}: decoding with another version gives wrong "
            f"audio; pass config_path= the config the release was made with")

    arr = codes.numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] != codec.info.num_codebooks:
        raise ValueError(f"codes of shape {tuple(np.shape(codes))}: expected [codebooks, frames] "
                         f"or [batch, codebooks, frames] with {codec.info.num_codebooks} codebooks")
    if num_frames is None:
        frames = [int((row[0] != CODE_PAD).sum()) for row in arr]
    else:
        frames = np.atleast_1d(np.asarray(num_frames, dtype=np.int64)).tolist()
        if len(frames) != len(arr):
            raise ValueError(f"{len(frames)} num_frames for {len(arr)} segments")
    out = [codec.decode(row[:, :max(0, f)]) for row, f in zip(arr, frames)]
    return (out[0] if single else out), int(codec.info.sample_rate)
