"""Exit codes and user-facing errors (defined in schemas/errors.py, re-exported for the pipeline),
and finding a user-facing error inside what Ray hands back."""
from __future__ import annotations

import re

from schemas.errors import (EXIT_CONFIG, EXIT_ENDPOINT, EXIT_INTERNAL, EXIT_LOCKED,
                            EXIT_MODEL, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_STORAGE,
                            EXIT_TOO_MANY_FAILED, AudioverseError, ConfigError)

__all__ = ["EXIT_CONFIG", "EXIT_ENDPOINT", "EXIT_INTERNAL", "EXIT_LOCKED", "EXIT_MODEL", "EXIT_OK",
           "EXIT_SIGINT", "EXIT_SIGTERM", "EXIT_STORAGE", "EXIT_TOO_MANY_FAILED",
           "AudioverseError", "ConfigError", "find_cause"]


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
