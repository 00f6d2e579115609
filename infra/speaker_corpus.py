"""Recordings of 1, 2 and 3 known speakers, joined from real clips (speaker-count evidence).

Four speakers whose clips are known to belong together:
- `librivox`: the LibriVox reader of the pocketsphinx test clips (Sense and Sensibility, ch. 1);
- `cmu-cards`: the CMU "cards" recordings (one talker);
- `cmu-an4`: numbers / something and the tidigits `dhd` clip (one talker; goforward is left
  out: it does not embed close to the other three);
- `tuxpaint-en`: the English stamp descriptions of tuxpaint (one narrator; the files named here
  were checked to be the same voice, all others were left out).
A joined recording puts each speaker's clips one after another with short pauses (0.25 s) so the
VAD keeps them in the same segment where they fit, i.e. segments hold changes of speaker.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from infra.demo_corpus import LIBRIVOX, POCKETSPHINX, RATE, TUXPAINT, read_audio

TUXPAINT_EN = ["animals/mammals/badger_desc.ogg", "animals/birds/gander_desc.ogg",
               "animals/mammals/dogs/dog_desc.ogg", "animals/mammals/dogs/fox_desc.ogg",
               "animals/mammals/rodents/rabbit_desc.ogg", "animals/mammals/ferret_desc.ogg",
               "animals/mammals/equines/zebra_desc.ogg", "animals/mammals/bovines/bull_desc.ogg",
               "animals/birds/duck_desc.ogg", "animals/birds/lark_desc.ogg",
               "animals/mammals/bovines/bison_desc.ogg", "animals/birds/seagull_desc.ogg"]
SPEAKERS = ("librivox", "cmu-cards", "cmu-an4", "tuxpaint-en")
PAUSE_S = 0.25
PER_SPEAKER_S = 8.0


def _raw(path) -> np.ndarray:
    return np.frombuffer(path.read_bytes(), dtype="<i2").astype(np.float32) / 32768.0


def speaker_clips(speaker: str) -> list[np.ndarray]:
    if speaker == "librivox":
        return [read_audio(p) for p in sorted(LIBRIVOX.glob("*.wav"))]
    if speaker == "cmu-cards":
        return [read_audio(p) for p in sorted((POCKETSPHINX / "cards").glob("*.wav"))]
    if speaker == "cmu-an4":
        return [_raw(POCKETSPHINX / f"{n}.raw") for n in ("numbers", "something")] \
            + [_raw(POCKETSPHINX / "tidigits" / "dhd.2934z.raw")]
    if speaker == "tuxpaint-en":
        return [read_audio(TUXPAINT / rel) for rel in TUXPAINT_EN]
    raise KeyError(speaker)


@dataclass(frozen=True)
class JoinedRecording:
    name: str
    speakers: tuple[str, ...]
    audio: np.ndarray
    turns: list[tuple[str, int, int]]   # (speaker, start sample, end sample)


def speaker_run(speaker: str, seconds: float = PER_SPEAKER_S) -> np.ndarray:
    """About `seconds` of one speaker: their clips in order, with short pauses."""
    pause = np.zeros(int(PAUSE_S * RATE), dtype=np.float32)
    parts, total = [], 0
    for clip in itertools.cycle(speaker_clips(speaker)):
        clip = clip / max(float(np.max(np.abs(clip))), 1e-6) * 0.5  # same level for everyone
        parts += [clip.astype(np.float32), pause]
        total += clip.size + pause.size
        if total >= seconds * RATE:
            break
    return np.concatenate(parts)


def joined(speakers: tuple[str, ...], seconds: float = PER_SPEAKER_S) -> JoinedRecording:
    parts, turns, at = [], [], 0
    for speaker in speakers:
        run = speaker_run(speaker, seconds)
        parts.append(run)
        turns.append((speaker, at, at + run.size))
        at += run.size
    return JoinedRecording("+".join(speakers), speakers, np.concatenate(parts), turns)


def evaluation_set() -> list[JoinedRecording]:
    """Every single speaker, every pair and every triple of the four: 4 + 6 + 4 recordings."""
    out = []
    for k in (1, 2, 3):
        out += [joined(combo) for combo in itertools.combinations(SPEAKERS, k)]
    return out
