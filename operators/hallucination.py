"""Hallucination stage: rules on the selected transcript that catch text no speaker produced.

Rules (each a `transcript_flags` entry; the first one that fires becomes the drop reason of a
segment that has none yet): an n-gram of 1-3 words repeated many times in a row, or a longer
phrase repeated back to back over most of the text (a decoder looping until its token budget ends,
as Moonshine does on noisy short segments: "ten of clubs ten of clubs ten"); characters per
second outside human bounds; a "word" far longer than any real one; far more or fewer words than
the duration allows; no text at all on speech the VAD is sure of.
"""
from __future__ import annotations

import pyarrow as pa

from operators.base import Stage, section
from schemas import reasons
from schemas.config import HallucinationConfig, StageResources
from schemas.tables import DROP_FIELDS, HALLUCINATION_FIELDS


def max_ngram_run(words: list[str], max_n: int = 3) -> int:
    """Longest run of one n-gram (n <= max_n) repeated back to back, in repetitions."""
    best = 1 if words else 0
    for n in range(1, max_n + 1):
        for start in range(n):
            run, prev = 1, None
            for i in range(start, len(words) - n + 1, n):
                gram = tuple(words[i:i + n])
                run = run + 1 if gram == prev else 1
                prev = gram
                best = max(best, run)
    return best


# A phrase of PHRASE_MIN_N..PHRASE_MAX_N words said again right after itself, the repeats (and a
# cut-off start of one more) covering at least PHRASE_MIN_WORDS words and PHRASE_MIN_SHARE of the
# text; or said three times or more (phrases of 3+ words). Real speech repeats a short phrase
# now and then ("thank you thank you"), rarely most of a segment.
PHRASE_MIN_N, PHRASE_MAX_N = 2, 8
PHRASE_MIN_WORDS = 6
PHRASE_MIN_SHARE = 0.6


def phrase_loop(words: list[str], min_n: int = PHRASE_MIN_N, max_n: int = PHRASE_MAX_N
                ) -> tuple[int, int, int]:
    """(n, repeats, words covered) of the back-to-back repeated phrase of min_n..max_n words
    that covers the most words; a trailing partial repeat counts (a loop cut off mid-phrase).
    (0, 0, 0) when no phrase is said twice in a row."""
    best = (0, 0, 0)
    for n in range(min_n, min(max_n, len(words) // 2) + 1):
        i = 0
        while i + 2 * n <= len(words):
            gram = words[i:i + n]
            run = 1
            while words[i + run * n:i + (run + 1) * n] == gram:
                run += 1
            if run >= 2:
                end = i + run * n
                tail = 0
                while tail < n - 1 and end + tail < len(words) and words[end + tail] == gram[tail]:
                    tail += 1
                covered = run * n + tail
                if covered > best[2]:
                    best = (n, run, covered)
                i = end
            else:
                i += 1
    return best


def check(text: str, duration_s: float, speech_prob: float | None, unit: str,
          cfg: HallucinationConfig) -> list[tuple[str, str]]:
    """(reason, detail) for every rule the normalised `text` breaks."""
    flags = []
    words = text.split()
    chars = len(text.replace(" ", ""))
    if not text:
        clear = (speech_prob or 0.0) >= cfg.clear_speech_prob
        flags.append((reasons.EMPTY_TRANSCRIPT,
                      f"no words on {'clear ' if clear else ''}speech (mean VAD probability "
                      f"{speech_prob or 0.0:.2f})"))
        return flags
    repeats = max_ngram_run(words)
    if repeats >= cfg.max_ngram_repeats:
        flags.append((reasons.HALLUCINATION_REPETITION,
                      f"an n-gram repeats {repeats} times in a row"))
    elif unit == "words":
        n, run, covered = phrase_loop(words)
        if covered >= PHRASE_MIN_WORDS and (covered >= PHRASE_MIN_SHARE * len(words)
                                            or (run >= 3 and n >= 3)):
            flags.append((reasons.HALLUCINATION_REPETITION,
                          f"a {n}-word phrase repeats {run} times back to back ({covered} of "
                          f"{len(words)} words)"))
    cps = chars / duration_s if duration_s > 0 else float("inf")
    if cps > cfg.max_chars_per_s or (duration_s >= cfg.min_duration_for_rate_s
                                     and cps < cfg.min_chars_per_s):
        flags.append((reasons.HALLUCINATION_CHAR_RATE,
                      f"{cps:.1f} characters/s is outside [{cfg.min_chars_per_s}, "
                      f"{cfg.max_chars_per_s}]"))
    if unit == "words":
        longest = max(words, key=len)
        if len(longest) > cfg.max_word_chars:
            flags.append((reasons.HALLUCINATION_LONG_WORD,
                          f"a {len(longest)}-character word: {longest[:40]}..."))
        wps = len(words) / duration_s if duration_s > 0 else float("inf")
        if wps > cfg.max_words_per_s or (duration_s >= cfg.min_duration_for_rate_s
                                         and wps < cfg.min_words_per_s):
            flags.append((reasons.HALLUCINATION_LENGTH,
                          f"{len(words)} words in {duration_s:.1f}s ({wps:.2f}/s) is outside "
                          f"[{cfg.min_words_per_s}, {cfg.max_words_per_s}] words/s"))
    return flags


class HallucinationStage(Stage):
    name = "hallucination"
    requires = ("transcript_normalized", "asr_hypotheses", "duration_s", "speech_prob_mean",
                "agreement_unit", "drop_reason")
    adds = pa.schema(HALLUCINATION_FIELDS + DROP_FIELDS)
    resources = StageResources(num_cpus=0.25, concurrency=1, batch_size=64)

    @classmethod
    def config_kwargs(cls, cfg, storage, caption=None):
        return {"cfg": cfg.hallucination}

    @classmethod
    def outcome_settings(cls, cfg):
        return section(cfg.hallucination)

    def __init__(self, cfg: HallucinationConfig):
        super().__init__()
        self.cfg = cfg

    def process_row(self, row: dict) -> None:
        if not row["asr_hypotheses"]:
            return  # not transcribed: sound, reject, or dropped before ASR
        flags = check(row["transcript_normalized"] or "", row["duration_s"],
                      row["speech_prob_mean"], row["agreement_unit"] or "words", self.cfg)
        row["transcript_flags"] = [reason for reason, _ in flags]
        if flags:
            self.drop(row, *flags[0])
