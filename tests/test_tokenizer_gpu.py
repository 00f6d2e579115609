"""GPU smoke test of the production tokenizer: Higgs Audio v2 (24 kHz in, 25 frames/s, 8
codebooks x 1024) built from its config with seeded weights, saved with save_pretrained, loaded
back by path through the registry, and run on CUDA in padded batches.

Skipped without CUDA (or without torchaudio, which the Higgs model needs and which has no CPU
build for the torch pinned here). On a GPU machine: `python -m pytest tests/test_tokenizer_gpu.py
-s -m gpu`, or `python tests/test_tokenizer_gpu.py` where pytest is not installed."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

# The Higgs Audio v2 tokenizer's shape: DAC hop 8*5*4*2*3 = 960 samples at 24 kHz = 25 frames/s,
# 2 kbps at 10 bits per code = 8 codebooks.
HIGGS = dict(acoustic_model_config={"downsampling_ratios": [8, 5, 4, 2, 3],
                                    "upsampling_ratios": [8, 5, 4, 2, 3]},
             target_bandwidths=[0.5, 1, 1.5, 2])


def smoke_clips(seed: int = 0) -> list[np.ndarray]:
    """16 clips of 1-10 s: voiced harmonic sweeps in noise (no real audio on the GPU image)."""
    rng = np.random.default_rng(seed)
    clips = []
    for seconds in rng.uniform(1.0, 10.0, size=16):
        t = np.arange(int(seconds * 24000)) / 24000
        f0 = 120 + 60 * np.sin(2 * np.pi * 0.5 * t)
        phase = 2 * np.pi * np.cumsum(f0) / 24000
        voice = sum(np.sin(k * phase) / k for k in range(1, 8))
        clips.append((0.1 * voice + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    return clips


def build_higgs(directory: Path):
    import torch
    from transformers import HiggsAudioV2TokenizerConfig, HiggsAudioV2TokenizerModel

    from model_serving.registry import ModelRegistry, sha256_file
    from schemas.config import ModelEntry, ModelFile

    torch.manual_seed(0)
    HiggsAudioV2TokenizerModel(HiggsAudioV2TokenizerConfig(**HIGGS)).save_pretrained(directory)
    files = {p.name: ModelFile(sha256=sha256_file(p)) for p in directory.iterdir() if p.is_file()}
    entry = ModelEntry(source="path", version="higgs-v2-seeded-smoke", family="higgs-audio-v2",
                       location=str(directory), files=files)
    return ModelRegistry({"tokenizer/higgs-v2": entry}, str(directory.parent / "cache")) \
        .resolve("tokenizer/higgs-v2")


def run_smoke(tmp: Path) -> dict:
    import torch

    from model_serving.codec import AudioCodec

    codec = AudioCodec(build_higgs(tmp / "higgs"), device="cuda")
    assert codec.info.frame_rate == 25 and codec.info.num_codebooks == 8
    assert codec.info.codebook_size == 1024
    clips = smoke_clips()
    codec.encode(clips[:2])                                  # warm-up (CUDA kernels)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    batched = codec.encode(clips)
    torch.cuda.synchronize()
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [codec.encode([c])[0] for c in clips]
    torch.cuda.synchronize()
    t_single = time.perf_counter() - t0
    audio_s = sum(c.size for c in clips) / 24000
    for clip, codes in zip(clips, batched):
        assert codes.dtype == np.int16 and codes.shape[0] == 8
        assert codes.shape[1] == codec.expected_frames(clip.size)
        assert abs(codes.shape[1] - clip.size / 24000 * 25) <= 1.0
        assert codes.min() >= 0 and codes.max() < 1024
    same = np.mean([(a == b).mean() for a, b in zip(batched, single)])
    result = {"device": torch.cuda.get_device_name(0), "clips": len(clips),
              "audio_s": round(audio_s, 1),
              "batched_audio_s_per_s": round(audio_s / t_batched, 1),
              "single_audio_s_per_s": round(audio_s / t_single, 1),
              "batched_equals_single": round(float(same), 4)}
    print("higgs-v2 tokenizer on CUDA:", result)
    return result


def test_higgs_tokenizer_on_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    pytest.importorskip("torchaudio", reason="the Higgs model needs torchaudio (GPU images)")
    result = run_smoke(tmp_path)
    # Padding changes the non-causal model's codes near a clip's end only.
    assert result["batched_equals_single"] > 0.8


if __name__ == "__main__":
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    with tempfile.TemporaryDirectory() as tmp:
        run_smoke(Path(tmp))
