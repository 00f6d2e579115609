"""Byte-range reading of release shards for `pipeline.reader` (trainer side; imports only
numpy, pyarrow and the boto3-based store).

A shard is never downloaded whole here (except for `verify_checksums`, which must hash it):

* its Parquet footer comes from one ranged GET of the object's tail (`Range: bytes=-64KiB`, a
  second GET only if the footer is larger), pinned to the ETag seen there (If-Match), so a shard
  replaced mid-epoch is an error instead of a torn read;
* a row group is read by GETting only the column chunks of the columns asked for (neighbouring
  chunks coalesced into one request) and decoding them with pyarrow through `_SparseFile`, a
  file object that serves exactly the byte ranges fetched; any other read is counted as a miss
  (the tests assert there are none) and fetched on demand rather than failing.

`Prefetcher` runs the fetching and decoding on a background thread, at most
`prefetch_row_groups` row groups ahead of the consumer, so memory is bounded by a few row groups
and not by a shard.
"""
from __future__ import annotations

import io
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from model_serving.s3client import make_s3_client, split_uri
from operators.storage import ObjectStore
from schemas.config import StorageConfig

TAIL_BYTES = 64 * 1024   # one GET gets the footer of most shards
COALESCE_GAP = 8 * 1024   # column chunks closer than this are fetched by one GET (as pyarrow)

