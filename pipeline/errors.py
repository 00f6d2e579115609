"""Exit codes and user-facing errors (defined in schemas/errors.py, re-exported for the pipeline),
and finding a user-facing error inside what Ray hands back."""
from __future__ import annotations

import re

from schemas.errors import (EXIT_CONFIG, EXIT_ENDPOINT, EXIT_INTERNAL, EXIT_LOCKED,
                            EXIT_MODEL, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_STORAGE,
                            EXIT_TOO_MANY_FAILED, AudioverseError, ConfigError)

__all__ = ["EXIT_CONFIG", "EXIT_ENDPOINT", "EXIT_INTERNAL", "EXIT_LOCKED", "EXIT_MODEL", "EXIT_OK",
           "EXIT_SIGINT", "EXIT_SIGTERM", "EXIT_STORAGE", "EXIT_TOO_MANY_FAILED",
           "AudioverseError", "ConfigError", "find_cause", "exit_codes_help", "COMMAND_EXITS"]

# What each exit code means, for --help; COMMAND_EXITS says which codes each command can return.
EXIT_MEANINGS = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error (a bug; the traceback is in the log)",
    EXIT_CONFIG: "config error (bad file, unknown key, wrong type, bad --set or argument)",
    EXIT_STORAGE: "storage error (endpoint unreachable, bad credentials, missing bucket, "
                  "failed write)",
    EXIT_TOO_MANY_FAILED: "the run finished but more inputs were rejected than "
                          "run.max_failed_fraction allows",
    EXIT_MODEL: "model error (a registry entry whose files are missing or corrupt)",
    EXIT_ENDPOINT: "endpoint error (the caption endpoint is unreachable, serves another "
                   "model, or died)",
    EXIT_LOCKED: "another run holds the dataset's lock (runs over one output.uri never overlap)",
    EXIT_SIGINT: "interrupted by SIGINT (Ctrl-C)",
    EXIT_SIGTERM: "interrupted by SIGTERM",
}
_INTERRUPTS = (EXIT_SIGINT, EXIT_SIGTERM)
COMMAND_EXITS = {
    "run": (EXIT_OK, EXIT_INTERNAL, EXIT_CONFIG, EXIT_STORAGE, EXIT_TOO_MANY_FAILED, EXIT_MODEL,
            EXIT_ENDPOINT, EXIT_LOCKED, *_INTERRUPTS),
    "status": (EXIT_OK, EXIT_INTERNAL, EXIT_CONFIG, EXIT_STORAGE),
    "release": (EXIT_OK, EXIT_INTERNAL, EXIT_CONFIG, EXIT_STORAGE, EXIT_MODEL, *_INTERRUPTS),
    "audit": (EXIT_OK, EXIT_INTERNAL, EXIT_CONFIG, EXIT_STORAGE),
    "models": (EXIT_OK, EXIT_INTERNAL, EXIT_CONFIG, EXIT_STORAGE, EXIT_MODEL),
}
_EXTRA = {
    ("run", EXIT_SIGTERM): "; run stops within 30 s, releases the lock and keeps what is saved; "
                           "the same --run-id resumes",
    ("release", EXIT_SIGTERM): "; nothing of the release is published; the same --release-id "
                               "builds it",
    ("audit", EXIT_CONFIG): ", or an SQL error in --sql",
    ("audit", EXIT_STORAGE): ", or nothing committed at the URI",
}


def exit_codes_help(command: str | None = None) -> str:
    """The "exit codes:" block of one command's --help (all codes for the top-level --help)."""
    codes = COMMAND_EXITS[command] if command else tuple(EXIT_MEANINGS)
    lines = ["exit codes:"]
    lines += [f"  {code:<3}  {EXIT_MEANINGS[code]}{_EXTRA.get((command, code), '')}"
              for code in codes]
    return "\n".join(lines) + "\n"


def find_cause(exc: BaseException, kinds: tuple[type, ...]) -> BaseException | None:
    """The first exception of `kinds` in `exc`'s chain. An exception raised in a Ray worker
    reaches the driver as RayTaskError(UserCodeException) whose chain no longer holds the
    original object, only its traceback text; there, the line `<module>.<Class>: <message>`
    is turned back into an instance of that class carrying the message."""
    seen = set()
    stack = [exc]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, kinds):
            return cur
        stack += [cur.__cause__, cur.__context__, getattr(cur, "cause", None)]
    by_name = {k.__name__: k for k in kinds}
    for subclass in {s for k in kinds for s in _subclasses(k)}:
        by_name.setdefault(subclass.__name__, subclass)
    text = str(exc)
    found = None
    for match in re.finditer(r"^(?:[\w.]+\.)?(\w+): (.+)$", text, flags=re.MULTILINE):
        cls = by_name.get(match.group(1))
        if cls is not None:
            found = Exception.__new__(cls)
            Exception.__init__(found, match.group(2).strip())
    return found  # the last one: the innermost, original error


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out
