"""The one protocol every ASR system implements, and the factory that builds one by family.

A system is loaded once per worker from a registry entry; `transcribe` takes a batch of 16 kHz
mono float32 segments and, per segment, the language to transcribe in (None: detect it, only for
systems that can). Systems declare the languages they support, so the pipeline never runs one on
a language it does not know.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from model_serving.registry import ResolvedModel


@dataclass(frozen=True)
class Hypothesis:
    text: str
    language: str
    language_prob: float | None    # the detector's probability; None when the language was given
    confidence: float | None       # the system's own confidence in [0, 1]
    no_speech_prob: float | None = None


class AsrSystem(Protocol):
    name: str                      # the configured system name, e.g. "whisper-base"
    model_label: str               # registry name@version, for provenance
    detects_language: bool

    def supports(self, language: str) -> bool: ...

    def transcribe(self, audios: list, languages: list[str | None]) -> list[Hypothesis]: ...


def load_asr_system(name: str, model: ResolvedModel, *, device: str = "cpu",
                    compute_type: str = "int8", cpu_threads: int = 1) -> AsrSystem:
    """Build the adapter for a registry entry's family. Heavy imports happen in the adapters."""
    if model.family == "whisper-ct2":
        from model_serving.whisper_ct2 import WhisperSystem

        return WhisperSystem(name, model, device=device, compute_type=compute_type,
                             cpu_threads=cpu_threads)
    if model.family == "pocketsphinx":
        from model_serving.pocketsphinx_asr import PocketSphinxSystem

        return PocketSphinxSystem(name, model)
    if model.family == "moonshine-onnx":
        from model_serving.moonshine_asr import MoonshineSystem

        return MoonshineSystem(name, model, cpu_threads=cpu_threads)
    raise ValueError(f"ASR system '{name}': model '{model.name}' has family '{model.family}', "
                     f"which has no adapter (known: whisper-ct2, pocketsphinx, moonshine-onnx)")
