"""The ledger's decisions, table in, plan out (no storage): which listed objects a run
processes, which it skips, and which sources it marks deleted or taken down."""
import pyarrow as pa
import pytest

from operators.ledger_rows import ledger_rows, mark_rows
from pipeline.ledger import latest_rows, latest_states, parse_takedowns, plan_run
from schemas.tables import ANNOTATIONS_SCHEMA, LEDGER_SCHEMA, LISTING_SCHEMA, REJECTS_SCHEMA

RAW = "s3://b/raw/"


def listing(*objects):
    return pa.Table.from_pylist([
        {"run_id": "now", "recording_id": f"rec-{key}-{etag}", "source_uri": RAW + key,
         "source_etag": etag, "source_version_id": None, "source_bytes": 10}
        for key, etag in objects], schema=LISTING_SCHEMA)


def ledger(*rows):
    return pa.Table.from_pylist([
        {"run_id": run, "source_uri": RAW + key, "source_etag": etag, "source_version_id": None,
         "recording_id": f"rec-{key}-{etag}", "state": state, "reason": reason}
        for run, key, etag, state, reason in rows], schema=LEDGER_SCHEMA)


def annotations(*rows):
    """Annotation rows: (key, etag, segment index, drop stage, drop reason)."""
    return pa.Table.from_pylist([
        {"source_uri": RAW + key, "source_etag": etag, "source_version_id": None,
         "recording_id": f"rec-{key}-{etag}", "segment_index": i, "drop_stage": stage,
         "drop_reason": reason} for key, etag, i, stage, reason in rows],
        schema=pa.schema([ANNOTATIONS_SCHEMA.field(n) for n in (
            "source_uri", "source_etag", "source_version_id", "recording_id", "segment_index",
            "drop_stage", "drop_reason")]))


def rejects(*rows):
    """Reject rows: (key, etag, stage, reason)."""
    return pa.Table.from_pylist([
        {"source_uri": RAW + key, "source_etag": etag, "source_version_id": None,
         "recording_id": f"rec-{key}-{etag}", "stage": stage, "reason": reason}
        for key, etag, stage, reason in rows],
        schema=pa.schema([REJECTS_SCHEMA.field(n) for n in (
            "source_uri", "source_etag", "source_version_id", "recording_id", "stage",
            "reason")]))


def keys(table):
    return [u[len(RAW):] for u in table.column("source_uri").to_pylist()]


def test_only_new_changed_and_retried_objects_are_processed():
    states = latest_states(ledger(
        ("n1", "same.wav", "e1", "annotated", None),
        ("n1", "edited.wav", "e1", "annotated", None),
        ("n1", "flaky.wav", "e1", "rejected", "read_error"),
        ("n1", "broken.wav", "e1", "rejected", "undecodable"),
        ("n1", "back.wav", "e1", "annotated", None),
        ("n2", "back.wav", None, "deleted", "no longer in the input prefix"),
    ))
    plan = plan_run(listing(("same.wav", "e1"), ("edited.wav", "e2"), ("flaky.wav", "e1"),
                            ("broken.wav", "e1"), ("back.wav", "e1"), ("fresh.wav", "e9")),
                    states, set(), RAW)
    assert keys(plan.todo) == ["edited.wav", "flaky.wav", "back.wav", "fresh.wav"]
    c = plan.counts
    assert (c["new"], c["changed"], c["retried"], c["unchanged"]) == (2, 1, 1, 2)
    assert plan.marks == [] and c["to_process"] == 4

    full = plan_run(listing(("same.wav", "e1"), ("broken.wav", "e1")), states, set(), RAW,
                    full=True)
    assert keys(full.todo) == ["same.wav", "broken.wav"] and full.counts["reprocessed"] == 2


