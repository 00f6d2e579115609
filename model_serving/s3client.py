"""The one place an S3 client is built, and S3 errors are classified.

It lives at the bottom of the import chain because models are fetched from S3 too (registry
entries with source `s3`); operators and the pipeline build their clients here as well.
"""
from __future__ import annotations

import os
import threading
from dataclasses import replace

from schemas.config import StorageConfig
from schemas.errors import EXIT_STORAGE, AudioverseError


class StorageError(AudioverseError):
    """An S3 failure that retries did not fix. `permanent` means retrying will not help
    (bad credentials, missing bucket, unreachable endpoint)."""

    exit_code = EXIT_STORAGE
    kind = "storage error"

    def __init__(self, message: str, permanent: bool = True, unreachable: bool = False):
        super().__init__(message)
        self.permanent = permanent
        # The endpoint did not answer at all. Before a run that is a wrong URL (fail fast);
        # mid-run it is a server restarting, retried like any transient error.
        self.unreachable = unreachable


class ConflictError(StorageError):
    """A conditional write or delete (If-None-Match / If-Match) lost: another writer got there
    first. The caller decides what that means (the run lock does)."""


def resolve_storage(cfg: StorageConfig) -> StorageConfig:
    """Fill unset fields from the standard AWS environment, so workers get explicit values."""
    env = os.environ
    return replace(
        cfg,
        endpoint_url=cfg.endpoint_url or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
        region=cfg.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        access_key_id=cfg.access_key_id or env.get("AWS_ACCESS_KEY_ID"),
        secret_access_key=cfg.secret_access_key or env.get("AWS_SECRET_ACCESS_KEY"),
    )


_SHARED: dict[str, object] = {}
_SHARED_LOCK = threading.Lock()


def shared_s3_client(cfg: StorageConfig):
    """The process's S3 client for these resolved settings (endpoint, region, keys, timeouts),
    built once: building one parses botocore's service models (~0.3 s of CPU), which every Ray
    task that touches S3 would otherwise pay again. boto3 clients are thread-safe. Callers must
    not register event handlers on it (use make_s3_client for a client of your own)."""
    resolved = resolve_storage(cfg)
    key = repr(resolved)  # a frozen dataclass: its repr holds every setting
    with _SHARED_LOCK:
        client = _SHARED.get(key)
        if client is None:
            client = _SHARED[key] = make_s3_client(resolved)
        return client


def make_s3_client(cfg: StorageConfig, session=None):
    """A new boto3 S3 client with bounded timeouts and botocore's retries (throttling, 5xx,
    resets; botocore's max_attempts counts retries, so a request is tried max_attempts + 1
    times). `session`: a boto3 Session to build it from (one that already parsed botocore's
    service model builds a client in ~10 ms instead of ~0.5 s); default a new one."""
    import boto3
    from botocore.config import Config

    cfg = resolve_storage(cfg)
    return (session or boto3.session.Session()).client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        region_name=cfg.region,
        aws_access_key_id=cfg.access_key_id,
        aws_secret_access_key=cfg.secret_access_key,
        config=Config(
            connect_timeout=cfg.connect_timeout_s,
            read_timeout=cfg.read_timeout_s,
            # standard, not adaptive: adaptive's client-side rate limiter slows a client that
            # saw one SlowDown to ~2 requests/s; ObjectStore adds its own backoff window.
            retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


def split_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix")."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in URI: {uri!r}")
    return bucket, key


def classify(exc: Exception, what: str, cfg: StorageConfig) -> StorageError:
    """Turn a botocore exception into a one-line StorageError that says what to fix."""
    from botocore import exceptions as bx

    endpoint = resolve_storage(cfg).endpoint_url or "the default AWS endpoint"
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError)):
        return StorageError(
            f"cannot reach S3 at {endpoint} while {what}: is the server running and is "
            f"storage.endpoint_url (or AWS_ENDPOINT_URL) right?", unreachable=True
        )
    if isinstance(exc, bx.NoCredentialsError):
        return StorageError(
            f"no S3 credentials found while {what}: set storage.access_key_id/secret_access_key "
            f"or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, bx.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                    "ExpiredToken"):
            return StorageError(
                f"S3 at {endpoint} rejected the credentials ({code}) while {what}: check "
                f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or storage.* keys in the config)"
            )
        if code in ("AccessDenied", "403") or status == 403:
            return StorageError(
                f"access denied by S3 at {endpoint} while {what}: the credentials lack "
                f"permission, or are wrong"
            )
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
            return ConflictError(f"conditional request lost ({code or status}) while {what}")
        if code in ("NoSuchBucket",):
            return StorageError(
                f"bucket does not exist at {endpoint} while {what}: create it or fix the URI"
            )
        if code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout") or (
            status is not None and status >= 500
        ):
            return StorageError(f"S3 at {endpoint} kept failing ({code}) while {what}",
                                permanent=False)
        return StorageError(f"S3 error {code or status} at {endpoint} while {what}: {exc}")
    if isinstance(exc, (bx.ReadTimeoutError, bx.ConnectionClosedError, bx.ResponseStreamingError)):
        return StorageError(f"S3 at {endpoint} kept timing out while {what}", permanent=False)
    return StorageError(f"S3 failure at {endpoint} while {what}: {exc}", permanent=False)
