"""Whisper (CTranslate2, via faster-whisper) transcribing many segments per model call.

faster-whisper's own `transcribe` works on one long file; the pipeline instead holds many short
VAD segments, so this adapter builds the log-mel features of a batch, encodes them together,
detects each segment's language from the same encoder output, and decodes all of them in one
greedy `generate` call (beam 1, temperature 0, no sampling fallback): deterministic output.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_serving.registry import ResolvedModel

SAMPLE_RATE = 16000
MAX_SECONDS = 30.0  # the encoder hears at most 30 s; longer input is cut (segments are shorter)


@dataclass(frozen=True)
class Transcription:
    text: str
    language: str
    language_prob: float
    avg_logprob: float
    no_speech_prob: float


class WhisperBatchTranscriber:
    """Load once per worker; `transcribe([audio, ...])` -> one Transcription per segment."""

    def __init__(self, model: ResolvedModel, device: str = "cpu", compute_type: str = "int8",
                 cpu_threads: int = 1, language: str | None = None):
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.model = WhisperModel(str(model.directory), device=device, compute_type=compute_type,
                                  cpu_threads=cpu_threads, num_workers=1)
        self.multilingual = self.model.model.is_multilingual
        self.forced_language = language
        self._tokenizer_cls = Tokenizer
        self._tokenizers: dict[str, object] = {}

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

    def transcribe(self, audios: list[np.ndarray]) -> list[Transcription]:
        if not audios:
            return []
        from faster_whisper.transcribe import get_suppressed_tokens

        encoder_output = self.model.encode(self._features(audios))

        if not self.multilingual:
            languages = [("en", 1.0)] * len(audios)
        elif self.forced_language:
            languages = [(self.forced_language, 1.0)] * len(audios)
        else:
            languages = []
            for candidates in self.model.model.detect_language(encoder_output):
                token, prob = candidates[0]
                languages.append((token[2:-2], float(prob)))  # "<|en|>" -> "en"

        prompts = []
        for language, _ in languages:
            tok = self._tokenizer(language)
            prompts.append(list(tok.sot_sequence) + [tok.no_timestamps])
        tok0 = self._tokenizer(languages[0][0])
        results = self.model.model.generate(
            encoder_output,
            prompts,
            beam_size=1,
            max_length=self.model.max_length,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tok0, [-1])),
            return_scores=True,
            return_no_speech_prob=True,
            sampling_topk=1,
            sampling_temperature=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )
        out = []
        for (language, lang_prob), result in zip(languages, results):
            tokens = result.sequences_ids[0]
            text = self._tokenizer(language).decode(
                [t for t in tokens if t < self._tokenizer(language).eot]
            ).strip()
            n = len(tokens)
            out.append(Transcription(
                text=text,
                language=language,
                language_prob=lang_prob,
                avg_logprob=float(result.scores[0]) * n / (n + 1) if n else float(result.scores[0]),
                no_speech_prob=float(result.no_speech_prob),
            ))
        return out
