"""Text-space comparison of ASR hypotheses: normalisation, pairwise WER/CER, agreement, and the
selected transcript (ROVER-lite: the hypothesis closest to all the others).

Normalisation makes systems comparable, not pretty: Unicode NFKC and case folding, punctuation
removed (hyphens and slashes become spaces), numbers written as words ("4" and "four" agree),
whitespace collapsed. Languages written without spaces are compared by characters. Edit
distances come from jiwer (rapidfuzz underneath); nothing here re-implements them.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=4096)
def _number_words(token: str, language: str) -> str:
    from num2words import num2words

    value = token.replace(",", "")
    try:
        words = num2words(float(value) if "." in value else int(value), lang=language or "en")
    except (NotImplementedError, OverflowError, ValueError):
        try:
            words = num2words(int(float(value)), lang="en")
        except (OverflowError, ValueError):
            return token
    return words


def normalise(text: str | None, language: str = "en", no_space: bool = False) -> str:
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _NUMBER.sub(lambda m: f" {_number_words(m.group(0), language)} ", text)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "-/_" or ch.isspace() or cat.startswith("Z"):
            out.append(" ")
        elif cat.startswith("P") or cat.startswith("S") or cat.startswith("C"):
            continue  # punctuation, symbols, control characters
        else:
            out.append(ch)
    text = "".join(out).replace("-", " ")
    text = _SPACES.sub(" ", text).strip()
    if no_space:
        text = text.replace(" ", "")
    return text


def _error(reference: str, hypothesis: str, by_chars: bool) -> float:
    """Edit-distance error rate of `hypothesis` against `reference` (both normalised)."""
    import jiwer

    if not reference:
        return 0.0 if not hypothesis else 1.0
    if not hypothesis:
        return 1.0
    if by_chars:
        return float(jiwer.cer(reference.replace(" ", ""), hypothesis.replace(" ", "")))
    return float(jiwer.wer(reference, hypothesis))


def symmetric_error(a: str, b: str, by_chars: bool) -> float:
    """Edit errors normalised by the longer side: symmetric and within [0, 1]."""
    if not a and not b:
        return 0.0
    return min(1.0, (_error(a, b, by_chars) + _error(b, a, by_chars)) / 2)


@dataclass(frozen=True)
class Agreement:
    selected: int                 # index of the selected hypothesis
    agreement: float              # 1 - mean pairwise error (WER or CER), in [0, 1]
    mean_wer: float
    mean_cer: float
    unit: str                     # words | chars


def agree(normalised: list[str], no_space: bool) -> Agreement:
    """Pairwise comparison of >= 2 normalised hypotheses; ties go to the earlier system."""
    n = len(normalised)
    if n < 2:
        raise ValueError("agreement needs at least two hypotheses")
    wer = [[0.0] * n for _ in range(n)]
    cer = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            wer[i][j] = wer[j][i] = symmetric_error(normalised[i], normalised[j], False)
            cer[i][j] = cer[j][i] = symmetric_error(normalised[i], normalised[j], True)
    main = cer if no_space else wer
    distance = [sum(row) for row in main]
    selected = min(range(n), key=lambda i: (distance[i], i))
    pairs = n * (n - 1) / 2
    mean_main = sum(main[i][j] for i in range(n) for j in range(i + 1, n)) / pairs
    return Agreement(
        selected=selected,
        agreement=max(0.0, 1.0 - mean_main),
        mean_wer=sum(wer[i][j] for i in range(n) for j in range(i + 1, n)) / pairs,
        mean_cer=sum(cer[i][j] for i in range(n) for j in range(i + 1, n)) / pairs,
        unit="chars" if no_space else "words",
    )


def speaking_rate(normalised: str, duration_s: float, no_space: bool) -> float | None:
    if duration_s <= 0:
        return None
    units = len(normalised.replace(" ", "")) if no_space else len(normalised.split())
    return units / duration_s
