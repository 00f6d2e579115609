"""Whole runs on local Ray against the real SeaweedFS server, on real demo clips.

One run over every demo clip (captions off) is read back the way an auditor would (Parquet
over S3 with s3fs) and checked against the row invariant, the planted bad files and reference
transcripts. A second run of its first 12 objects, with the embedded caption server on, must give
the same rows and valid captions. (The small caption model takes ~7 s a segment on these two
cores, so it runs on the second run's few speech segments only; tests/test_captioner.py covers
music and sound.)"""
import json
import os

import pyarrow.parquet as pq
import pytest

from infra.demo_corpus import librivox_references
from model_serving.s3client import StorageError
from operators.storage import ObjectStore
from pipeline.errors import EXIT_TOO_MANY_FAILED
from pipeline.runner import run_pipeline
from schemas import reasons
from schemas.config import StorageConfig
from schemas.tables import ANNOTATIONS_SCHEMA, REJECTS_SCHEMA, SCHEMA_VERSION
from tests.conftest import LOCAL_CONFIG, TEST_BUCKET, corpus_wer
from tests.helpers import run_cli

pytestmark = pytest.mark.integration

EXPECTED_REJECTS = {
    "bad/empty.wav": ("decode", reasons.EMPTY_OBJECT),
    "bad/random_bytes.wav": ("decode", reasons.UNDECODABLE),
    "bad/truncated.flac": ("decode", reasons.TRUNCATED),
    "bad/not_audio.mp3": ("decode", reasons.UNDECODABLE),
    "bad/readme.txt": ("decode", reasons.UNSUPPORTED_EXTENSION),
    "bad/digital_silence.wav": ("decode", reasons.DIGITAL_SILENCE),
    "bad/near_silence.flac": ("vad", reasons.NO_AUDIBLE_CONTENT),
    "bad/header_claims_2gib.wav": ("decode", reasons.TRUNCATED),
    "bad/header_claims_20s.wav": ("decode", reasons.TRUNCATED),
    "bad/dc_only.wav": ("decode", reasons.DIGITAL_SILENCE),
}


# The card readings of the second run agree at 0.58-0.67 under the default rule, one word from
# the 0.6 threshold: whether any is kept (and captioned) would hang on one word a CPU can flip.
# These tests check the pipeline, not that threshold; the agreement gate has its own tests.
WIDE_AGREEMENT = ["agreement.threshold=0.3"]


