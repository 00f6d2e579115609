"""Captions against labels (`make bench-caption` runs it after the speed table): on real audio
with known content, how often is a caption's scene right, its gender right, its description
grounded, and how fast is each text model? The evidence-only template is the baseline.

    .venv/bin/python -m bench.caption_labels [--models caption/smollm2-135m,...] [--per-group 6]

The labelled set, all real recordings: tuxpaint sound effects named for what they are (animals,
household), tuxpaint music (instruments), read English speech (LibriVox, CMU cards), the same
speech band-limited to 300-3400 Hz (a telephone line), and the male and female voices of
codec2-examples, wideband and through the same telephone band. Every segment runs through the
night's stages in this process (decode, VAD, measures, events, ASR, speakers:
bench/inprocess.py), so the features are the ones a night
computes; every segment is then captioned, whatever the ASR stage decided.

Printed per model and for the template (scene = the first candidate the evidence allows,
description composed from the facts, operators/grounding.py):
- scene accuracy per group (animals: "animals"; music: "music"/"singing"; household:
  "household"; speech groups: a speech scene), telephone environment accuracy;
- gender accuracy on the codec2 voices (wideband and telephone) and the share of one-speaker
  speech segments given one;
- the share of the model's descriptions the grounding check replaced (template fallback), by
  kind (contradiction / made-up name or number / gender), and the kept descriptions that still
  fail the check (0 by construction: the check runs on every kept one);
- captions/s and generated tokens/s (llama.cpp server, the configured threads, greedy).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import pyarrow as pa

from infra.demo_corpus import (CODEC2, CODEC2_VOICES, LIBRIVOX, POCKETSPHINX, TUXPAINT,
                               StagedFile, encode, read_audio, telephone_band)

SPEECH_SCENES = {"speech", "reading", "lecture", "broadcast", "conversation", "interview"}
EXPECTED = {"animals": {"animals"}, "music": {"music", "singing"}, "household": {"household"},
            "speech": SPEECH_SCENES, "telephone": SPEECH_SCENES, "voices": SPEECH_SCENES}
ANIMALS = ["animals/mammals/dogs/dog.ogg", "animals/mammals/bovines/cow.ogg",
           "animals/birds/rooster.ogg", "animals/birds/duck.ogg", "animals/mammals/pig.ogg",
           "animals/mammals/equines/horse.ogg", "animals/amphibians/frog.ogg",
           "animals/birds/owl.ogg"]
MUSIC = ["hobbies/music/string/violin.ogg", "hobbies/music/string/cello.ogg",
         "hobbies/music/wind/bassoon.ogg", "hobbies/music/percussion/drumkit.ogg",
         "hobbies/music/percussion/drum_tomtom_floor.ogg", "hobbies/music/brass/trumpet.ogg"]
# what the JSON dump keeps of each captioned row (.local/bench/caption_labels.json)
KEEP = ("source_uri", "content_type", "transcript", "bandwidth_hz", "speaker_genders",
        "caption_scene", "caption_environment", "caption_description",
        "caption_description_source", "caption_grounding", "caption_raw", "caption_flags")
HOUSEHOLD = ["household/vacuum_cleaner.ogg", "household/toilet.ogg",
             "household/tools/hammer.ogg", "household/tools/saw.ogg"]


def labelled_files(per_group: int) -> list[StagedFile]:
    """Real recordings keyed labels/<group>/<gender or ->/<name>.flac."""
    files = []

    def add(group, name, audio, gender="-"):
        files.append(StagedFile(f"labels/{group}/{gender}/{name}.flac", encode(audio, "flac")))

    for rel in ANIMALS[:per_group]:
        add("animals", rel.rsplit("/", 1)[1][:-4], read_audio(TUXPAINT / rel))
    for rel in [m for m in MUSIC if (TUXPAINT / m).exists()][:per_group]:
        add("music", rel.rsplit("/", 1)[1][:-4], read_audio(TUXPAINT / rel))
    for rel in HOUSEHOLD[:per_group]:
        add("household", rel.rsplit("/", 1)[1][:-4], read_audio(TUXPAINT / rel))
    speech = sorted(LIBRIVOX.glob("*.wav"))[:per_group // 2] + sorted(
        (POCKETSPHINX / "cards").glob("*.wav"))[:per_group - per_group // 2]
    for path in speech:
        audio = read_audio(path)
        add("speech", path.stem, audio)
        add("telephone", path.stem, telephone_band(audio))
    for name, gender in CODEC2_VOICES.items():
        audio = read_audio(CODEC2 / f"{name}.wav")
        add("voices", name, audio, gender)
        add("telephone", name, telephone_band(audio), gender)
    return files


def label_of(row: dict) -> tuple[str, str | None]:
    _, group, gender, _ = row["source_uri"].rsplit("/", 3)
    return group, None if gender == "-" else gender


def template_captions(rows: list[dict]) -> list[dict]:
    """The baseline: the evidence's first scene and environment, the composed sentence."""
    from operators.caption_evidence import (environment_candidates, scene_candidates,
                                            speaker_genders)
    from operators.grounding import template

    out = []
    for row in rows:
        scene, env = scene_candidates(row)[0], environment_candidates(row)[0]
        out.append({**row, "caption_scene": scene, "caption_environment": env,
                    "caption_speakers": [{"gender": g} for g in speaker_genders(row)],
                    "caption_description": template(row, env, scene),
                    "caption_description_source": "template", "caption_grounding": [],
                    "caption_completion_tokens": 0})
    return out


