"""The ledger's decisions, table in, plan out (no storage): which listed objects a run
processes, which it skips, and which sources it marks deleted or taken down."""
import pyarrow as pa

from pipeline.ledger import latest_states, ledger_rows, parse_takedowns, plan_run
from schemas.tables import LEDGER_SCHEMA, LISTING_SCHEMA

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
    rows = ledger_rows("n2", pa.table({"source_uri": pa.array([], pa.string()),
                                       "source_etag": pa.array([], pa.string()),
                                       "source_version_id": pa.array([], pa.string()),
                                       "recording_id": pa.array([], pa.string())}),
                       pa.table({"source_uri": pa.array([], pa.string()),
                                 "source_etag": pa.array([], pa.string()),
                                 "source_version_id": pa.array([], pa.string()),
                                 "recording_id": pa.array([], pa.string()),
                                 "reason": pa.array([], pa.string())}), plan.marks)
    later = latest_states(pa.concat_tables([ledger(("n1", "kept.wav", "e1", "annotated", None)),
                                            rows]))
    again = plan_run(listing(("kept.wav", "e1")), later, {RAW + "kept.wav"}, RAW)
    assert again.marks == [] and again.counts["takedown"] == 0


def test_limit_defers_the_rest_to_later_nights():
    plan = plan_run(listing(("a.wav", "1"), ("b.wav", "1"), ("c.wav", "1")), {}, set(), RAW,
                    limit=2)
    assert keys(plan.todo) == ["a.wav", "b.wav"] and plan.counts["deferred_by_limit"] == 1


def test_takedown_lines_resolve_against_the_input_prefix_as_a_folder():
    text = "# legal request 123\na/card2.wav\n  /b/x.flac  # trailing comment\n\n" \
           "s3://other/raw/y.wav\n"
    want = {RAW + "a/card2.wav", RAW + "b/x.flac", "s3://other/raw/y.wav"}
    assert parse_takedowns(text, RAW) == want
    assert parse_takedowns(text, RAW.rstrip("/")) == want  # no trailing slash: same sources
    assert parse_takedowns("k.wav", "s3://b") == {"s3://b/k.wav"}  # the bucket root