def test_deleted_and_taken_down_sources_are_marked_once():
    states = latest_states(ledger(
        ("n1", "gone.wav", "e1", "annotated", None),
        ("n1", "kept.wav", "e1", "annotated", None),
        ("n1", "other/x.wav", "e1", "annotated", None),
    ))
    plan = plan_run(listing(("kept.wav", "e1"), ("new.wav", "e1")), states,
                    {RAW + "kept.wav", RAW + "new.wav"}, RAW + "")
    assert keys(plan.todo) == []
    marks = {(m["source_uri"][len(RAW):], m["state"]) for m in plan.marks}
    # other/x.wav is under RAW too: it is gone from the listing, so deleted.
    assert marks == {("kept.wav", "takedown"), ("new.wav", "takedown"),
                     ("gone.wav", "deleted"), ("other/x.wav", "deleted")}
    # A run over a narrower prefix cannot see sources outside it as deleted.
    narrow = plan_run(listing(("kept.wav", "e1")), states, set(), RAW + "kept")
    assert all(m["state"] != "deleted" or m["source_uri"].startswith(RAW + "kept")
               for m in narrow.marks) and narrow.counts["deleted"] == 0

    # Once marked, the next night does not mark again; the view excludes by the latest state.
    rows = mark_rows("n2", plan.marks, "test")
    later = latest_states(pa.concat_tables([ledger(("n1", "kept.wav", "e1", "annotated", None)),
                                            rows]))
    again = plan_run(listing(("kept.wav", "e1")), later, {RAW + "kept.wav"}, RAW)
    assert again.marks == [] and again.counts["takedown"] == 0


def test_limit_defers_the_rest_to_later_nights():
    plan = plan_run(listing(("a.wav", "1"), ("b.wav", "1"), ("c.wav", "1")), {}, set(), RAW,
                    limit=2)
    assert keys(plan.todo) == ["a.wav", "b.wav"] and plan.counts["deferred_by_limit"] == 1


def test_takedown_lines_resolve_against_the_input_prefix_as_a_folder():
    text = "# legal request 123\na/card2.wav\n  /b/x.flac  \n\n  # indented comment\n" \
           "s3://other/raw/y.wav\n"
    want = {RAW + "a/card2.wav", RAW + "b/x.flac", "s3://other/raw/y.wav"}
    assert parse_takedowns(text, RAW) == want
    assert parse_takedowns(text, RAW.rstrip("/")) == want  # no trailing slash: same sources
    assert parse_takedowns("k.wav", "s3://b") == {"s3://b/k.wav"}  # the bucket root


ODD_KEYS = ["hash#frag.wav", "q?x=1.wav", "with space/a b.wav", "caf\u00e9/\u58f0\u97f3 #1?.flac",
            "#starts-with-hash.wav"]


def test_takedown_keys_with_hash_question_mark_spaces_and_unicode_are_never_skipped():
    # Only a line that starts with '#' is a comment; a key that itself starts with '#' is
    # written as a full s3:// URI.
    text = "\n".join(["# request 42: every key below must be taken down"]
                     + [k for k in ODD_KEYS if not k.startswith("#")]
                     + [RAW + "#starts-with-hash.wav"]) + "\n"
    takedowns = parse_takedowns(text, RAW)
    assert takedowns == {RAW + k for k in ODD_KEYS}
    plan = plan_run(listing(*[(k, "e1") for k in ODD_KEYS] + [("keep.wav", "e1")]), {},
                    takedowns, RAW)
    assert keys(plan.todo) == ["keep.wav"]
    assert sorted(m["source_uri"][len(RAW):] for m in plan.marks) == sorted(ODD_KEYS)


# --- outcomes that depended on settings: planned again when those settings change -------------
def fingerprints(*overrides):
    from pipeline.config import load_config
    from pipeline.fingerprint import stage_fingerprints
    from tests.conftest import LOCAL_CONFIG

    return stage_fingerprints(load_config(LOCAL_CONFIG, list(overrides)))


def night_one(prints):
    """A committed night: a decode reject, a recording with a hallucination drop, one with a
    too_short drop only, one with nothing dropped."""
    ann = annotations(("halluc.wav", "e1", 0, None, None),
                      ("halluc.wav", "e1", 1, "hallucination", "hallucination_repetition"),
                      ("halluc.wav", "e1", 2, "vad", "too_short"),
                      ("short.wav", "e1", 0, "vad", "too_short"),
                      ("clean.wav", "e1", 0, None, None))
    rej = rejects(("long.wav", "e1", "decode", "too_long"))
    from pipeline.fingerprint import stage_order

    return latest_states(ledger_rows("n1", ann, rej, stage_order(), prints, "test"))


