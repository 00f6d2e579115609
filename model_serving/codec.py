"""Neural audio codecs from transformers, loaded by path (never from a hub), and the frame rule
of each codec family, so the tokenizer can check every segment's frame count.

Production: `HiggsAudioV2TokenizerModel` (24 kHz in, 25 frames/s, 8 codebooks x 1024) from a
registry directory. Locally no trained codec ships in any package, so `write_seeded_codec`
builds a small `MimiModel` with weights drawn from numpy's seeded generator (platform-stable,
unlike torch's vectorised samplers) and saves it with `save_pretrained`: the same bytes on every
machine, so the registry can pin its sha256. Its codes are deterministic but mean nothing.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_serving.registry import ModelError, ResolvedModel

# Never a hub: transformers must only read the directory it is given.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SEEDED_SEED = 20261122


def _quiet_transformers() -> None:
    """No progress bars from transformers in a nightly job's log."""
    from transformers.utils import logging as tlogging

    tlogging.disable_progress_bar()
    tlogging.set_verbosity_error()
# A small Mimi: 24 kHz, 12.5 frames/s, 8 codebooks x 2048, ~1.1 M parameters. Small so the
# local release and the tests tokenize at many times real time on one CPU thread.
SEEDED_MIMI_CONFIG = dict(
    num_quantizers=8, hidden_size=128, num_hidden_layers=2, intermediate_size=256,
    num_attention_heads=4, num_key_value_heads=4, head_dim=32, num_filters=8,
    upsample_groups=128, codebook_dim=64, vector_quantization_hidden_dimension=64,
)


def write_seeded_codec(directory: str | Path, seed: int = SEEDED_SEED) -> Path:
    """Build the untrained local codec and save it (config.json + model.safetensors)."""
    import torch
    from transformers import MimiConfig, MimiModel

    _quiet_transformers()
    directory = Path(directory)
    config = MimiConfig(**SEEDED_MIMI_CONFIG)
    model = MimiModel(config).eval()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, tensor in sorted({**dict(model.named_parameters()),
                                    **dict(model.named_buffers())}.items()):
            if not tensor.is_floating_point():
                continue
            if name.endswith("cluster_usage") or ("norm" in name and name.endswith("weight")):
                values = np.ones(tensor.shape)
            elif name.endswith("bias") or tensor.dim() < 2:
                values = np.zeros(tensor.shape)
            else:  # fan-in scaled normal, as the layers' own initialisers would draw
                fan_in = int(np.prod(tensor.shape[1:]))
                values = rng.standard_normal(tensor.shape) / math.sqrt(fan_in)
            tensor.copy_(torch.from_numpy(values.astype(np.float32)))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


@dataclass(frozen=True)
class CodecInfo:
    name: str            # transformers model_type, e.g. mimi, higgs_audio_v2_tokenizer
    version: str         # registry name@version: the code cache key
    sample_rate: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int


def _higgs_frames(num_samples: int, cfg) -> int:
    """Higgs Audio v2: frames come from the semantic path. The 24 kHz input is resampled to
    16 kHz (ceil), padded by 160 samples each side, run through HuBERT's conv feature extractor
    (floor((L - kernel) / stride) + 1 per layer), and every k-th frame is kept (ceil)."""
    length = math.ceil(num_samples * cfg.semantic_sample_rate / cfg.sample_rate) + 320
    sem = cfg.semantic_model_config
    for kernel, stride in zip(sem.conv_kernel, sem.conv_stride):
        length = (length - kernel) // stride + 1
    return math.ceil(length / max(1, cfg.semantic_downsample_factor))


class CodecMismatch(RuntimeError):
    """The codec's output does not follow its frame rule (wrong model type or config)."""


