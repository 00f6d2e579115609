"""A clean stop on SIGTERM and SIGINT for `run` and `release`.

Kubernetes sends SIGTERM on eviction or when a RayJob hits its deadline, then SIGKILL after the
grace period (30 s by default); an operator sends SIGINT with Ctrl-C. On the first signal the
main thread gets `Interrupted` at its next Python instruction (a BaseException, so no
`except Exception` on the way swallows it): scheduling stops, the `with` blocks unwind (the
embedded caption server stops, Ray shuts down, the run lock is released) and the staging area is
left as it is, so the same `--run-id` resumes. The CLI then prints one line and exits 143 (TERM)
or 130 (INT). Should unwinding hang, a watchdog exits with the same code after `grace_s`; a second
signal exits at once.

Ray's core worker installs its own handler for SIGTERM in the driver (it prints a stack trace and
aborts: exit 134), so `after_ray_init()` takes it back right after `ray.init`.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_S = 25.0  # inside Kubernetes' default 30 s terminationGracePeriodSeconds


class Interrupted(BaseException):
    """The process got SIGTERM or SIGINT; `exit_code` is 128 + the signal number."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        self.name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.name}")


_received: int | None = None


def _handle(signum: int, frame) -> None:
    global _received
    if _received is not None:
        print(f"audioverse: {signal.Signals(signum).name} again: exiting now", file=sys.stderr,
              flush=True)
        os._exit(128 + signum)
    _received = signum
    watchdog = threading.Timer(GRACE_S, _give_up, args=(signum,))
    watchdog.daemon = True
    watchdog.start()
    raise Interrupted(signum)


def _give_up(signum: int) -> None:
    print(f"audioverse: interrupted by {signal.Signals(signum).name}; shutting down took over "
          f"{GRACE_S:.0f}s: exiting now", file=sys.stderr, flush=True)
    os._exit(128 + signum)


_active = False
# Set at a command's commit point: an interrupt after it must not tell the user to resume.
_committed_note: str | None = None


def note_committed(message: str) -> None:
    """The command has committed (summary.json / manifest.json written): `message` is what an
    interrupt from now on means (the CLI prints it instead of its resume hint)."""
    global _committed_note
    _committed_note = message


def committed_note() -> str | None:
    return _committed_note


@contextmanager
def handled() -> Iterator[None]:
    """Handle SIGTERM and SIGINT as above inside the block (the CLI's `run` and `release`);
    the previous handlers come back afterwards."""
    global _active, _received, _committed_note
    _committed_note = None
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be set from the main thread
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    _active, _received = True, None
    _install()
    try:
        yield
    finally:
        _active = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def after_ray_init() -> None:
    """Take SIGTERM back from Ray's core worker (called right after `ray.init`)."""
    if _active and threading.current_thread() is threading.main_thread():
        _install()


def _install() -> None:
    for sig in SIGNALS:
        signal.signal(sig, _handle)
