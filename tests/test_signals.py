"""SIGTERM / SIGINT handling (pipeline/signals.py) in a process of its own: the first signal
unwinds the main thread (cleanup runs) and exits 143 / 130; a second signal during a cleanup
that hangs exits at once. The whole `audioverse run` under SIGTERM, resumed afterwards, is in
tests/test_nightly.py."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT

SCRIPT = """
import sys, time
from pipeline.signals import Interrupted, handled

hang = sys.argv[1] == "hang"
try:
    with handled():
        try:
            print("ready", flush=True)  # inside the try: a signal right after it unwinds here
            while True:
                time.sleep(0.05)
        finally:
            print("cleanup", flush=True)
            if hang:
                time.sleep(60)
except Interrupted as exc:
    print(f"stopped by {exc.name}", flush=True)
    sys.exit(exc.exit_code)
"""


def start(mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, mode], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_first_signal_unwinds_cleanly_with_its_exit_code(sig, code):
    proc = start("normal")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == code, err
    assert out.split() == ["cleanup", "stopped", "by", signal.Signals(sig).name]
    assert "Traceback" not in err


def test_a_second_signal_exits_at_once_when_cleanup_hangs():
    proc = start("hang")
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline().strip() == "cleanup"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 143 and time.monotonic() - t0 < 5
    assert "SIGTERM again: exiting now" in err


def test_handlers_are_restored_after_the_block():
    from pipeline.signals import handled

    before = signal.getsignal(signal.SIGTERM)
    with handled():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_interrupt_after_the_commit_point_does_not_say_resume(monkeypatch, capsys):
    """SIGTERM between the commit (summary.json written) and the exit: the line must say the
    run committed, not tell the user to resume it; the next command starts without the note."""
    import pipeline.cli as cli
    from pipeline.signals import Interrupted, note_committed

    def run(args, commit):
        args.resume_hint = "run r1 stopped before it committed; resume with: --run-id r1"
        if commit:
            note_committed("run r1 had already committed (s3://b/out/runs/r1/summary.json)")
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(cli, "_run", lambda args: run(args, commit=True))
    assert cli.main(["status", "configs/local.yaml"]) == 143
    err = capsys.readouterr().err
    assert "had already committed" in err and "resume with" not in err
    monkeypatch.setattr(cli, "_run", lambda args: run(args, commit=False))
    assert cli.main(["status", "configs/local.yaml"]) == 143
    err = capsys.readouterr().err
    assert "resume with" in err and "had already committed" not in err