LISTED = (("halluc.wav", "e1"), ("short.wav", "e1"), ("clean.wav", "e1"), ("long.wav", "e1"))


def test_ledger_rows_record_the_deciding_stage_its_fingerprint_and_the_drops():
    prints = fingerprints()
    states = night_one(prints)
    by_key = {uri[len(RAW):]: row for uri, row in states.items()}
    assert by_key["long.wav"]["settings_stage"] == "decode"
    assert by_key["halluc.wav"]["settings_stage"] == "hallucination"  # the latest drop stage
    assert by_key["halluc.wav"]["drop_reasons"] == ["hallucination_repetition", "too_short"]
    assert by_key["short.wav"]["settings_stage"] == "vad"
    assert by_key["clean.wav"]["drop_reasons"] == []
    for row in by_key.values():
        assert row["settings_fingerprint"] == prints[row["settings_stage"]]
        assert row["pipeline_version"]


@pytest.mark.parametrize("override, replanned", [
    ([], set()),                                                # same config: nothing
    (["caption.max_tokens=200"], set()),                       # after every deciding stage
    (["asr.batch_size=4", "ray.num_cpus=8"], set()),           # speed only, not outcomes
    (["hallucination.max_ngram_repeats=6"], {"halluc.wav"}),   # the drop's own stage
    (["decode.max_duration_s=7200"], {"long.wav", "halluc.wav", "short.wav"}),  # upstream
    (["segment.min_speech_s=0.5"], {"halluc.wav", "short.wav"}),
])
def test_a_reject_or_drop_whose_settings_changed_is_planned_again(override, replanned):
    states = night_one(fingerprints())
    plan = plan_run(listing(*LISTED), states, set(), RAW, fingerprints=fingerprints(*override))
    assert set(keys(plan.todo)) == replanned
    assert plan.counts["reconfigured"] == len(replanned)
    assert plan.counts["unchanged"] == len(LISTED) - len(replanned)
    assert "clean.wav" not in keys(plan.todo)  # nothing dropped: nothing to undo


def test_reprocess_names_reject_and_drop_reasons():
    states = night_one(fingerprints())
    plan = plan_run(listing(*LISTED), states, set(), RAW, fingerprints=fingerprints(),
                    reprocess=frozenset({"too_long", "hallucination_repetition"}))
    assert set(keys(plan.todo)) == {"long.wav", "halluc.wav"}
    assert plan.counts["reprocess_reason"] == 2
    plan = plan_run(listing(*LISTED), states, set(), RAW, fingerprints=fingerprints(),
                    reprocess=frozenset({"too_short"}))
    assert set(keys(plan.todo)) == {"halluc.wav", "short.wav"}


def test_ledger_rows_from_before_fingerprints_are_not_replanned_by_a_config_change():
    old = latest_states(ledger(("n0", "long.wav", "e1", "rejected", "too_long")))
    assert old[RAW + "long.wav"]["settings_fingerprint"] is None
    plan = plan_run(listing(("long.wav", "e1")), old, set(), RAW,
                    fingerprints=fingerprints("decode.max_duration_s=7200"))
    assert keys(plan.todo) == [] and plan.counts["unchanged"] == 1


def test_merging_keeps_the_latest_row_of_every_source():
    older = ledger(("n1", "a.wav", "e1", "annotated", None), ("n1", "b.wav", "e1", "rejected",
                                                             "undecodable"))
    newer = ledger(("n2", "b.wav", "e2", "annotated", None), ("n2", "c.wav", "e1", "takedown",
                                                             "takedown list"))
    merged = latest_rows([older, newer])
    assert [(r["source_uri"][len(RAW):], r["run_id"], r["state"]) for r in merged.to_pylist()] \
        == [("a.wav", "n1", "annotated"), ("b.wav", "n2", "annotated"),
            ("c.wav", "n2", "takedown")]
    # Within one table the later row wins too; an empty merge is an empty table.
    again = latest_rows([pa.concat_tables([older, ledger(("n1", "a.wav", "e1", "deleted",
                                                           None))])])
    assert {r["source_uri"][len(RAW):]: r["state"] for r in again.to_pylist()}["a.wav"] == \
        "deleted"
    assert latest_rows([]).num_rows == 0
