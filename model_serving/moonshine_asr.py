"""Moonshine base (English): an encoder-decoder ASR family trained apart from Whisper, run by
the ONNX Runtime build inside `moonshine-cpp` through its C API (libmoonshine.so).

Facts about that library (moonshine-cpp 0.1.4) that shape this adapter:
- It sets ONNX Runtime's intra-op threads to 1 itself and reads no environment variable for it,
  so one loaded model uses exactly one core. `cpu_threads` therefore loads that many model
  instances and decodes the pieces of a batch on them in parallel (ctypes releases the GIL).
- An ONNX Runtime error inside it is not caught: it aborts the whole process. The encoder's
  convolutions need at least 895 samples, and NaN input decodes to `<unk>`s; so input is
  sanitised here and anything shorter than MIN_SECONDS is not sent at all (empty text).
- Decoding time grows faster than the input above ~20 s (joined LibriVox, 25-40 s: 0.84 CPU
  seconds per audio second whole, 0.40 cut into <= 15 s pieces, the same WER, 0.027), and the
  model was trained on short utterances: segments longer than MAX_PIECE_SECONDS are cut at
  their quietest points and the pieces' texts joined.
- Its decoder stops at 13 tokens per second of audio; when it loops (noisy or mixed-language
  segments) it fills that budget with a repeated phrase, which operators/hallucination.py flags.
  The library has no setting for that cap, and a token costs more the longer the piece, so a
  loop over a 15 s piece took longer than the audio. Pieces of at most 10 s bound that
  (`python -m bench.moonshine_pieces`, Moonshine alone on the English speech segments of a
  `make bench` corpus: 12 minutes, 6 segments: 32.3 s with 15 s pieces, 8.7 s with 10 s,
  17.5 s with 8 s; 24 minutes, 13 segments: 34.7, 17.6 and 23.3 s). Which piece loops depends
  on where the cuts fall, so shorter is not always faster; the WER was the same at every
  length (clean clips 0.109, 5 dB 0.287, joined LibriVox 0.051).
- It returns text only (no token scores), so `confidence` is None.
- Memory: ~390 MiB per loaded instance once it has decoded a 10 s piece.
"""
from __future__ import annotations

import concurrent.futures as cf
import ctypes
import math
import queue
import threading

import numpy as np

from model_serving.asr_protocol import Hypothesis
from model_serving.registry import ModelError, ResolvedModel

SAMPLE_RATE = 16000
MIN_SECONDS = 0.1          # shorter input holds no word; the encoder rejects < 895 samples
MAX_PIECE_SECONDS = 10.0   # longer segments are cut at pauses into pieces of at most this
MIN_PIECE_SECONDS = 2.0    # ...and no piece is left shorter than this (where there is a choice)
_FILES = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")
_MODEL_TYPE_BASE = 1       # libmoonshine's model type: 0 tiny, 1 base

_lib = None
_lib_lock = threading.Lock()


def _library():
    """libmoonshine with typed signatures. Importing moonshine_cpp loads its shared libraries
    (its own ONNX Runtime 1.22.1 first), so it happens here, on first use, not at import."""
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                from moonshine_cpp import moonshine_cpp as mc
            except (ImportError, OSError) as exc:
                raise ModelError(f"Moonshine needs the `moonshine-cpp` package (pinned in "
                                 f"requirements.txt): {exc}") from exc
            lib = mc.moonshine_lib
            lib.moonshine_load_model.argtypes = (ctypes.c_char_p, ctypes.c_char_p,
                                                 ctypes.c_char_p, ctypes.c_int32)
            lib.moonshine_load_model.restype = ctypes.c_int
            lib.moonshine_transcribe.argtypes = (ctypes.c_int, ctypes.POINTER(ctypes.c_float),
                                                 ctypes.c_size_t, ctypes.POINTER(ctypes.c_char_p))
            lib.moonshine_transcribe.restype = ctypes.c_int
            lib.moonshine_free_text.argtypes = (ctypes.c_char_p,)
            lib.moonshine_free_text.restype = None
            lib.moonshine_free_model.argtypes = (ctypes.c_int,)
            lib.moonshine_free_model.restype = None
            _lib = lib
        return _lib


