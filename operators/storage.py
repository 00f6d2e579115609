"""Object storage as the pipeline uses it: list a prefix, read an object pinned to its ETag,
write and delete. All failures surface as StorageError with a message that says what to fix."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from model_serving.s3client import StorageError, classify, make_s3_client, split_uri
from schemas.config import StorageConfig

__all__ = ["ObjectInfo", "ObjectStore", "StorageError", "split_uri"]


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


class ObjectStore:
    def __init__(self, cfg: StorageConfig):
        self.cfg = cfg
        self._client = None

    @property
    def client(self):
        if self._client is None:  # built lazily: a store is pickled into Ray workers
            self._client = make_s3_client(self.cfg)
        return self._client

    def __getstate__(self):
        return {"cfg": self.cfg, "_client": None}

    def _fail(self, exc: Exception, what: str) -> StorageError:
        return classify(exc, what, self.cfg)

    def check_bucket(self, uri: str) -> None:
        """Fail fast with a clear message if the endpoint, the keys or the bucket are wrong."""
        bucket, prefix = split_uri(uri)
        try:
            self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except Exception as exc:  # noqa: BLE001 - classified into a StorageError
            raise self._fail(exc, f"checking {uri}") from exc

    def list(self, uri: str) -> Iterator[ObjectInfo]:
        """Objects under an s3:// prefix, in key order."""
        bucket, prefix = split_uri(uri)
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(bucket, obj["Key"], obj["ETag"].strip('"'), int(obj["Size"]))
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, f"listing {uri}") from exc

    def get(self, uri: str, etag: str | None = None) -> bytes:
        """The object's bytes; with `etag`, the exact version that was listed (IfMatch), so a
        source replaced mid-run is an error rather than silently different audio."""
        bucket, key = split_uri(uri)
        kwargs = {"IfMatch": f'"{etag}"'} if etag else {}
        try:
            return self.client.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, f"reading {uri}") from exc

    def exists(self, uri: str) -> bool:
        bucket, key = split_uri(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
            return True
        except Exception as exc:  # noqa: BLE001
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail(exc, f"checking {uri}") from exc

    def put(self, uri: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        bucket, key = split_uri(uri)
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, f"writing {uri}") from exc

    def delete_prefix(self, uri: str) -> int:
        """Delete every object under a prefix; returns how many."""
        keys = [o.key for o in self.list(uri)]
        bucket, _ = split_uri(uri)
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            try:
                self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
                )
            except Exception as exc:  # noqa: BLE001
                raise self._fail(exc, f"deleting under {uri}") from exc
        return len(keys)
