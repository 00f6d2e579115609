"""Structured log lines: `ts level run=<id> stage=<stage> message`, one per line, on stderr."""
from __future__ import annotations

import logging
import sys
import time

_run_id = "-"


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = _run_id
        if not hasattr(record, "stage"):
            name = record.name.rsplit(".", 1)[-1]
            record.stage = name if record.name.startswith("audioverse.stage.") else "driver"
        return True


class _Formatter(logging.Formatter):
    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%SZ")
        line = (f"{ts} {record.levelname.lower():<7} run={record.run_id} "
                f"stage={record.stage} {record.getMessage()}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def ensure_worker_logging(run_id: str | None) -> None:
    """In a Ray worker: the same line format, tagged with the run id of the batch at hand."""
    if run_id:
        set_run_id(run_id)
    if not logging.getLogger("audioverse").handlers:
        setup_logging("INFO")


class _CurrentStderr(logging.StreamHandler):
    """Writes to sys.stderr as it is at each record, not as it was at set-up (a test harness
    that swaps stderr and closes the old one must not break later log lines)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(level: str = "INFO") -> None:
    handler = _CurrentStderr()
    handler.setFormatter(_Formatter())
    handler.addFilter(_Context())
    root = logging.getLogger("audioverse")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def set_run_id(run_id: str) -> None:
    global _run_id
    _run_id = run_id


def stage_logger(stage: str) -> logging.LoggerAdapter:
    return logging.LoggerAdapter(logging.getLogger("audioverse"), {"stage": stage})