def s3fs_filesystem():
    import s3fs

    return s3fs.S3FileSystem(key=os.environ["AWS_ACCESS_KEY_ID"],
                             secret=os.environ["AWS_SECRET_ACCESS_KEY"],
                             endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def read_run(prefix: str):
    fs = s3fs_filesystem()
    root = prefix[len("s3://"):]
    summary = json.loads(fs.cat(root + "summary.json"))
    tables = {}
    for name in ("annotations", "rejects"):
        parts = [pq.read_table(root + f["path"], filesystem=fs) for f in summary["files"][name]]
        tables[name] = parts[0] if len(parts) == 1 else __import__("pyarrow").concat_tables(parts)
    return summary, tables["annotations"], tables["rejects"]


@pytest.fixture(scope="module")
def first_run(demo_corpus, ray_runtime, local_config):
    # --full: other test modules' runs share this output, and the ledger may know some objects.
    result = run_pipeline(local_config("caption.enabled=false", *WIDE_AGREEMENT), run_id="it-a",
                          full=True)
    assert result.exit_code == 0
    return result, *read_run(result.prefix)


@pytest.fixture(scope="module")
def second_run(first_run, local_config):
    # The first 12 objects by key (bad/ and cmu_cards/): every reject, and speech that goes
    # through ASR, agreement, speakers and captions. --full: the ledger knows these objects
    # from it-a; an incremental run would skip them.
    result = run_pipeline(local_config("input.limit=12", *WIDE_AGREEMENT), run_id="it-b",
                          full=True)
    assert result.exit_code == EXIT_TOO_MANY_FAILED  # 10 of 12 rejected: published all the same
    return result, *read_run(result.prefix)


def test_every_listed_input_is_in_exactly_one_table(first_run, demo_corpus):
    result, summary, ann, rej = first_run
    listed = {f"s3://{TEST_BUCKET}/raw/{k}" for k in demo_corpus}
    annotated = set(ann.column("source_uri").to_pylist())
    rejected = rej.column("source_uri").to_pylist()
    assert len(rejected) == len(set(rejected))
    assert annotated.isdisjoint(rejected)
    assert annotated | set(rejected) == listed
    assert summary["inputs"] == len(listed)
    seg_ids = ann.column("segment_id").to_pylist()
    assert len(seg_ids) == len(set(seg_ids))
    for row in ann.to_pylist():
        assert row["segment_id"] == f"{row['recording_id']}-{row['segment_index']:05d}"


def test_planted_bad_files_are_rejected_with_the_right_reasons(first_run):
    _, summary, _, rej = first_run
    got = {r["source_uri"].split("/raw/", 1)[1]: (r["stage"], r["reason"])
           for r in rej.to_pylist()}
    assert got == EXPECTED_REJECTS
    assert all(r["detail"] for r in rej.to_pylist())
    assert sum(summary["rejected_by_reason"].values()) == rej.num_rows


def test_librivox_transcripts_match_references(first_run):
    _, _, ann, _ = first_run
    refs = librivox_references()
    pairs = []
    for row in ann.to_pylist():
        stem = row["source_uri"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if stem in refs:
            pairs.append((refs[stem], row["transcript"] or ""))
    assert len(pairs) == 5  # every container format reached the ASR
    wer = corpus_wer([p[0] for p in pairs], [p[1] for p in pairs])
    assert wer < 0.15, (wer, pairs)


def test_tables_carry_schema_version_and_declared_schemas(first_run):
    result, summary, ann, rej = first_run
    fs = s3fs_filesystem()
    path = result.prefix[len("s3://"):] + summary["files"]["annotations"][0]["path"]
    meta = pq.read_schema(path, filesystem=fs).metadata
    assert meta[b"schema_version"] == SCHEMA_VERSION.encode()
    assert ann.schema.remove_metadata().names == ANNOTATIONS_SCHEMA.names
    assert rej.schema.remove_metadata().names == REJECTS_SCHEMA.names
    assert set(ann.column("content_type").to_pylist()) == {"speech", "music", "sound"}
    other = [r for r in ann.to_pylist() if r["content_type"] != "speech"]
    assert all(r["transcript"] is None for r in other)  # no ASR on non-speech


def test_summary_agrees_with_tables(first_run):
    _, summary, ann, rej = first_run
    assert summary["status"] == "succeeded"
    assert summary["segments"] == ann.num_rows
    assert summary["recordings_rejected"] == rej.num_rows
    kept = sum(1 for r in ann.to_pylist() if r["drop_reason"] is None)
    assert summary["segments_kept"] == kept
    assert summary["audio_hours"] > 0 and summary["real_time_factor"] > 0
    assert summary["models"]["asr:whisper-base"].startswith("asr/whisper-base@")
    assert set(summary["models"]) == {"vad", "events", "speakers", "asr:whisper-base",
                                      "asr:whisper-tiny-en", "asr:moonshine-base-en"}
    assert summary["captions"]["captioned"] == 0  # captions were off


def test_summary_counts_the_captions(second_run):
    _, summary, ann, _ = second_run
    assert summary["models"]["caption"].startswith("caption/smollm2-135m@")
    captioned = [r for r in ann.to_pylist() if r["caption_description"] is not None]
    assert summary["captions"]["captioned"] == len(captioned) > 0
    assert summary["captions"]["sources"] == {"text_features": len(captioned)}


def _by_file(ann) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in ann.to_pylist():
        out.setdefault(row["source_uri"].split("/raw/", 1)[1], []).append(row)
    return out


def test_events_and_content_types_follow_what_the_files_are(first_run):
    files = _by_file(first_run[2])
    violin = files["tuxpaint/sound_effects/violin.ogg"]
    assert {r["content_type"] for r in violin} == {"music"}
    assert any(label["name"] == "Violin, fiddle" for r in violin for label in r["event_labels"])
    vacuum = files["tuxpaint/sound_effects/vacuum_cleaner.ogg"]
    assert {r["content_type"] for r in vacuum} == {"sound"}
    # Vacuum cleaner among the tagger's top 3 (it is top-1 at 0.82 here; YAMNet's int8 scores
    # move in steps, so not the exact rank).
    assert "/m/0d31p" in [e["mid"] for e in vacuum[0]["event_labels"][:3]]
    librivox = [r for name, rows in files.items() if name.startswith("librivox/") for r in rows]
    for row in librivox:
        assert row["content_type"] == "speech" and row["vad_content_type"] == "speech"
        assert row["event_labels"][0]["name"] == "Speech"
        assert row["speech_fraction"] >= 0.8 and row["music_fraction"] <= 0.2
        assert row["event_model"].startswith("events/yamnet@")


def test_every_segment_has_signal_measures(first_run):
    for row in first_run[2].to_pylist():
        assert row["peak_dbfs"] is not None and row["clipped_ratio"] is not None
        assert row["bandwidth_hz"] is not None and row["dc_offset"] is not None
        if row["duration_s"] >= 1.0:
            assert row["snr_db"] is not None and row["loudness_lufs"] is not None
        if row["content_type"] == "speech" and row["voiced_fraction"]:
            assert 60 <= row["pitch_mean_hz"] <= 500


def test_odd_recordings_are_annotated_with_the_oddity_measured(first_run):
    files = _by_file(first_run[2])
    clipped = files["odd/clipped.flac"]
    assert all(r["clipped_ratio"] > 0.01 for r in clipped)
    assert {r["drop_reason"] for r in clipped} == {reasons.CLIPPING}
    assert all(r["transcript"] is None for r in clipped)  # dropped before ASR
    nan = files["odd/nan_samples.wav"]
    assert nan[0]["source_nonfinite_samples"] == 100
    assert any(r["transcript"] for r in nan)
    dc = files["odd/dc_offset.flac"]
    assert all(abs(r["dc_offset"] - 0.25) < 0.02 for r in dc)
    assert any(r["transcript"] for r in dc)
    phone = files["odd/phone_band_44k.wav"]
    assert phone[0]["source_sample_rate"] == 44100
    assert all(3500 <= r["bandwidth_hz"] <= 4300 for r in phone)
    noisy = files["odd/noisy_speech.flac"]
    speech = [r for r in noisy if r["content_type"] == "speech"]
    assert speech and all(r["snr_db"] < 15 for r in speech)
    assert {r["drop_reason"] for r in speech} == {reasons.LOW_SNR_SPEECH}
    assert all(r["asr_hypotheses"] is None for r in speech)  # dropped before ASR
    wide = [r["bandwidth_hz"] for name, rows in files.items()
            if name.startswith("librivox/") and name.endswith((".wav", ".flac")) for r in rows]
    assert wide and min(wide) > 6000


def test_speaker_ids_are_consistent_within_a_recording(first_run):
    files = _by_file(first_run[2])
    two = files["speakers/librivox+cmu-cards.flac"]
    assert {r["recording_speaker_count"] for r in two} == {2}
    ids = {i for r in two for i in (r["speaker_ids"] or [])}
    assert ids == {"spk1", "spk2"}
    assert all(r["speaker_model"].startswith("speakers/resemblyzer@") for r in two)
    for name, rows in files.items():
        if name.startswith("librivox/"):
            assert all(r["speaker_count"] == 1 and r["speaker_ids"] == ["spk1"] for r in rows)
            assert {r["recording_speaker_count"] for r in rows} == {1}
    for row in files["tuxpaint/sound_effects/violin.ogg"]:
        assert row["speaker_count"] is None  # no speakers on music


def test_kept_segments_have_valid_captions_that_agree_with_measurements(second_run):
    """The embedded server ran the real small model on every kept segment."""
    from operators.caption_evidence import measured_environment, scene_candidates
    from operators.grounding import problems
    from schemas.captions import ENVIRONMENTS, SCENES, UNHEARD_BY_TEXT_MODEL

    _, summary, ann, _ = second_run
    rows = ann.to_pylist()
    kept = [r for r in rows if r["drop_reason"] is None]
    assert kept and all(r["caption_description"] for r in kept)
    for r in kept:
        assert r["caption_source"] == "text_features"
        assert r["caption_model"].startswith("caption/smollm2-135m@")
        assert r["caption_scene"] in SCENES and r["caption_environment"] in ENVIRONMENTS
        assert r["caption_content_type"] == r["content_type"]
        if r["content_type"] == "speech":
            assert r["caption_language"] == r["language"]
            assert r["caption_speaker_count"] == r["speaker_count"]  # None: not counted
        else:
            assert r["caption_language"] is None and r["caption_speaker_count"] == 0
        assert len(r["caption_speakers"]) == (r["caption_speaker_count"] or 0)
        assert r["caption_emotion"] == "unknown"
        prov = r["caption_provenance"]
        # genders are the measured ones (pitch per speaker), never the model's
        genders = [s["gender"] for s in r["caption_speakers"]]
        if r["content_type"] == "speech" and r["speaker_genders"]:
            assert genders == r["speaker_genders"]
        gendered = any(g != "unknown" for g in genders)
        assert prov["speaker_gender"] == ("measured" if gendered else "unknown")
        assert r["caption_unheard_fields"] == [
            f for f in UNHEARD_BY_TEXT_MODEL if not (gendered and f == "speakers.gender")]
        assert (prov["scene"], prov["content_type"]) == ("inferred", "measured")
        # the scene is one the evidence allows; every kept description passes the grounding
        # check (0 contradictions, 0 made-up names), the model's or the one from the facts
        assert r["caption_scene"] in scene_candidates(r)
        assert problems(r["caption_description"], r) == []
        assert prov["description"] == ("measured" if r["caption_description_source"] ==
                                       "template" else "inferred")
        assert (r["caption_environment"] == "telephone") == (
            measured_environment(r) == "telephone")
        assert prov["speaker_count"] == ("unknown" if r["caption_speaker_count"] is None
                                         else "measured")
    # Segments dropped before captioning were not sent; a caption drop names its reason.
    for r in rows:
        if r["drop_reason"] not in (None, reasons.CAPTION_INVALID, reasons.CAPTION_ERROR):
            assert r["caption_source"] is None and r["caption_raw"] is None
        if r["drop_reason"] in (reasons.CAPTION_INVALID, reasons.CAPTION_ERROR):
            assert r["drop_stage"] == "caption" and r["drop_detail"]


def test_second_run_gives_identical_rows(first_run, second_run):
    """Every column but the run id and the captions (off in the first run) is equal."""
    import pyarrow.compute as pc

    _, _, ann_a, rej_a = first_run
    _, _, ann_b, rej_b = second_run
    assert ann_b.num_rows > 0 and rej_b.num_rows == len(EXPECTED_REJECTS)
    same = pc.is_in(ann_a.column("recording_id"), value_set=ann_b.column("recording_id"))
    a = ann_a.filter(same).drop_columns(["run_id"])
    b = ann_b.drop_columns(["run_id"])
    captions = [n for n in a.column_names if n.startswith("caption_")]
    drops = ["drop_stage", "drop_reason", "drop_detail"]
    assert a.drop_columns(captions + drops).equals(b.drop_columns(captions + drops))
    # A segment the captioner dropped (invalid JSON, endpoint error) was kept without it.
    for row_a, row_b in zip(a.select(drops).to_pylist(), b.select(drops).to_pylist()):
        assert row_b == row_a or (row_b["drop_stage"] == "caption"
                                  and row_a["drop_reason"] is None)
    assert rej_a.drop_columns(["run_id"]).equals(rej_b.drop_columns(["run_id"]))


def test_rerun_of_a_committed_run_id_changes_nothing(first_run, local_config, s3_client):
    result, summary, _, _ = first_run
    key = result.prefix.split(f"s3://{TEST_BUCKET}/", 1)[1] + "summary.json"
    before = s3_client.head_object(Bucket=TEST_BUCKET, Key=key)["ETag"]
    again = run_pipeline(local_config(), run_id="it-a")
    assert again.already_committed and again.exit_code == 0
    assert again.summary == summary
    assert s3_client.head_object(Bucket=TEST_BUCKET, Key=key)["ETag"] == before


def test_a_run_that_dies_while_publishing_leaves_nothing_complete(
        demo_corpus, ray_runtime, local_config, s3_client, monkeypatch):
    """Attempt 1 dies at its commit (writing summary.json) after the workers wrote every
    partition; attempt 2, the same run id through the CLI as cron runs it, resumes (nothing
    left to process), commits with exit 4 (every object under bad/ is rejected), one JSON
    object on stdout, the human summary on stderr, and no file under the run that its summary
    does not list."""
    # Nothing to caption when everything is rejected: no caption server needed.
    sets = [f"input.uri=s3://{TEST_BUCKET}/raw/bad/", "caption.enabled=false"]
    real_put = ObjectStore.put

    def failing_put(self, uri, body, content_type="application/octet-stream", **kw):
        if uri.endswith("/summary.json"):  # the storage fails at the commit
            raise StorageError("simulated: S3 returned 500 while writing", permanent=False)
        return real_put(self, uri, body, content_type, **kw)

    monkeypatch.setattr(ObjectStore, "put", failing_put)
    with pytest.raises(StorageError):
        run_pipeline(local_config(*sets), run_id="it-crash", full=True)
    store = ObjectStore(StorageConfig())
    prefix = f"s3://{TEST_BUCKET}/runs/it-crash/"
    left = [o.key for o in store.list(prefix)]
    assert any("rejects/" in k for k in left) and not any("summary.json" in k for k in left)

    monkeypatch.setattr(ObjectStore, "put", real_put)
    s3_client.put_object(Bucket=TEST_BUCKET, Key="runs/it-crash/annotations/part-00009.parquet",
                         Body=b"stale file of the dead attempt")
    # --full: other tests' runs share this output, and their ledger may know these objects.
    args = ["run", str(LOCAL_CONFIG), "--json", "--run-id", "it-crash", "--full",
            "--set", f"output.uri=s3://{TEST_BUCKET}/", "--set", "ray.object_store_mb=300"]
    proc, _ = run_cli(*args, *sum((["--set", s] for s in sets), []), timeout=300)
    assert proc.returncode == EXIT_TOO_MANY_FAILED, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # stdout is exactly one JSON object
    assert summary["status"] == "too_many_failed_inputs"
    assert summary["inputs"] == 10 and summary["recordings_rejected"] == 10
    assert summary["resumed_recordings"] == 10  # every partition was written by attempt 1
    assert "rejected  empty_object" in proc.stderr  # the human summary goes to stderr
    listed = sorted(o.key.split("it-crash/", 1)[1] for o in store.list(prefix))
    named = sorted([f["path"] for fs in summary["files"].values() for f in fs]
                   + ["summary.json"])
    assert listed == named  # the stale file is gone; everything present is in the summary
