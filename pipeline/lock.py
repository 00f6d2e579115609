"""One run at a time per dataset: a lock object in S3, `<output.uri>/_lock/run.json`.

Taken with a conditional create (If-None-Match: *), renewed by a heartbeat thread with a
conditional overwrite (If-Match: the ETag we wrote), released with a conditional delete. A lock
whose heartbeat is older than `run.lock_ttl_s` belongs to a dead run; so does one written on this
host by a process that no longer exists. Either is taken over, again with If-Match, so two runs
racing for a stale lock cannot both win. A run that loses its lock (another run took it over
after our heartbeat stalled past the ttl) stops before it publishes anything.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from operators.storage import ConflictError, ObjectStore
from schemas.errors import EXIT_LOCKED, AudioverseError
from schemas.layout import Layout

log = logging.getLogger("audioverse.lock")



class LockHeld(AudioverseError):
    """Another live run holds the dataset's lock."""

    exit_code = EXIT_LOCKED
    kind = "lock"


class LockLost(AudioverseError):
    """Our lock was taken over by another run (our heartbeat stalled past the ttl)."""

    exit_code = EXIT_LOCKED
    kind = "lock"


def lock_uri(output_uri: str) -> str:
    return Layout(output_uri).lock


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pid_alive(pid: int) -> bool:
    """Whether a process of this host is running (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie answers kill(0) but is dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_lock(store: ObjectStore, output_uri: str) -> tuple[dict, str] | None:
    """(lock body, ETag) or None when no run holds the lock."""
    got = store.get_versioned(lock_uri(output_uri))
    if got is None:
        return None
    body, etag = got
    return json.loads(body), etag


def stale_reason(holder: dict, now: float | None = None) -> str | None:
    """Why the holder is dead, or None if it may be alive."""
    now = time.time() if now is None else now
    if now > holder["expires_at"]:
        return f"its heartbeat stopped at {_iso(holder['heartbeat_at'])}"
    if holder.get("host") == socket.gethostname() and not pid_alive(int(holder["pid"])):
        return f"its process {holder['pid']} on this host is gone"
    return None


def describe(holder: dict) -> str:
    return (f"run {holder['run_id']} (host {holder['host']}, pid {holder['pid']}, since "
            f"{_iso(holder['acquired_at'])}, last heartbeat {_iso(holder['heartbeat_at'])}, "
            f"expires {_iso(holder['expires_at'])})")


class RunLock:
    def __init__(self, store: ObjectStore, output_uri: str, run_id: str, ttl_s: float):
        self.store = store
        self.output_uri = output_uri
        self.uri = lock_uri(output_uri)
        self.run_id = run_id
        self.ttl_s = ttl_s
        self.token = uuid.uuid4().hex     # tells our own write apart from anyone else's
        self.etag: str | None = None
        self.taken_over: dict | None = None  # the dead holder we replaced, if any
        self.lost = False
        self._acquired_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({
            "run_id": self.run_id, "token": self.token, "host": socket.gethostname(),
            "pid": os.getpid(), "acquired_at": self._acquired_at, "heartbeat_at": now,
            "expires_at": now + self.ttl_s, "ttl_s": self.ttl_s,
        }, indent=2).encode()

    def _ours(self) -> bool:
        """After a conditional write failed: did an earlier attempt of it land (a reply lost
        to a reset)? Then the lock is ours and the new ETag is adopted."""
        current = read_lock(self.store, self.output_uri)
        if current and current[0].get("token") == self.token:
            self.etag = current[1]
            return True
        return False

    def acquire(self) -> "RunLock":
        self._acquired_at = time.time()
        for _ in range(5):
            try:
                self.etag = self.store.put(self.uri, self._body(), "application/json",
                                           if_none_match=True)
                break
            except ConflictError:
                if self._ours():
                    break
            current = read_lock(self.store, self.output_uri)
            if current is None:
                continue  # released meanwhile: try again
            holder, etag = current
            why = stale_reason(holder)
            if why is None:
                raise LockHeld(f"another run holds the lock {self.uri}: {describe(holder)}. "
                               f"Nightly runs over one dataset must not overlap; if that run "
                               f"is dead, its lock expires at {_iso(holder['expires_at'])} "
                               f"and the next run takes it over")
            try:
                self.etag = self.store.put(self.uri, self._body(), "application/json",
                                           if_match=etag)
            except ConflictError:
                if not self._ours():
                    continue  # someone else took it over first: look again
            self.taken_over = holder
            log.warning("took over the lock of dead run %s: %s", holder["run_id"], why)
            break
        else:
            raise LockHeld(f"could not take the lock {self.uri}: it kept changing hands")
        self._thread = threading.Thread(target=self._heartbeat, name="run-lock", daemon=True)
        self._thread.start()
        log.info("lock %s taken by run %s (ttl %.0fs)", self.uri, self.run_id, self.ttl_s)
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except LockLost as exc:
                log.error("%s", exc)
                return
            except Exception as exc:  # noqa: BLE001 - storage trouble: try again next beat
                log.warning("could not renew the run lock: %s", exc)

    def renew(self) -> None:
        try:
            self.etag = self.store.put(self.uri, self._body(), "application/json",
                                       if_match=self.etag)
        except ConflictError:
            if not self._ours():
                self.lost = True
                raise LockLost(f"run {self.run_id} lost the lock {self.uri} to another run "
                               f"(our heartbeat stalled past run.lock_ttl_s={self.ttl_s:.0f}s)")

    def check(self) -> None:
        """Raise LockLost if another run took the lock over; call before publishing."""
        if self.lost:
            raise LockLost(f"run {self.run_id} lost the lock {self.uri}; not publishing")
        self.renew()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.etag and not self.lost:
            try:
                self.store.delete(self.uri, if_match=self.etag)
            except ConflictError:
                log.warning("lock %s changed hands before release; left as it is", self.uri)
            except Exception as exc:  # noqa: BLE001 - it expires on its own
                log.warning("could not release the run lock (it expires on its own): %s", exc)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
