"""Object storage as the pipeline uses it: list a prefix, read an object pinned to its ETag,
write and delete, conditional writes for the run lock. All failures surface as StorageError with
a message that says what to fix.

Transient failures (503 SlowDown, 5xx, connection resets, a server restarting) are retried with
capped exponential backoff for `storage.retry_window_s`, on top of botocore's own attempts, so a
nightly run rides out a storage hiccup. Permanent ones (bad credentials, access denied, a missing
bucket or key) are raised at once. `check_bucket`, the preflight, does not wait for an endpoint
that does not answer: before a run that is a wrong URL, not a restart.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from model_serving.s3client import (ConflictError, StorageError, classify, shared_s3_client,
                                    split_uri)
from schemas.config import StorageConfig

__all__ = ["ConflictError", "ObjectInfo", "ObjectStore", "StorageError", "split_uri"]

log = logging.getLogger("audioverse.storage")
T = TypeVar("T")


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    etag: str
    size: int
    version_id: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class ObjectStore:
    """`reached`: the server has answered before (this store, or the driver that started the
    workers using it). Only then is an endpoint that does not answer a restart worth waiting
    for; on first contact it is a wrong URL, reported at once."""

    def __init__(self, cfg: StorageConfig, sleep: Callable[[float], None] = time.sleep,
                 reached: bool = False):
        self.cfg = cfg
        self._client = None
        self._sleep = sleep
        self.reached = reached
        self.retries = 0  # transient failures retried by this store (for logs and tests)

    @property
    def client(self):
        if self._client is None:  # built lazily: a store is pickled into Ray workers
            self._client = shared_s3_client(self.cfg)
        return self._client

    def __getstate__(self):
        return {"cfg": self.cfg, "_client": None, "_sleep": time.sleep, "retries": 0,
                "reached": self.reached}

    def _call(self, what: str, fn: Callable[[], T], retry_unreachable: bool = True) -> T:
        """fn() with transient failures retried for storage.retry_window_s."""
        deadline = time.monotonic() + self.cfg.retry_window_s
        attempt = 0
        while True:
            try:
                result = fn()
                self.reached = True
                return result
            except StorageError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified into a StorageError
                err = classify(exc, what, self.cfg)
                transient = not err.permanent or \
                    (err.unreachable and retry_unreachable and self.reached)
                if not transient or time.monotonic() >= deadline:
                    raise err from exc
                delay = min(8.0, 0.5 * 2 ** attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                self.retries += 1
                log.warning("transient S3 failure while %s (%s); retry %d in %.1fs", what,
                            err, attempt, delay)
                self._sleep(min(delay, max(0.0, deadline - time.monotonic())))

    def check_bucket(self, uri: str) -> None:
        """Fail fast with a clear message if the endpoint, the keys or the bucket are wrong."""
        bucket, prefix = split_uri(uri)
        self._call(f"checking {uri}",
                   lambda: self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1),
                   retry_unreachable=False)

    def list(self, uri: str) -> list[ObjectInfo]:
        """Objects under an s3:// prefix, in key order (a failed page restarts the listing)."""
        bucket, prefix = split_uri(uri)

        def listing() -> list[ObjectInfo]:
            out = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    out.append(ObjectInfo(bucket, obj["Key"], obj["ETag"].strip('"'),
                                          int(obj["Size"])))
            return out

        return self._call(f"listing {uri}", listing)

    def list_pages(self, uri: str, direct_only: bool = False):
        """Objects under an s3:// prefix, one page (up to 1000) at a time, in key order: a
        listing of millions of objects never sits in one process. Each page is retried on its
        own (continuation token), so a storage hiccup does not restart the listing.
        `direct_only`: only the objects directly under the prefix, not in a "directory"."""
        bucket, prefix = split_uri(uri)
        token = None
        while True:
            kwargs = {"Bucket": bucket, "Prefix": prefix}
            if direct_only:
                kwargs["Delimiter"] = "/"
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(f"listing {uri}",
                              lambda: self.client.list_objects_v2(**kwargs))
            yield [ObjectInfo(bucket, o["Key"], o["ETag"].strip('"'), int(o["Size"]))
                   for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def any_under(self, uri: str) -> bool:
        """Whether any object is under a prefix (one key listed at most)."""
        bucket, prefix = split_uri(uri)
        return bool(self._call(f"listing {uri}", lambda: self.client.list_objects_v2(
            Bucket=bucket, Prefix=prefix, MaxKeys=1)).get("KeyCount", 0))

    def list_dirs(self, uri: str) -> list[str]:
        """The names of the "directories" directly under an s3:// prefix (a delimiter listing:
        one entry per child prefix, not one per object under it)."""
        bucket, prefix = split_uri(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""

        def listing() -> list[str]:
            out = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
                out += [p["Prefix"][len(prefix):].rstrip("/")
                        for p in page.get("CommonPrefixes", [])]
            return out

        return self._call(f"listing {uri}", listing)

    def get(self, uri: str, etag: str | None = None) -> bytes:
        """The object's bytes; with `etag`, the exact version that was listed (IfMatch), so a
        source replaced mid-run is an error rather than silently different audio."""
        bucket, key = split_uri(uri)
        kwargs = {"IfMatch": f'"{etag}"'} if etag else {}
        return self._call(f"reading {uri}", lambda: self.client.get_object(
            Bucket=bucket, Key=key, **kwargs)["Body"].read())

    def get_range(self, uri: str, length: int) -> bytes:
        """The first `length` bytes of an object (a header, for estimates)."""
        bucket, key = split_uri(uri)
        return self._call(f"reading {uri}", lambda: self.client.get_object(
            Bucket=bucket, Key=key, Range=f"bytes=0-{length - 1}")["Body"].read())

    def get_versioned(self, uri: str) -> tuple[bytes, str] | None:
        """(bytes, ETag) of an object, or None if it does not exist."""
        bucket, key = split_uri(uri)

        def read():
            try:
                reply = self.client.get_object(Bucket=bucket, Key=key)
            except Exception as exc:  # noqa: BLE001
                if _missing(exc):
                    return None
                raise
            return reply["Body"].read(), reply["ETag"]

        return self._call(f"reading {uri}", read)

    def exists(self, uri: str) -> bool:
        bucket, key = split_uri(uri)

        def head() -> bool:
            try:
                self.client.head_object(Bucket=bucket, Key=key)
                return True
            except Exception as exc:  # noqa: BLE001
                if _missing(exc):
                    return False
                raise

        return self._call(f"checking {uri}", head)

    def put(self, uri: str, body: bytes, content_type: str = "application/octet-stream",
            if_none_match: bool = False, if_match: str | None = None) -> str:
        """Write an object; returns its ETag. `if_none_match`: only if it does not exist;
        `if_match`: only if its ETag is still this one. A lost condition is a ConflictError."""
        bucket, key = split_uri(uri)
        kwargs = {}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match:
            kwargs["IfMatch"] = if_match
        return self._call(f"writing {uri}", lambda: self.client.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType=content_type, **kwargs)["ETag"])

    def delete(self, uri: str, if_match: str | None = None) -> None:
        """Delete one object (a missing one is fine)."""
        bucket, key = split_uri(uri)
        kwargs = {"IfMatch": if_match} if if_match else {}

        def delete():
            try:
                self.client.delete_object(Bucket=bucket, Key=key, **kwargs)
            except Exception as exc:  # noqa: BLE001
                if not _missing(exc):
                    raise

        self._call(f"deleting {uri}", delete)

    def delete_prefix(self, uri: str) -> int:
        """Delete every object under a prefix; returns how many."""
        keys = [o.key for o in self.list(uri)]
        bucket, _ = split_uri(uri)
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            self._call(f"deleting under {uri}", lambda: self.client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}))
        return len(keys)
