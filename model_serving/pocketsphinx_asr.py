"""PocketSphinx (CMU Sphinx, HMM-GMM + n-gram LM): an ASR family independent of Whisper, so its
errors are not Whisper's errors. English only. Decodes one segment at a time (no batching in
the engine); confidence is the mean word posterior."""
from __future__ import annotations

import numpy as np

from model_serving.asr_protocol import Hypothesis
from model_serving.registry import ResolvedModel

_FILLERS = ("<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "++")


class PocketSphinxSystem:
    detects_language = False

    def __init__(self, name: str, model: ResolvedModel):
        from pocketsphinx import Decoder

        self.name = name
        self.model_label = model.label
        self._decoder = Decoder(
            hmm=str(model.file("en-us")), lm=str(model.file("en-us.lm.bin")),
            dict=str(model.file("cmudict-en-us.dict")), samprate=16000, loglevel="FATAL",
            # Cap active HMMs and words per frame: on LibriVox this halves decoding time
            # (real-time factor 0.35 -> 0.20) at the same WER.
            maxhmmpf=3000, maxwpf=5,
            cmn="batch",  # normalise each segment by its own cepstral mean
        )
        # The decoder keeps feature and CMN state from one utterance to the next, so a segment's
        # text would depend on what was decoded before it. Reset both before every segment.
        self._initial_cmn = self._decoder.get_cmn()

    def supports(self, language: str) -> bool:
        return language == "en"

    def transcribe(self, audios: list, languages: list[str | None]) -> list[Hypothesis]:
        return [self._one(audio) for audio in audios]

    def _one(self, audio: np.ndarray) -> Hypothesis:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        d = self._decoder
        d.reinit_feat()
        d.set_cmn(self._initial_cmn)
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        words = [s for s in d.seg() if not s.word.startswith(_FILLERS)]
        text = " ".join(s.word.split("(")[0] for s in words)  # "was(2)" is a pronunciation variant
        confidence = float(np.mean([min(1.0, s.prob) for s in words])) if words else None
        return Hypothesis(text=text, language="en", language_prob=None, confidence=confidence)
