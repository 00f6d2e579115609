"""The command line's help and summary wording: each command lists only the exit codes it can
return; the run summary says what input.limit left for later."""
from __future__ import annotations

import re

import pytest

from pipeline.cli import _parser
from pipeline.errors import COMMAND_EXITS, EXIT_MEANINGS
from pipeline.summary import format_summary


def _help(command: str) -> str:
    sub = next(a for a in _parser()._actions if a.dest == "command")
    return sub.choices[command].format_help()


@pytest.mark.parametrize("command", sorted(COMMAND_EXITS))
def test_each_command_lists_exactly_its_exit_codes(command):
    text = _help(command)
    block = text[text.index("exit codes:"):]
    listed = {int(m) for m in re.findall(r"^\s{2}(\d+)\s", block, flags=re.MULTILINE)}
    assert listed == set(COMMAND_EXITS[command])


def test_status_cannot_claim_run_only_codes():
    text = _help("status")
    assert EXIT_MEANINGS[7] not in text and "SIGTERM" not in text


def _summary(**sources) -> dict:
    return {"run_id": "r1", "status": "succeeded", "inputs": 3, "recordings_annotated": 3,
            "recordings_rejected": 0, "rejected_by_reason": {}, "segments": 0,
            "segments_by_content_type": {}, "segments_kept": 0, "segments_dropped_by_reason": {},
            "audio_hours": 0.0, "segment_hours": 0.0, "wall_s": 1.0, "real_time_factor": None,
            "files": {}, "sources": {"listed": 10, "new": 3, "changed": 0, "unchanged": 0,
                                     "deleted": 0, "takedown": 0, **sources}}


def test_summary_says_what_input_limit_deferred_and_nothing_of_full():
    text = format_summary(_summary(deferred_by_limit=7), "s3://b/out/runs/r1/")
    assert "7 left for a later run by input.limit" in text
    assert "--full" not in text
    assert "left for a later run" not in format_summary(_summary(), "s3://b/out/runs/r1/")


def test_a_missing_optional_package_names_the_extra(monkeypatch, capsys):
    """`pip install audioverse-pipeline` without [audit]: the audit command says what to
    install (exit 2, one line), not a ModuleNotFoundError traceback."""
    import builtins

    from pipeline.cli import main

    real_import = builtins.__import__

    def no_duckdb(name, *args, **kwargs):
        if name == "duckdb" or name.startswith("duckdb."):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_duckdb)
    code = main(["audit", "s3://bucket/out/runs/r1/", "--sql", "SELECT 1",
                 "--config", "configs/local.yaml"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "audioverse-pipeline[audit]" in err and "duckdb" in err