class AudioCodec:
    """One codec in a worker. `encode` takes waveforms at `info.sample_rate` and returns int16
    codes [codebooks x frames] per waveform, each checked against the frame rule; `decode`
    turns one segment's codes back into a waveform (for listening)."""

    def __init__(self, resolved: ResolvedModel, device: str = "cpu", threads: int = 1):
        import torch
        from transformers import AutoConfig, AutoModel

        _quiet_transformers()
        torch.set_num_threads(threads)
        directory = resolved.directory
        try:
            config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(directory), local_files_only=True).eval()
        except (OSError, ValueError, ImportError) as exc:
            raise ModelError(f"model '{resolved.label}': cannot load a transformers codec from "
                             f"{directory}: {exc}") from exc
        self.device = device
        self.model.to(device)
        self.config = config
        name = config.model_type
        if name == "mimi":
            rate, fps = config.sampling_rate, float(config.frame_rate)
            books, size = config.num_quantizers, config.codebook_size
        elif name == "higgs_audio_v2_tokenizer":
            rate, fps = config.sample_rate, float(config.frame_rate)
            books, size = config.num_quantizers, config.codebook_size
        else:
            raise ModelError(f"model '{resolved.label}': codec type '{name}' has no frame rule "
                             f"here (supported: mimi, higgs_audio_v2_tokenizer)")
        if size > 32768:
            raise ModelError(f"model '{resolved.label}': codebook size {size} does not fit int16")
        self.info = CodecInfo(name, resolved.label, int(rate), fps, int(books), int(size))

    def expected_frames(self, num_samples: int) -> int:
        """The codec's rounding rule: Mimi pads the last frame (ceil of samples / hop)."""
        if self.info.name == "mimi":
            return -(-num_samples // self._hop())
        return _higgs_frames(num_samples, self.config)

    def _hop(self) -> int:
        """Samples per frame where frames tile the input (Mimi); 0 where they do not."""
        return round(self.info.sample_rate / self.info.frame_rate) if self.info.name == "mimi" else 0

    def encode(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """One padded batch through the codec; each result trimmed to its own frame count.
        Mimi is causal, so padding after a clip does not change its codes."""
        import torch

        lengths = [int(w.size) for w in waves]
        # Each clip is completed to whole frames with silence, so its last frame sees the same
        # samples alone or in a padded batch (Mimi would otherwise replicate-pad a lone clip's
        # last sample, and its last code would depend on the batch it landed in).
        hop = self._hop()
        padded = [-(-n // hop) * hop if hop else n for n in lengths]
        batch = torch.zeros(len(waves), 1, max(padded))
        mask = torch.zeros(len(waves), 1, max(padded), dtype=torch.long)
        for i, w in enumerate(waves):
            batch[i, 0, : w.size] = torch.from_numpy(np.ascontiguousarray(w, np.float32))
            mask[i, 0, : padded[i]] = 1
        batch, mask = batch.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            if self.info.name == "mimi":
                codes = self.model.encode(batch, padding_mask=mask).audio_codes
            else:
                codes = self.model.encode(batch).audio_codes
        codes = codes.to("cpu").numpy()  # [batch, codebooks, frames]
        want = self.expected_frames(max(padded))
        if codes.shape[1:] != (self.info.num_codebooks, want):
            # The frame rule is how a segment's codes are cut out of a padded batch; a codec
            # that breaks it would give every segment wrong-length codes.
            raise CodecMismatch(
                f"codec {self.info.version} returned {codes.shape[1]}x{codes.shape[2]} codes for "
                f"{max(padded)} samples; its frame rule says {self.info.num_codebooks}x{want} "
                f"({max(padded) / self.info.sample_rate:.3f}s x {self.info.frame_rate} frames/s)")
        return [codes[i, :, : self.expected_frames(n)].astype(np.int16)
                for i, n in enumerate(lengths)]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """One segment's codes [codebooks, frames] -> float32 mono audio at info.sample_rate,
        frames x sample_rate / frame_rate samples (one segment per call: no padding reaches the
        decoder)."""
        import torch

        frames = int(codes.shape[1])
        if frames == 0:
            return np.zeros(0, dtype=np.float32)
        x = torch.from_numpy(np.asarray(codes, dtype=np.int64))[None].to(self.device)
        with torch.inference_mode():
            audio = self.model.decode(x).audio_values
        audio = audio.reshape(-1).float().cpu().numpy()
        hop = self.info.sample_rate / self.info.frame_rate
        return audio[:int(round(frames * hop))].astype(np.float32)
