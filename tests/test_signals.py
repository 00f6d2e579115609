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
