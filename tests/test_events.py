"""Acoustic event tagging: YAMNet's front end against its published parameters, the packaged
tagger against recorded sound effects, the PANNs adapter with a seeded checkpoint (no network,
nothing written outside its work directory), and the stage's content-type rules."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

from bench.events_eval import accuracy, evaluate
from infra.demo_corpus import LIBRIVOX, TUXPAINT, read_audio
from infra.sound_references import SOUND_LABELS
from model_serving import yamnet_features as features
from model_serving.event_tagger import AudioClass, load_event_tagger, read_class_map
from model_serving.registry import ModelError, ModelRegistry, sha256_file
from operators.audio import to_bytes
from operators.events import EventsStage, refine_content_type, summarise
from pipeline.config import load_config
from schemas.config import EventsConfig, ModelEntry, ModelFile
from tests.conftest import LOCAL_CONFIG

# Measured with the packaged YAMNet: top-5 61.9%, top-1 below the roots 45.2% (42 files).
# A shuffled label map or a wrong front end falls far below these.
TOP5_FLOOR = 0.5
SPECIFIC_FLOOR = 0.35


@pytest.fixture(scope="module")
def yamnet(registry, tmp_path_factory):
    return load_event_tagger(registry.resolve("events/yamnet"),
                             work_dir=tmp_path_factory.mktemp("unpacked"))


# --- the front end ------------------------------------------------------------------------------
def test_mel_matrix_follows_tensorflow_layout():
    w = features.mel_matrix()
    assert w.shape == (257, 64)
    assert np.all(w[0] == 0)                        # the DC bin carries no weight
    hz = np.linspace(0, 8000, 257)
    peaks = hz[np.argmax(w, axis=0)]
    assert np.all(np.diff(peaks) >= 0)              # bands in rising order
    assert 120 <= peaks[0] <= 200 and 7000 <= peaks[-1] <= 7500
    assert np.all(w.max(axis=0) <= 1.0) and np.all(w.max(axis=0) > 0.5)  # no area norm


def test_a_tone_lights_the_band_that_holds_it():
    t = np.arange(16000) / 16000
    mel = features.log_mel((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    assert mel.shape == (1 + (16000 - 400) // 160, 64)
    w = features.mel_matrix()
    expected_band = int(np.argmax(w[int(round(1000 / 8000 * 256))]))
    assert abs(int(np.argmax(mel.mean(axis=0))) - expected_band) <= 1
    silent = features.log_mel(np.zeros(16000, np.float32))
    assert np.allclose(silent, np.log(features.LOG_OFFSET))


@pytest.mark.parametrize("seconds,patches", [(0.1, 1), (0.96, 1), (1.0, 2), (2.0, 4), (5.0, 10)])
def test_patch_count_covers_the_audio(seconds, patches):
    p = features.patches(np.zeros(int(seconds * 16000), np.float32))
    assert p.shape == (patches, 1, 96, 64)


# --- the packaged tagger on real recordings -------------------------------------------------------
def test_every_reference_label_exists_in_the_class_map(yamnet):
    names = {c.name for c in yamnet.classes}
    assert len(yamnet.classes) == 521
    for path, accepted in SOUND_LABELS.items():
        assert (TUXPAINT / path).is_file(), path
        assert accepted <= names, (path, accepted - names)


def test_tagger_recognises_recorded_sound_effects(yamnet):
    outcomes = evaluate(yamnet)
    top1, top5, specific = accuracy(outcomes)
    assert top5 >= TOP5_FLOOR and specific >= SPECIFIC_FLOOR, [o for o in outcomes if not o.top5_ok]
    # The same scores read through a shuffled label map must fail the floor: the floor is what
    # catches a broken label mapping. (A shift by one class does not: neighbours in the
    # ontology are alike, Dog next to Bark.)
    names = [c.name for c in yamnet.classes]
    shuffled = [names[i] for i in np.random.default_rng(0).permutation(len(names))]
    _, shuffled_top5, shuffled_specific = accuracy(evaluate(yamnet, shuffled))
    assert shuffled_top5 < TOP5_FLOOR / 2 and shuffled_specific < SPECIFIC_FLOOR / 2


def test_speech_scores_as_speech_and_silence_as_nothing(yamnet):
    speech = yamnet.frame_scores(read_audio(sorted(LIBRIVOX.glob("*.wav"))[0]))
    assert yamnet.classes[int(np.argmax(speech.mean(axis=0)))].name == "Speech"
    silence = yamnet.frame_scores(np.zeros(16000, np.float32))
    assert silence.shape == (2, 521)
    top = int(np.argmax(silence.mean(axis=0)))
    assert yamnet.classes[top].name == "Silence"
    assert np.delete(silence, top, axis=1).max() < 0.5   # and nothing else is heard


@pytest.mark.parametrize("audio", [np.zeros(10, np.float32), np.full(8000, np.nan, np.float32),
                                   np.full(16000, 0.3, np.float32),   # pure DC
                                   np.clip(np.random.default_rng(0).standard_normal(16000) * 4,
                                           -1, 1).astype(np.float32)])
def test_odd_audio_gives_scores_not_errors(yamnet, audio):
    scores = yamnet.frame_scores(audio)
    assert scores.shape[1] == 521 and scores.shape[0] >= 1 and np.all(np.isfinite(scores))


# --- the stage ------------------------------------------------------------------------------------
def test_content_type_rules():
    cfg = EventsConfig()
    summary = lambda s, m: {"speech_fraction": s, "music_fraction": m}  # noqa: E731
    assert refine_content_type("speech", summary(0.1, 0.9), cfg.music_share) == "speech"
    assert refine_content_type("speech", summary(0.0, 0.9), cfg.music_share) == "music"
    assert refine_content_type("speech", summary(0.0, 0.1), cfg.music_share) == "sound"
    assert refine_content_type("sound", summary(0.9, 0.6), cfg.music_share) == "music"
    assert refine_content_type("sound", summary(0.0, 0.4), cfg.music_share) == "sound"


def test_summary_fractions_from_frame_scores():
    classes = [AudioClass(0, "/m/09x0r", "Speech"), AudioClass(1, "/m/04rlf", "Music"),
               AudioClass(2, "/m/0bt9lr", "Dog")]
    scores = np.array([[0.9, 0.0, 0.0], [0.9, 0.8, 0.0], [0.0, 0.0, 0.9], [0.0, 0.0, 0.1]])
    out = summarise(scores, classes, EventsConfig(top_k=2, frame_threshold=0.3))
    assert [label["name"] for label in out["event_labels"]] == ["Speech", "Dog"]
    assert out["speech_fraction"] == 0.5 and out["music_fraction"] == 0.25
    assert out["speech_music_fraction"] == 0.25 and out["noise_fraction"] == 0.5
    assert out["event_frames"] == 4


def test_stage_tags_segments_and_passes_rejects(tmp_path):
    cfg = load_config(LOCAL_CONFIG)
    stage = EventsStage(cfg.events, cfg.models, str(tmp_path))
    violin = read_audio(TUXPAINT / "hobbies/music/string/violin.ogg")
    table = pa.table({
        "recording_id": ["r1", "r2", "r3"],
        "content_type": ["sound", "speech", None],
        "reject_reason": [None, None, "empty_object"],
        "audio": [to_bytes(violin), to_bytes(read_audio(sorted(LIBRIVOX.glob("*.wav"))[1])), None],
    })
    out = stage(table).to_pylist()
    assert out[0]["content_type"] == "music" and out[0]["vad_content_type"] == "sound"
    assert out[1]["content_type"] == "speech" and out[1]["event_labels"][0]["mid"] == "/m/09x0r"
    assert out[2]["event_labels"] is None and out[2]["content_type"] is None


# --- PANNs: real model classes, seeded checkpoint, label list from the registry -----------------
CHECKPOINT_CLASSES, HOT_CLASS = 12, 7


@pytest.fixture(scope="module")
def seeded_checkpoint(tmp_path_factory):
    """A seeded, randomly initialised Cnn14 checkpoint for 12 classes, in which class 7 always
    wins (its bias is set high), so that the label mapping is checkable. Built in a subprocess
    that imports the model classes the way the adapter does."""
    out = tmp_path_factory.mktemp("panns-ckpt")
    code = textwrap.dedent(f"""
        import sys, torch
        from pathlib import Path
        from model_serving.panns import CNN14_ARGS, import_models
        models = import_models(Path(sys.argv[1]) / "work")
        torch.manual_seed(0)
        net = models.Cnn14(classes_num={CHECKPOINT_CLASSES}, **CNN14_ARGS)
        with torch.no_grad():
            net.fc_audioset.bias.fill_(-20.0)
            net.fc_audioset.bias[{HOT_CLASS}] = 20.0
        torch.save({{"model": net.state_dict()}}, Path(sys.argv[1]) / "Cnn14_seeded.pth")
    """)
    subprocess.run([sys.executable, "-c", code, str(out)], check=True)
    return out / "Cnn14_seeded.pth"


def _panns_entry(tmp_path, checkpoint, n_labels: int) -> tuple[dict, str]:
    """A registry entry (source: path): the checkpoint and a label file written here."""
    model_dir = tmp_path / "panns"
    model_dir.mkdir()
    os.link(checkpoint, model_dir / checkpoint.name)
    labels = ["index,mid,display_name"] + [f'{i},/t/test{i:03d},"Test class {i}"'
                                            for i in range(n_labels)]
    (model_dir / "class_labels_indices.csv").write_text("\n".join(labels) + "\n")
    entry = ModelEntry(source="path", version="seeded-0", family="panns-cnn14",
                       location=str(model_dir),
                       files={n: ModelFile(sha256=sha256_file(model_dir / n))
                              for n in (checkpoint.name, "class_labels_indices.csv")})
    return {"events/panns-test": entry}, str(model_dir)


def test_panns_loads_from_the_registry_and_maps_labels(tmp_path, seeded_checkpoint):
    entries, _ = _panns_entry(tmp_path, seeded_checkpoint, CHECKPOINT_CLASSES)
    resolved = ModelRegistry(entries, str(tmp_path / "cache")).resolve("events/panns-test")
    tagger = load_event_tagger(resolved, work_dir=tmp_path / "work")
    assert len(tagger.classes) == 12 and tagger.classes[HOT_CLASS].mid == "/t/test007"
    audio = read_audio(sorted(LIBRIVOX.glob("*.wav"))[0])
    scores = tagger.frame_scores(audio)
    windows = 1 + int(np.ceil((audio.size / 16000 - tagger.window_s) / tagger.hop_s))
    assert scores.shape == (windows, 12)          # 1 s windows every 0.5 s
    assert np.all(np.argmax(scores, axis=1) == HOT_CLASS)
    assert tagger.frame_scores(np.zeros(100, np.float32)).shape == (1, 12)
    top = summarise(scores, tagger.classes, EventsConfig(top_k=3))["event_labels"][0]
    assert top == {"mid": "/t/test007", "name": "Test class 7",
                   "score": pytest.approx(1.0, abs=1e-6)}


def test_panns_checkpoint_that_does_not_fit_its_label_list_is_a_model_error(
        tmp_path, seeded_checkpoint):
    entries, _ = _panns_entry(tmp_path, seeded_checkpoint, n_labels=10)
    resolved = ModelRegistry(entries, str(tmp_path / "cache")).resolve("events/panns-test")
    with pytest.raises(ModelError, match="10 classes from the label list.*checkpoint has 12"):
        load_event_tagger(resolved, work_dir=tmp_path / "work")


def test_panns_import_touches_no_network_and_writes_only_its_work_dir(tmp_path,
                                                                      seeded_checkpoint):
    _, model_dir = _panns_entry(tmp_path, seeded_checkpoint, CHECKPOINT_CLASSES)
    home, bin_dir, work = tmp_path / "home", tmp_path / "bin", tmp_path / "work2"
    home.mkdir()
    bin_dir.mkdir()
    calls = tmp_path / "wget-calls"
    wget = bin_dir / "wget"   # a fault-injection double: records that a download was tried
    wget.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\nexit 1\n")
    wget.chmod(0o755)
    code = textwrap.dedent(f"""
        from pathlib import Path
        from model_serving.event_tagger import load_event_tagger
        from model_serving.registry import ResolvedModel
        t = load_event_tagger(ResolvedModel("events/panns-test", "seeded-0", "panns-cnn14",
                                            Path({model_dir!r}),
                                            ("Cnn14_seeded.pth", "class_labels_indices.csv")),
                              work_dir=Path({str(work)!r}))
        print(len(t.classes))
    """)
    env = {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("MPLCONFIGDIR", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "12"
    assert not calls.exists(), calls.read_text()
    assert list(home.iterdir()) == []               # no ~/panns_data, no ~/.cache/matplotlib
    assert (work / "matplotlib").is_dir()


def test_class_map_errors_are_clear(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("name,id\nDog,/m/1\n")
    with pytest.raises(ModelError, match="header must be 'index,mid,display_name'"):
        read_class_map(bad)