_CLIENTS: dict[tuple[int, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()
_SESSION: list[Any] = []


def _new_client(cfg: StorageConfig):
    """make_s3_client's client (same timeouts, retries, path addressing), from one boto3
    Session per interpreter: the Session caches botocore's parsed service model, so a DataLoader
    worker forked from the trainer gets a client with connections of its own in ~10 ms instead
    of ~0.5-1 s. Call under _CLIENTS_LOCK."""
    import boto3

    if not _SESSION:
        _SESSION.append(boto3.session.Session())
    return make_s3_client(cfg, session=_SESSION[0])


class ReaderStore(ObjectStore):
    """ObjectStore with ranged reads and counters, on an S3 client of this process.

    The process-wide shared client (model_serving.s3client) would be inherited by DataLoader
    workers forked from the trainer, open connections included; a client is built per process
    id instead (boto3 clients are thread-safe, so the prefetch thread shares it)."""

    def __init__(self, cfg: StorageConfig,
                 on_get: Callable[[str, str, int, int], None] | None = None):
        super().__init__(cfg)
        # Instrumentation hook, per GET: (uri, kind, first byte, bytes); kind is "footer",
        # "range" (column chunks) or "whole" (verify_checksums).
        self.on_get = on_get
        self.gets = 0
        self.bytes_read = 0
        self.footer_bytes = 0

    @property
    def client(self):
        if self._client is None:
            key = (os.getpid(), repr(self.cfg))
            with _CLIENTS_LOCK:
                if key not in _CLIENTS:
                    _CLIENTS[key] = _new_client(self.cfg)
                self._client = _CLIENTS[key]
        return self._client

    def _count(self, uri: str, kind: str, first: int, n: int) -> None:
        self.gets += 1
        self.bytes_read += n
        if kind == "footer":
            self.footer_bytes += n
        if self.on_get is not None:
            self.on_get(uri, kind, first, n)

    def read_range(self, uri: str, start: int, end: int, etag: str | None = None,
                   kind: str = "range") -> bytes:
        """Bytes [start, end) of an object; with `etag`, of that version only."""
        bucket, key = split_uri(uri)
        extra = {"IfMatch": f'"{etag}"'} if etag else {}
        data = self._call(
            f"reading bytes {start}-{end - 1} of {uri}", lambda: self.client.get_object(
                Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", **extra)["Body"].read())
        if len(data) != end - start:
            raise ValueError(f"{uri}: asked for {end - start} bytes at {start}, got {len(data)}; "
                             f"the object is shorter than its Parquet footer says (damaged?)")
        self._count(uri, kind, start, len(data))
        return data

    def read_tail(self, uri: str, n: int) -> tuple[bytes, int, str]:
        """The last n bytes (all of a smaller object), the object's size and its ETag."""
        bucket, key = split_uri(uri)
        resp = self._call(f"reading the footer of {uri}", lambda: self._tail(bucket, key, n))
        data = resp["Body"].read()
        size = int(resp["ContentRange"].rsplit("/", 1)[1]) if resp.get("ContentRange") \
            else len(data)
        self._count(uri, "footer", size - len(data), len(data))
        return data, size, resp["ETag"].strip('"')

    def _tail(self, bucket: str, key: str, n: int):
        return self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{n}")

    def read_whole(self, uri: str) -> bytes:
        data = self.get(uri)
        self._count(uri, "whole", 0, len(data))
        return data


class _SparseFile(io.RawIOBase):
    """A read-only, seekable file of `size` bytes of which only some ranges are held; pyarrow
    reads a row group through it. A read outside the held ranges is fetched with `fetch` and
    counted in `misses` (it means the planned ranges were incomplete)."""

    def __init__(self, size: int, pieces: list[tuple[int, bytes]],
                 fetch: Callable[[int, int], bytes]):
        super().__init__()
        self.size = size
        self.pieces = sorted(pieces)
        self._starts = [p[0] for p in self.pieces]
        self.fetch = fetch
        self.pos = 0
        self.misses = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        out = self._slice(self.pos, end)
        self.pos = end
        return out

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def _slice(self, start: int, end: int) -> bytes:
        if start >= end:
            return b""
        i = int(np.searchsorted(self._starts, start, side="right")) - 1
        if i >= 0:
            p0, data = self.pieces[i]
            if start >= p0 and end <= p0 + len(data):
                return data[start - p0:end - p0]
        self.misses += 1
        return self.fetch(start, end)


def coalesce(ranges: Iterable[tuple[int, int]], gap: int = COALESCE_GAP,
             barriers: Iterable[tuple[int, int]] = ()) -> list[list[int]]:
    """Sorted byte ranges merged where they touch or are at most `gap` apart, unless a barrier
    range (bytes that must not be read) lies in between."""
    walls = sorted(barriers)
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + gap and not any(out[-1][1] <= lo and hi <= a
                                                      for lo, hi in walls):
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


@dataclass
class ShardFile:
    """One shard's footer and how to read its row groups by byte ranges."""

    uri: str
    size: int
    etag: str | None
    metadata: Any                     # pyarrow.parquet.FileMetaData
    tail: tuple[int, bytes]           # the footer bytes (and what came with them)
    whole: bytes | None = None        # the whole object (verify_checksums mode)
    rg_starts: np.ndarray = field(default=None)  # first row of each row group, then the total

    def __post_init__(self):
        md = self.metadata
        counts = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        self.rg_starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        # Leaf column index -> top-level column name (codes has one leaf; a struct list several).
        self._leaf_names = [md.schema.column(c).path.split(".")[0] for c in range(md.num_columns)]

    @property
    def num_rows(self) -> int:
        return int(self.rg_starts[-1])

    @property
    def num_row_groups(self) -> int:
        return len(self.rg_starts) - 1

    def chunk_ranges(self, g: int, columns: list[str]) -> list[tuple[int, int]]:
        """Byte ranges of the column chunks of `columns` in row group g."""
        rg = self.metadata.row_group(g)
        wanted = set(columns)
        out = []
        for c, name in enumerate(self._leaf_names):
            if name not in wanted:
                continue
            col = rg.column(c)
            start = col.data_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset is not None:
                start = min(start, col.dictionary_page_offset)
            out.append((start, start + col.total_compressed_size))
        return out

    def read_row_groups(self, store: ReaderStore, groups: list[int],
                        columns: list[str]) -> tuple[dict[int, Any], int]:
        """{g: table} of `columns` for the given row groups, and how many reads missed."""
        import pyarrow.parquet as pq

        if self.whole is not None:
            pieces = [(0, self.whole)]
        else:
            # Bytes that came with the footer GET are not fetched again (small shards).
            held = self.tail[0]
            # Never read codes (most of a shard) to save a GET, when they are not asked for.
            walls = [] if "codes" in columns else \
                [r for g in groups for r in self.chunk_ranges(g, ["codes"])]
            ranges = [(a, min(b, held)) for a, b in
                      coalesce((r for g in groups for r in self.chunk_ranges(g, columns)),
                               barriers=walls)
                      if a < held]
            pieces = [(a, store.read_range(self.uri, a, b, self.etag)) for a, b in ranges]
        f = _SparseFile(self.size, pieces + [self.tail],
                        lambda a, b: store.read_range(self.uri, a, b, self.etag))
        pf = pq.ParquetFile(f, metadata=self.metadata)
        tables = {g: pf.read_row_group(g, columns=columns) for g in groups}
        return tables, f.misses


def open_shard(store: ReaderStore, uri: str, whole: bool = False,
               tail_bytes: int | None = None) -> ShardFile:
    """Read a shard's footer (two GETs at most), or with `whole` the entire object."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if whole:
        data = store.read_whole(uri)
        md = pq.ParquetFile(pa.BufferReader(data)).metadata
        return ShardFile(uri, len(data), None, md, (0, data), whole=data)
    tail, size, etag = store.read_tail(uri, tail_bytes or TAIL_BYTES)
    if size < 12 or tail[-4:] != b"PAR1":
        raise ValueError(f"{uri} is not a Parquet file (no PAR1 magic at its end)")
    footer_len = int.from_bytes(tail[-8:-4], "little")
    need = footer_len + 8
    if need > len(tail):  # a footer larger than the first GET: fetch the rest of it
        tail = store.read_range(uri, size - need, size - len(tail), etag, "footer") + tail
    tail_start = size - len(tail)
    footer = tail[len(tail) - need:len(tail) - 8]
    md = pq.read_metadata(pa.BufferReader(b"PAR1" + footer + tail[-8:]))
    return ShardFile(uri, size, etag, md, (tail_start, tail))


class Prefetcher:
    """Runs `produce(put)` on a daemon thread; `put(item, counts=True)` queues an item and, for
    counted items (fetched row groups), blocks while `depth` of them are queued and not yet
    taken. Iterating yields the items in order; an exception in the thread is raised here.
    `close()` stops the thread (it is also stopped when the iteration is abandoned)."""

    _END = object()

    def __init__(self, produce: Callable[[Callable[..., None]], None], depth: int):
        self.depth = max(1, depth)
        self._q: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(self.depth)
        self._stop = threading.Event()
        self.queued = 0          # counted items queued and not yet taken
        self.queued_max = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(produce,), daemon=True,
                                        name="release-prefetch")
        self._thread.start()

    def _put(self, item: Any, counts: bool = False) -> None:
        if counts:
            while not self._slots.acquire(timeout=0.1):
                if self._stop.is_set():
                    raise _Stopped
            with self._lock:
                self.queued += 1
                self.queued_max = max(self.queued_max, self.queued)
        if self._stop.is_set():
            raise _Stopped
        self._q.put((item, counts))

    def _run(self, produce) -> None:
        try:
            produce(self._put)
            self._q.put((self._END, False))
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._q.put((_Failed(exc), False))

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                item, counts = self._q.get()
                if counts:
                    with self._lock:
                        self.queued -= 1
                    self._slots.release()
                if item is self._END:
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()


class _Stopped(Exception):
    pass


@dataclass
class _Failed:
    exc: BaseException
