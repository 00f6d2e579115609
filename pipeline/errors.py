"""Exit codes a scheduler can act on, and the user-facing errors that map to them."""
from __future__ import annotations

import re

EXIT_OK = 0
EXIT_INTERNAL = 1        # a bug: the traceback is in the log
EXIT_CONFIG = 2          # bad config file, key, value or command line
EXIT_STORAGE = 3         # S3 unreachable, bad credentials, missing bucket, or a write that failed
EXIT_TOO_MANY_FAILED = 4 # the run completed, but more inputs were rejected than allowed
EXIT_MODEL = 5           # a model is missing or corrupt
EXIT_ENDPOINT = 6        # a model endpoint (the captioner) is unreachable or died mid-run
EXIT_LOCKED = 7          # another run holds the dataset's lock (or took it over from this one)


class ConfigError(Exception):
    """A config file, key, value or command-line argument is wrong; the message says which."""


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