def split_at_pauses(audio: np.ndarray, max_s: float = MAX_PIECE_SECONDS,
                    min_s: float = MIN_PIECE_SECONDS) -> list[np.ndarray]:
    """Cut `audio` into as few pieces of at most `max_s` as its length needs, of about equal
    length, each cut at the centre of the quietest 0.3 s near its even split point (a pause
    between words, in speech). Deterministic: the same audio is always cut the same way."""
    n, limit = audio.size, int(max_s * SAMPLE_RATE)
    if n <= limit:
        return [audio]
    hop = SAMPLE_RATE // 100                                   # 10 ms frames
    frames = n // hop
    energy = np.square(audio[:frames * hop].astype(np.float64)).reshape(frames, hop).mean(axis=1)
    width = 30                                                 # 0.3 s moving average
    smooth = np.convolve(energy, np.ones(width) / width, mode="same")
    pieces, start, plan = [], 0, int(0.9 * limit)  # count pieces with slack: cuts can choose
    while n - start > limit:
        left = math.ceil((n - start) / plan)                   # pieces still needed
        target = start + (n - start) // left
        lo = max(start + int(min_s * SAMPLE_RATE), n - (left - 1) * limit)  # the rest must fit
        hi = min(start + limit, n - int(min_s * SAMPLE_RATE))
        near_lo, near_hi = max(lo, target - limit // 4), min(hi, target + limit // 4)
        if near_lo < near_hi:
            lo, hi = near_lo, near_hi
        f_lo = lo // hop
        f_hi = max(f_lo + 1, hi // hop)
        cut = (f_lo + int(np.argmin(smooth[f_lo:f_hi]))) * hop
        pieces.append(audio[start:cut])
        start = cut
    pieces.append(audio[start:])
    return pieces


def _sanitise(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if not np.isfinite(audio).all():
        audio = np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.ascontiguousarray(np.clip(audio, -1.0, 1.0), dtype=np.float32)


class MoonshineSystem:
    """Load once per worker; `transcribe(audios, languages)` -> one Hypothesis per segment."""

    detects_language = False

    def __init__(self, name: str, model: ResolvedModel, cpu_threads: int = 1,
                 max_piece_s: float = MAX_PIECE_SECONDS):
        self.name = name
        self.model_label = model.label
        self.max_piece_s = max_piece_s
        paths = [model.file(f) for f in _FILES]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:  # the library would abort the process on a missing file: say it here
            raise ModelError(f"model '{model.name}': Moonshine files missing: {missing}")
        self._lib = _library()
        # One instance per core; a call takes an idle one, so two calls (a timed-out one still
        # running, and the next) never share an instance.
        self._handles: list[int] = []
        self._idle: queue.Queue[int] = queue.Queue()
        for _ in range(max(1, cpu_threads)):
            handle = self._lib.moonshine_load_model(*(str(p).encode() for p in paths),
                                                    _MODEL_TYPE_BASE)
            if handle < 0:
                self.close()
                raise ModelError(f"model '{model.name}': libmoonshine could not load "
                                 f"{model.directory}")
            self._handles.append(handle)
            self._idle.put(handle)
        self._pool = (cf.ThreadPoolExecutor(len(self._handles), thread_name_prefix=name)
                      if len(self._handles) > 1 else None)

    def supports(self, language: str) -> bool:
        return language == "en"

    def transcribe(self, audios: list, languages: list[str | None] | None = None
                   ) -> list[Hypothesis]:
        pieces: list[tuple[int, np.ndarray]] = []
        for i, audio in enumerate(audios):
            audio = _sanitise(audio)
            pieces += [(i, p) for p in split_at_pauses(audio, self.max_piece_s)
                       if p.size >= MIN_SECONDS * SAMPLE_RATE]
        jobs = [p for _, p in pieces]
        texts = (list(self._pool.map(self._one, jobs)) if self._pool
                 else [self._one(p) for p in jobs])
        joined: list[list[str]] = [[] for _ in audios]
        for (i, _), text in zip(pieces, texts):
            if text:
                joined[i].append(text)
        return [Hypothesis(text=" ".join(parts), language="en", language_prob=None,
                           confidence=None) for parts in joined]

    def _one(self, audio: np.ndarray) -> str:
        handle = self._idle.get()
        try:
            out = ctypes.c_char_p()
            rc = self._lib.moonshine_transcribe(
                handle, audio.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), audio.size,
                ctypes.byref(out))
            if rc != 0:
                raise RuntimeError(f"moonshine_transcribe returned {rc}")
            raw = out.value
            if raw is not None:
                self._lib.moonshine_free_text(out)
        finally:
            self._idle.put(handle)
        text = (raw or b"").decode("utf-8", errors="replace").replace("<unk>", " ")
        return " ".join(text.split())

    def close(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        for handle in getattr(self, "_handles", []):
            self._lib.moonshine_free_model(handle)
        self._handles = []

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