def measure(rows: list[dict], out: list[dict], wall_s: float | None) -> dict:
    from operators.grounding import problems

    result: dict = {}
    by_group: dict[str, list[bool]] = {}
    for row in out:
        group, _ = label_of(row)
        by_group.setdefault(group, []).append(row["caption_scene"] in EXPECTED[group])
    result["scene"] = {g: sum(v) / len(v) for g, v in by_group.items()}
    result["scene_all"] = sum(sum(v) for v in by_group.values()) / max(1, len(out))
    phone = [r for r in out if label_of(r)[0] == "telephone"]
    result["telephone"] = sum(r["caption_environment"] == "telephone" for r in phone) / max(
        1, len(phone))
    voiced = [(label_of(r)[1], (r["caption_speakers"] or [{}])[0].get("gender"))
              for r in out if label_of(r)[1] and r["caption_speakers"]]
    given = [(want, got) for want, got in voiced if got not in (None, "unknown")]
    result["gender_acc"] = sum(w == g for w, g in given) / max(1, len(given))
    one = [r for r in out if r.get("content_type") == "speech" and r.get("speaker_count") == 1]
    result["gender_given"] = sum(
        (r["caption_speakers"] or [{}])[0].get("gender") not in (None, "unknown")
        for r in one) / max(1, len(one))
    kinds = [p.split(":")[0] for r in out for p in set(
        q.split(":")[0] for q in r.get("caption_grounding") or [])]
    n = max(1, len(out))
    result["fallback"] = sum(r.get("caption_description_source") == "template"
                             for r in out) / n
    result["contradiction"] = sum(
        any(p.startswith("contradicts") for p in r.get("caption_grounding") or [])
        for r in out) / n
    result["made_up"] = sum(
        any(p.startswith(("name", "number")) for p in r.get("caption_grounding") or [])
        for r in out) / n
    result["gender_words"] = kinds.count("gender") / n
    result["kept_failing"] = sum(bool(problems(r["caption_description"] or "", r))
                                 for r in out if r.get("caption_description"))
    tokens = sum(r.get("caption_completion_tokens") or 0 for r in out)
    result["captions_per_s"] = len(out) / wall_s if wall_s else None
    result["tokens_per_s"] = tokens / wall_s if wall_s else None
    result["examples"] = [(label_of(r)[0], r["caption_scene"], r["caption_description"])
                          for r in out[::max(1, len(out) // 6)]]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.caption_labels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None,
                        help="registry names of GGUF text models, comma-separated (default: the "
                             "configured caption.local_server.model)")
    parser.add_argument("--per-group", type=int, default=6)
    args = parser.parse_args(argv)

    from bench.inprocess import ROOT, features_before
    from model_serving.llm_server import LocalLlmServer
    from model_serving.registry import ModelRegistry
    from operators.caption import CaptionStage
    from pipeline.config import load_config

    cfg = load_config(ROOT / "configs" / "local.yaml")
    table = features_before(labelled_files(args.per_group), "caption-labels", "caption")
    rows = [{**r, "drop_reason": None, "drop_stage": None, "drop_detail": None}
            for r in table.to_pylist() if r.get("segment_id") and r.get("reject_reason") is None]
    print(f"labelled set: {len(rows)} segments from "
          f"{len({r['recording_id'] for r in rows})} recordings", flush=True)
    results = {"template (evidence only)": measure(rows, template_captions(rows), None)}
    captions: dict[str, list[dict]] = {}
    registry = ModelRegistry(cfg.models, cfg.model_cache_dir)
    for name in (args.models or cfg.caption.local_server.model).split(","):
        gguf = str(registry.resolve(name).only_file(".gguf", "GGUF model"))
        with LocalLlmServer(gguf, alias=cfg.caption.endpoint.model,
                            threads=cfg.caption.local_server.threads) as server:
            stage = CaptionStage(replace(cfg.caption, enabled=True, concurrency=1),
                                 endpoint_url=server.url, model_label=name)
            t0 = time.monotonic()
            out = stage(pa.Table.from_pylist(rows)).to_pylist()
            results[name] = measure(rows, out, time.monotonic() - t0)
            captions[name] = [{k: r.get(k) for k in KEEP} for r in out]
        print(f"  {name}: done", flush=True)
    dump = ROOT / ".local" / "bench" / "caption_labels.json"
    dump.parent.mkdir(parents=True, exist_ok=True)
    dump.write_text(json.dumps({"results": results, "captions": captions}, indent=1,
                               default=str))

    groups = sorted({label_of(r)[0] for r in rows})
    head = (f"{'captioner':<26}" + "".join(f"{'scene ' + g[:9]:>16}" for g in groups)
            + f"{'phone env':>10}{'gender acc':>11}{'gender given':>13}{'fallback':>9}"
            f"{'contradict':>11}{'made-up':>8}{'kept bad':>9}{'capt/s':>8}{'tok/s':>7}")
    print("\n" + head + "\n" + "-" * len(head))
    for name, r in results.items():
        speed = (f"{r['captions_per_s']:>8.3f}{r['tokens_per_s']:>7.1f}"
                 if r["captions_per_s"] else f"{'-':>8}{'-':>7}")
        print(f"{name:<26}" + "".join(f"{r['scene'].get(g, 0):>16.0%}" for g in groups)
              + f"{r['telephone']:>10.0%}{r['gender_acc']:>11.0%}{r['gender_given']:>13.0%}"
              f"{r['fallback']:>9.0%}{r['contradiction']:>11.0%}{r['made_up']:>8.0%}"
              f"{r['kept_failing']:>9d}" + speed)
    print(f"\n(every caption in {dump})")
    for name, r in results.items():
        print(f"\n{name}: scene accuracy over all groups {r['scene_all']:.0%}; examples:")
        for group, scene, text in r["examples"]:
            print(f"  [{group}] {scene}: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
