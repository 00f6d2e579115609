"""Whisper (CTranslate2, via faster-whisper) transcribing many segments per model call.

faster-whisper's own `transcribe` works on one long file; the pipeline instead holds many short
VAD segments, so this adapter builds the log-mel features of a batch, encodes them together,
detects each segment's language from the same encoder output (where asked), and decodes all of
them in one greedy `generate` call (beam 1, no sampling fallback): deterministic output.
"""
from __future__ import annotations

import math

import numpy as np

from model_serving.asr_protocol import Hypothesis
from model_serving.registry import ResolvedModel

SAMPLE_RATE = 16000
MAX_SECONDS = 30.0  # the encoder hears at most 30 s; longer input is cut (segments are shorter)


class WhisperSystem:
    """Load once per worker; `transcribe(audios, languages)` -> one Hypothesis per segment."""

    def __init__(self, name: str, model: ResolvedModel, device: str = "cpu",
                 compute_type: str = "int8", cpu_threads: int = 1):
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer

        self.name = name
        self.model_label = model.label
        self.model = WhisperModel(str(model.directory), device=device, compute_type=compute_type,
                                  cpu_threads=cpu_threads, num_workers=1)
        self.multilingual = self.model.model.is_multilingual
        self.detects_language = self.multilingual
        self.languages = frozenset(_LANGUAGE_CODES) if self.multilingual else frozenset({"en"})
        self._tokenizer_cls = Tokenizer
        self._tokenizers: dict[str, object] = {}

    def supports(self, language: str) -> bool:
        return language in self.languages

    def _tokenizer(self, language: str):
        if language not in self._tokenizers:
            self._tokenizers[language] = self._tokenizer_cls(
                self.model.hf_tokenizer, self.multilingual, task="transcribe",
                language=language if self.multilingual else None,
            )
        return self._tokenizers[language]

    def _features(self, audios: list[np.ndarray]) -> np.ndarray:
        from faster_whisper.audio import pad_or_trim

        extractor = self.model.feature_extractor
        limit = int(MAX_SECONDS * SAMPLE_RATE)
        feats = [pad_or_trim(extractor(a[:limit].astype(np.float32))[..., :-1]) for a in audios]
        return np.stack(feats).astype(np.float32)

    def transcribe(self, audios: list[np.ndarray],
                   languages: list[str | None] | None = None) -> list[Hypothesis]:
        if not audios:
            return []
        from faster_whisper.transcribe import get_suppressed_tokens

        languages = languages or [None] * len(audios)
        encoder_output = self.model.encode(self._features(audios))

        chosen: list[tuple[str, float | None]] = []
        detected = None
        if self.multilingual and any(lang is None for lang in languages):
            detected = self.model.model.detect_language(encoder_output)
        for i, lang in enumerate(languages):
            if not self.multilingual:
                chosen.append(("en", None))
            elif lang is not None:
                chosen.append((lang, None))
            else:
                token, prob = detected[i][0]
                chosen.append((token[2:-2], float(prob)))  # "<|en|>" -> "en"

        prompts = []
        for language, _ in chosen:
            tok = self._tokenizer(language)
            prompts.append(list(tok.sot_sequence) + [tok.no_timestamps])
        results = self.model.model.generate(
            encoder_output,
            prompts,
            beam_size=1,
            max_length=self.model.max_length,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(self._tokenizer(chosen[0][0]), [-1])),
            return_scores=True,
            return_no_speech_prob=True,
            sampling_topk=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )
        out = []
        for (language, lang_prob), result in zip(chosen, results):
            tok = self._tokenizer(language)
            tokens = result.sequences_ids[0]
            text = tok.decode([t for t in tokens if t < tok.eot]).strip()
            n = len(tokens)
            # scores[0] is the length-normalised log-probability; as faster-whisper does, count
            # the end token too, and report exp(avg log-prob) as a confidence in [0, 1].
            avg_logprob = float(result.scores[0]) * n / (n + 1) if n else float(result.scores[0])
            out.append(Hypothesis(
                text=text, language=language, language_prob=lang_prob,
                confidence=math.exp(min(0.0, avg_logprob)),
                no_speech_prob=float(result.no_speech_prob),
            ))
        return out
