"""Text-space comparison of ASR hypotheses: normalisation, pairwise WER/CER, and the selected
transcript with the independent systems that support it (`support`).

Normalisation makes systems comparable, not pretty: Unicode NFKC and case folding, punctuation
removed (hyphens and slashes become spaces), numbers written as words ("4" and "four" agree),
English titles spelt one way ("Mr." and "mister" agree: the LibriVox reference writes
"Mister", every recogniser "Mr."), whitespace collapsed. Languages written without spaces are
compared by characters. Edit distances come from jiwer (rapidfuzz underneath); nothing here
re-implements them.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_SPACES = re.compile(r"\s+")
# Abbreviated English titles -> the word a reader says (after punctuation is gone); not "st"
# (saint or street) nor "ms"
_TITLES = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


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
    if language == "en" or (language or "").startswith("en-"):
        text = " ".join(_TITLES.get(w, w) for w in text.split(" "))
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
class Support:
    """How independent systems back the selected hypothesis (see `support`)."""

    selected: int                 # index of the selected hypothesis
    agreement: float | None       # 1 - error of the independent confirmation; None: no family
                                  # besides the selected one's could vote
    supporters: tuple[int, ...]   # other hypotheses within the error threshold of the selected
    dissent: tuple[tuple[int, float], ...]   # (index, error to the selected) of the others
    families: int                 # distinct families among the selected and its supporters
    mean_wer: float               # mean pairwise WER / CER over all voters (for the record)
    mean_cer: float
    unit: str                     # words | chars


def support(normalised: list[str], families: list[str], no_space: bool, max_error: float,
            min_families: int = 2) -> Support:
    """Select the hypothesis that independent systems confirm best.

    A candidate's support score is 1 - the error of its confirmation: for each other model
    family, the error of that family's closest hypothesis to the candidate; the (min_families-1)
    -th smallest of those is the confirmation (with min_families=2: the closest hypothesis of
    any other family). Hypotheses of the candidate's own family never confirm it: Whisper base
    and Whisper tiny.en share training data and fail alike. The selected hypothesis has the
    highest score; ties go to the one closest to all others, then to the earlier system (the
    configured order). Systems further than `max_error` from the selected are its dissent:
    recorded, but they cannot veto a transcript that others confirm.
    """
    n = len(normalised)
    if n < 2 or len(families) != n:
        raise ValueError("support needs at least two hypotheses, each with its family")
    wer = [[0.0] * n for _ in range(n)]
    cer = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            wer[i][j] = wer[j][i] = symmetric_error(normalised[i], normalised[j], False)
            cer[i][j] = cer[j][i] = symmetric_error(normalised[i], normalised[j], True)
    main = cer if no_space else wer
    need = max(0, min_families - 1)

    def score(i: int) -> float | None:
        best: dict[str, float] = {}
        for j in range(n):
            if families[j] != families[i]:
                best[families[j]] = min(best.get(families[j], 1.0), main[i][j])
        if len(best) < need:
            return None
        return 1.0 - sorted(best.values())[need - 1] if need else 1.0

    scores = [score(i) for i in range(n)]
    selected = min(range(n), key=lambda i: (-(scores[i] if scores[i] is not None else -1.0),
                                            sum(main[i]), i))
    others = [j for j in range(n) if j != selected]
    supporters = tuple(j for j in others if main[selected][j] <= max_error)
    dissent = tuple((j, main[selected][j]) for j in others if main[selected][j] > max_error)
    pairs = n * (n - 1) / 2
    return Support(
        selected=selected,
        agreement=scores[selected],
        supporters=supporters,
        dissent=dissent,
        families=len({families[selected]} | {families[j] for j in supporters}),
        mean_wer=sum(wer[i][j] for i in range(n) for j in range(i + 1, n)) / pairs,
        mean_cer=sum(cer[i][j] for i in range(n) for j in range(i + 1, n)) / pairs,
        unit="chars" if no_space else "words",
    )


def speaking_rate(normalised: str, duration_s: float, no_space: bool) -> float | None:
    if duration_s <= 0:
        return None
    units = len(normalised.replace(" ", "")) if no_space else len(normalised.split())
    return units / duration_s
