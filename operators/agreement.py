"""Agreement stage: is the selected transcript of a speech segment backed by independent systems?

The systems' hypotheses are compared in text space (operators/transcripts.py `support`). The
selected transcript is kept when systems of at least `agreement.min_families` model families
(the selected one's included) wrote it within the error threshold: `asr_agreement` is 1 - the
error of its closest confirmation from another family (WER; CER for languages written without
spaces), and under `agreement.threshold` the segment is dropped as `asr_disagreement`. Systems of
one family (Whisper base and tiny.en: the same training data, the same mistakes) count as one
voter. A system that wrote something else is recorded in `asr_dissent` (system and error) but
cannot veto a transcript two families confirm. Fewer than `min_voters` systems, or fewer than
`min_families` families, could vote: `unverified` (or, with unverified_policy: penalize, kept
with `unverified_score`). Filtering never deletes: every segment keeps its row.
"""
from __future__ import annotations

import pyarrow as pa

from operators.base import Stage, section
from operators.transcripts import normalise, speaking_rate, support
from schemas import reasons
from schemas.config import AgreementConfig, StageResources
from schemas.tables import AGREEMENT_FIELDS, DROP_FIELDS


def system_families(cfg) -> dict[str, str]:
    """ASR system name -> its model family (the registry entry's `family`), from the config."""
    return {s.name: (cfg.models[s.model].family if s.model in cfg.models else s.model)
            for s in cfg.asr.systems}


class AgreementStage(Stage):
    name = "agreement"
    requires = ("asr_hypotheses", "language", "duration_s", "drop_reason")
    adds = pa.schema(AGREEMENT_FIELDS + DROP_FIELDS)
    resources = StageResources(num_cpus=0.25, concurrency=1, batch_size=64)

    @classmethod
    def config_kwargs(cls, cfg, storage, caption=None):
        return {"cfg": cfg.agreement, "families": system_families(cfg)}

    @classmethod
    def outcome_settings(cls, cfg):
        return {**section(cfg.agreement), "families": system_families(cfg)}

    def __init__(self, cfg: AgreementConfig, families: dict[str, str] | None = None):
        super().__init__()
        self.cfg = cfg
        self.no_space = set(cfg.no_space_languages)
        # A system missing from the map is its own family (direct callers, old configs).
        self.families = dict(families or {})

    def process_row(self, row: dict) -> None:
        if row["asr_hypotheses"]:
            self._one(row)

    def _family(self, system: str) -> str:
        return self.families.get(system, system)

    def _one(self, row: dict) -> None:
        cfg = self.cfg
        language = row["language"] or "en"
        no_space = language in self.no_space
        hyps = row["asr_hypotheses"]
        normalised = [normalise(h["text"], language, no_space) for h in hyps]
        families = [self._family(h["system"]) for h in hyps]
        unit = "chars" if no_space else "words"
        metric = "CER" if no_space else "WER"
        chosen, result = 0, None
        if len(hyps) >= 2:
            result = support(normalised, families, no_space, max_error=1.0 - cfg.threshold,
                             min_families=cfg.min_families)
            chosen = result.selected
            row.update(asr_agreement=result.agreement, asr_pairwise_wer=result.mean_wer,
                       asr_pairwise_cer=result.mean_cer,
                       asr_support=[hyps[j]["system"] for j in result.supporters],
                       asr_dissent=[{"system": hyps[j]["system"], "error": err}
                                    for j, err in result.dissent])
        voters = ", ".join(f"{h['system']} ({f})" for h, f in zip(hyps, families)) or "none"
        n_families = len(set(families))
        if len(hyps) < cfg.min_voters or n_families < cfg.min_families:
            if cfg.unverified_policy == "penalize":
                row["asr_agreement"] = cfg.unverified_score
            else:
                row["asr_agreement"] = None
                self.drop(row, reasons.UNVERIFIED,
                          f"{len(hyps)} system(s) of {n_families} model "
                                       f"family(ies) could vote on language '{language}': "
                                       f"{voters}; agreement.min_voters={cfg.min_voters}, "
                                       f"min_families={cfg.min_families}")
        elif row["asr_agreement"] < cfg.threshold:
            closest = min(((hyps[j]["system"], err) for j, err in result.dissent
                           if families[j] != families[chosen]),
                          key=lambda c: c[1], default=None)
            seen = (f"; the closest other family, {closest[0]}, is at {metric} {closest[1]:.2f}"
                    if closest else "")
            self.drop(row, reasons.ASR_DISAGREEMENT,
                      f"no {cfg.min_families} model families agree within {metric} "
                      f"{1.0 - cfg.threshold:.2f} (agreement {row['asr_agreement']:.2f} < "
                      f"{cfg.threshold}) on {hyps[chosen]['system']}'s transcript{seen}")
        selected = hyps[chosen]
        row.update(
            transcript=selected["text"],
            transcript_normalized=normalised[chosen],
            transcript_system=selected["system"],
            asr_confidence=selected["confidence"],
            agreement_unit=unit,
            speaking_rate=speaking_rate(normalised[chosen], row["duration_s"], no_space),
        )
