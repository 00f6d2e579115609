"""Exit codes a scheduler can act on, and the user-facing errors that map to them."""
from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1        # a bug: the traceback is in the log
EXIT_CONFIG = 2          # bad config file, key, value or command line
EXIT_STORAGE = 3         # S3 unreachable, bad credentials, missing bucket, or a write that failed
EXIT_TOO_MANY_FAILED = 4 # the run completed, but more inputs were rejected than allowed
EXIT_MODEL = 5           # a model is missing or corrupt


class ConfigError(Exception):
    """A config file, key, value or command-line argument is wrong; the message says which."""
