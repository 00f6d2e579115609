"""Exit codes a scheduler can act on, and the base class of every user-facing error.

Each error a user (or the storage, a model, an endpoint) can cause is an `AudioverseError`
subclass carrying its exit code and the word the CLI prints before its message; the CLI maps
them in one place for every command (pipeline/cli.py). Anything else is a bug: exit 1 with its
traceback. The classes live where they are raised (model_serving/s3client.py StorageError, ...);
this module is the bottom of the import graph, so every layer can use it.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1        # a bug: the traceback is in the log
EXIT_CONFIG = 2          # bad config file, key, value or command line
EXIT_STORAGE = 3         # S3 unreachable, bad credentials, missing bucket, or a write that failed
EXIT_TOO_MANY_FAILED = 4 # the run completed, but more inputs were rejected than allowed
EXIT_MODEL = 5           # a model is missing or corrupt
EXIT_ENDPOINT = 6        # a model endpoint (the captioner) is unreachable or died mid-run
EXIT_LOCKED = 7          # another run holds the dataset's lock (or took it over from this one)
EXIT_SIGINT = 130        # interrupted by SIGINT (128 + 2)
EXIT_SIGTERM = 143       # interrupted by SIGTERM (128 + 15)


class AudioverseError(Exception):
    """A failure the user can act on: the CLI prints `audioverse: <kind>: <message>` as one line
    and exits with `exit_code`."""

    exit_code: int = EXIT_INTERNAL
    kind: str = "error"


class ConfigError(AudioverseError):
    """A config file, key, value or command-line argument is wrong; the message says which."""

    exit_code = EXIT_CONFIG
    kind = "config error"
