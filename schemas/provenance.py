"""Where a labelled value came from: the one vocabulary every labelled field uses.

A wrong label is worse than `unknown`, so every value the pipeline writes about what a recording
contains says how it was obtained:

- measured: computed by the pipeline from the signal or from its own analysis models (VAD, the
  event tagger, ASR language detection, speaker clustering, pitch). Reproducible.
- heard:    written by a model that heard the audio (an audio-LLM captioner).
- inferred: written by a model that only saw text (the transcript and the measured features),
  e.g. the embedded text captioner choosing a scene. Plausible, never heard.
- unknown:  nobody could tell; the value itself is "unknown" (or null).
"""
from __future__ import annotations

MEASURED = "measured"
HEARD = "heard"
INFERRED = "inferred"
UNKNOWN = "unknown"

PROVENANCES = (MEASURED, HEARD, INFERRED, UNKNOWN)

# How much a value can be trusted, for `release.caption_min_provenance`: a release keeps a caption
# field only when its provenance ranks at least the minimum (heard and measured both come from the
# signal; measured is reproducible).
RANK = {UNKNOWN: 0, INFERRED: 1, HEARD: 2, MEASURED: 3}
