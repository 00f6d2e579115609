"""Stream a release's shards from S3 into a trainer: `ReleaseDataset`, a torch IterableDataset
that yields ready batches, and `ReleaseLoader`, a DataLoader wrapper that counts the batches the
trainer took so an epoch can be resumed exactly (`state_dict` / `load_state_dict`).

Only trainers import this module (it imports torch); the pipeline never does. It needs torch,
numpy, pyarrow and boto3 (imported on first read) besides the project's small schemas/storage
modules; `decode` imports the codec (transformers, the [codec] extra) only when called.

Sharding rule, the same on every rank and worker with no communication between them:

1. The rows of the split are numbered from the manifest: row (i, j) is row j of the i-th shard
   listed under `splits.<split>.shards`. With read-time filters (`languages=`, ...) only the rows
   that pass count; which those are comes from a pre-pass at construction (see below). N rows.
   Each shard is cut into blocks: its Parquet row groups (`release_config.shards.row_group_rows`
   rows each, from the manifest, or read from the first shard's footer; the pre-pass reads every
   shard's footer and uses the real row groups).
2. The global order of an epoch is shard-major, then block-major: the shards in a permuted order
   (a generator seeded by (seed, epoch)), inside each shard its blocks in a permuted order
   (seeded by (seed, epoch, shard)), inside each block its rows permuted (seeded by (seed, epoch,
   shard, block)). Rows of one row group stay together, so a worker streams row groups.
3. Rank r of R takes the contiguous block [floor(r*N/R), floor((r+1)*N/R)) of that order.
4. Every rank yields exactly nb = ceil(ceil(N/R) / batch_size) batches (`len(ds)`): its rows are
   split with numpy.array_split into nb nearly equal batches (each <= batch_size). Equal batch
   counts keep collective ops of DistributedDataParallel in step; a rank that would get fewer rows
   than nb (tiny split, batch_size 1) is a ValueError at construction instead of a hang.
   With `bucket_by_length=True` the rows of each window of `bucket_window` consecutive batches
   are sorted by num_frames, cut again into batches of the same sizes, and those batches are
   shuffled (seeded by (seed, epoch, rank, window)): less padding, same count, same rows.
5. DataLoader worker w of W yields batches w, w+W, w+2W, ... of its rank (from the resume point
   k on: batches k+w, k+w+W, ...). The DataLoader takes one batch from each worker in turn, so
   the trainer still sees batches k, k+1, ... in order whatever W is, and workers never share a
   row.

The epoch and the resume point live in shared memory (a tensor made in __init__), so
`set_epoch(e)` in the trainer reaches DataLoader workers started with `persistent_workers=True`:
every epoch has its own order with or without persistent workers.

Reading: a worker reads each shard's Parquet footer with a ranged GET of its tail and then,
with one ranged GET per row group, only the column chunks it needs of the row groups its
batches touch, on a background thread that stays `prefetch_row_groups` row groups ahead
(pipeline/reader_io.py). Memory is a few row groups (2-3 held at once when measured), not a
shard. A row group is fetched by every worker with a batch that touches it: row groups of G
rows span about G / batch_size + 1 consecutive batches, so S3 traffic is up to
min(W, G / batch_size + 1) times the data (the reader before row groups fetched whole shards in
every worker: W times). With bucketing every worker touches every row group of a window it has
a batch in (W times when W <= bucket_window).

Pre-pass (only with filters or bucketing): at construction, in the calling process (so on every
rank), every shard of the split gets its footer read (1-2 ranged GETs) and, for each row group
its statistics do not decide, one ranged GET per group of neighbouring filter columns
(language/content_type, quality_score/duration_s, num_frames; codes are never read), on
`scan_threads` threads. Measured on shards of 128-row row groups with 2-20 s segments: 2.5-3% of
the split's bytes (footers are 2.5%) and 1-2 GETs per row group, about 2 s for 3 shards of
3.5 MB on the local server. On a large release that is many small GETs (a 128 MB shard has ~300
row groups): raise `scan_threads`, or filter less often. `ds.scan_stats` reports the cost.

A batch is a dict: "segment_id" (list[str]), "codes" (int16 tensor [B, num_codebooks,
max_frames], padded with CODE_PAD), "num_frames" (int64 tensor [B]) and each requested column as
a list.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from model_serving.s3client import StorageError, resolve_storage
from pipeline.reader_codec import codes_array, decode
from pipeline.reader_io import Prefetcher, ReaderStore, ShardFile, open_shard
from schemas.config import StorageConfig
from schemas.release import CODE_PAD, MANIFEST, RELEASE_FORMAT, SHARD_SCHEMA

__all__ = ["ReleaseDataset", "ReleaseLoader", "DEFAULT_COLUMNS", "read_manifest", "decode",
           "codes_array"]

DEFAULT_COLUMNS = ["transcript", "language", "content_type", "caption_description", "duration_s"]
# Always read: they make the batch's tensors and identify its rows.
_CORE_COLUMNS = ["segment_id", "codes", "num_frames"]
STATE_FORMAT = "audioverse-reader-state/1"
# What a saved state must agree on with the loader it is loaded into (epoch and batches_done
# are the position; everything else decides which rows form which batch).
_STATE_KEYS = ("release_id", "split", "rows", "seed", "world_size", "batch_size", "filters",
               "bucket_by_length", "bucket_window")


def _default_rank_world() -> tuple[int, int]:
    """The process group's rank and size if one is initialised, else the RANK / WORLD_SIZE that
    torchrun exports, else a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def read_manifest(release_uri: str, storage: StorageConfig | None = None) -> dict[str, Any]:
    """A release's manifest.json (checked to be a release of the format this reader reads)."""
    uri = release_uri.rstrip("/") + "/" + MANIFEST
    store = ReaderStore(resolve_storage(storage or StorageConfig()))
    try:
        body = store.get(uri)
    except StorageError as exc:
        if not store.exists(uri):
            raise FileNotFoundError(
                f"not a release (no {MANIFEST} at {uri}): the manifest is written last, so "
                f"the release is unfinished or the URI is wrong"
            ) from exc
        raise
    manifest = json.loads(body)
    if manifest.get("format") != RELEASE_FORMAT:
        raise ValueError(f"{uri} has format {manifest.get('format')!r}; this reader reads "
                         f"{RELEASE_FORMAT!r}")
    return manifest


def _check_codec(manifest: dict, uri: str, allow_untrained: bool) -> None:
    """An untrained codec's codes are noise: refuse unless the caller only tests plumbing."""
    codec = manifest.get("codec") or {}
    if not codec.get("untrained"):
        return
    label = codec.get("version") or codec.get("name") or "unknown codec"
    if not allow_untrained:
        raise ValueError(
            f"release {uri} was tokenized with an untrained codec ({label}): its codes carry "
            f"no meaning, so a model trained on them learns nothing. Use a release made with a "
            f"trained codec, or pass allow_untrained_codec=True if you only want to test the "
            f"plumbing.")
    warnings.warn(codec.get("warning") or f"UNTRAINED CODEC: {label}", UserWarning, stacklevel=3)


class ReleaseDataset(IterableDataset):
    """Batches of one split of the release at `release_uri` (s3://.../releases/<release_id>/).

    Filters (all optional, applied at read time; rows with a null value fail a filter on it):
    `languages` and `content_types` (collections of allowed values), `min_quality_score`,
    `min_duration_s` and `max_duration_s` (inclusive). They cost a pre-pass at construction
    (module docstring); `len(ds)` counts only rows that pass.

    `bucket_by_length`: group rows of similar num_frames into batches within windows of
    `bucket_window` batches (less padding; same batches per rank; needs the pre-pass for
    num_frames). A window's rows are held in memory together.

    `prefetch_row_groups`: row groups a worker fetches ahead of the batch being collated.

    `verify_checksums=True` reads each shard WHOLE (a checksum needs every byte) and compares its
    sha256 with the manifest before using it: memory is then a shard or two per worker, not a few
    row groups. The order and batches are the same as without it.

    `allow_untrained_codec`: a release whose manifest marks its codec untrained is refused
    unless this is set (then a UserWarning carries the manifest's warning).

    `scan_threads`: parallel GETs of the pre-pass. `io_hook`: instrumentation, called as
    hook(uri, kind, first_byte, nbytes) for every GET ("footer", "range" or "whole"); with
    DataLoader workers it runs in the workers.
    """

    def __init__(
        self,
        release_uri: str,
        split: str = "train",
        batch_size: int = 16,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        columns: list[str] | None = None,
        storage: StorageConfig | None = None,
        verify_checksums: bool = False,
        *,
        languages: list[str] | None = None,
        content_types: list[str] | None = None,
        min_quality_score: float | None = None,
        min_duration_s: float | None = None,
        max_duration_s: float | None = None,
        bucket_by_length: bool = False,
        bucket_window: int = 8,
        prefetch_row_groups: int = 2,
        allow_untrained_codec: bool = False,
        scan_threads: int = 8,
        io_hook=None,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if bucket_window < 1:
            raise ValueError(f"bucket_window must be at least 1 batch, got {bucket_window}")
        if prefetch_row_groups < 1:
            raise ValueError(f"prefetch_row_groups must be at least 1, got {prefetch_row_groups}")
        if rank is None or world_size is None:
            default_rank, default_world = _default_rank_world()
            rank = default_rank if rank is None else rank
            world_size = default_world if world_size is None else world_size
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")

        columns = list(DEFAULT_COLUMNS if columns is None else columns)
        unknown = [c for c in columns if c not in SHARD_SCHEMA.names]
        if unknown:
            raise ValueError(f"unknown shard columns {unknown}; shards have {SHARD_SCHEMA.names}")
        self.filters = _normalise_filters(languages, content_types, min_quality_score,
                                          min_duration_s, max_duration_s)

        self.release_uri = release_uri.rstrip("/") + "/"
        self.split = split
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.columns = [c for c in dict.fromkeys(columns) if c not in _CORE_COLUMNS]
        # Resolved now so workers started with spawn get explicit values, not the environment.
        self.storage = resolve_storage(storage or StorageConfig())
        self.verify_checksums = verify_checksums
        self.bucket_by_length = bool(bucket_by_length)
        self.bucket_window = int(bucket_window)
        self.prefetch_row_groups = int(prefetch_row_groups)
        # [epoch, resume batch] in shared memory: persistent DataLoader workers see set_epoch.
        self._shared = torch.zeros(2, dtype=torch.int64).share_memory_()
        # Instrumentation (tests, benchmarks): a callable(uri, kind, first_byte, nbytes) called
        # per GET, and the tail GET's size for footers (ReaderStore / reader_io.TAIL_BYTES).
        self.io_hook = io_hook
        self.footer_tail_bytes: int | None = None
        self._live: tuple | None = None

        self.manifest = read_manifest(self.release_uri, self.storage)
        _check_codec(self.manifest, self.release_uri, allow_untrained_codec)
        splits = self.manifest.get("splits", {})
        if split not in splits:
            raise ValueError(f"release {self.release_uri} has no split {split!r}; it has "
                             f"{sorted(splits)}")
        self.shards: list[dict[str, Any]] = list(splits[split].get("shards", []))
        self.num_codebooks = int(self.manifest["codec"]["num_codebooks"])
        self._shard_rows = np.array([int(s["rows"]) for s in self.shards], dtype=np.int64)
        if not self.shards or self._shard_rows.sum() == 0:
            raise ValueError(f"split {split!r} of release {self.release_uri} has no rows")

        # Per shard: kept rows (None: all), block bounds into them (None: uniform blocks of
        # self._block_rows), num_frames of kept rows (bucketing only).
        self._kept: list[np.ndarray | None] = [None] * len(self.shards)
        self._bounds: list[np.ndarray | None] = [None] * len(self.shards)
        self._frames: list[np.ndarray | None] = [None] * len(self.shards)
        self.scan_stats: dict[str, int] = {}
        if self.filters or self.bucket_by_length:
            self._pre_pass(scan_threads)
            self._counts = np.array([len(k) for k in self._kept], dtype=np.int64)
            self._block_rows = 0
        else:
            self._counts = self._shard_rows
            self._block_rows = self._row_group_rows()
        self.num_rows = int(self._counts.sum())

        n, r = self.num_rows, world_size
        if n == 0:
            raise ValueError(f"no row of split {split!r} of release {self.release_uri} passes "
                             f"the filters {self.filters}; loosen them")
        self._nb = -(-(-(-n // r)) // batch_size)  # ceil(ceil(N/R) / batch_size)
        fewest = n // r  # the smallest block a rank gets
        if fewest < self._nb:
            raise ValueError(
                f"{n} rows of split {split!r} cannot give every one of {r} ranks {self._nb} "
                f"batches (some rank gets only {fewest} rows); use a smaller world or batch size"
            )

    def __getstate__(self):
        # The live reading state (a thread) stays in its process; the shared tensor travels.
        return {**self.__dict__, "_live": None}

    # --- epoch and resume point (shared with DataLoader workers) ---------------------------
    @property
    def epoch(self) -> int:
        return int(self._shared[0])

    @property
    def start_batch(self) -> int:
        """The batch of this rank's epoch the next iteration starts at (0 unless resuming)."""
        return int(self._shared[1])

    def set_epoch(self, epoch: int) -> None:
        """Use the order of this epoch from the next iteration on (call before each epoch); it
        also reaches persistent DataLoader workers. Starts the epoch at its first batch."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self._shared[0] = int(epoch)
        self._shared[1] = 0

    def set_start_batch(self, k: int) -> None:
        """Start the next iteration at batch k of this rank's epoch (ReleaseLoader's resume)."""
        if not 0 <= k <= self._nb:
            raise ValueError(f"start batch {k} is outside this epoch's 0..{self._nb} batches")
        self._shared[1] = int(k)

    def batches_per_rank(self) -> int:
        """nb: how many batches every rank yields per epoch (the same on all ranks)."""
        return self._nb

    def __len__(self) -> int:
        """Batches of one whole epoch on this rank (so len(DataLoader(ds, batch_size=None))
        works for LR schedules); a resumed epoch yields len(ds) - start_batch of them."""
        return self._nb

    def fingerprint(self) -> dict[str, Any]:
        """What decides the batches besides the epoch; a resume state must match it."""
        return {"release_id": self.manifest.get("release_id"), "split": self.split,
                "rows": self.num_rows, "seed": self.seed, "world_size": self.world_size,
                "batch_size": self.batch_size, "filters": self.filters,
                "bucket_by_length": self.bucket_by_length,
                "bucket_window": self.bucket_window if self.bucket_by_length else None}

    def shard_uris(self) -> list[str]:
        """The split's shard objects, in manifest order (for plain Parquet readers)."""
        return [self.release_uri + s["path"] for s in self.shards]

    # --- planning -------------------------------------------------------------------------
    def _row_group_rows(self) -> int:
        """Block size without a pre-pass: the release's row_group_rows, else the first shard's
        largest row group. Only speed depends on it matching the row groups, not correctness."""
        rows = ((self.manifest.get("release_config") or {}).get("shards") or {}) \
            .get("row_group_rows")
        if rows:
            return int(rows)
        md = open_shard(ReaderStore(self.storage), self.release_uri + self.shards[0]["path"]) \
            .metadata
        return max(1, max(md.row_group(g).num_rows for g in range(md.num_row_groups)))

    def _pre_pass(self, threads: int) -> None:
        """Which rows pass the filters (and their num_frames when bucketing), per shard."""
        cols = sorted({_FILTER_COLUMNS[f] for f in self.filters}
                      | ({"num_frames"} if self.bucket_by_length else set()))

        def scan(i: int):
            store = ReaderStore(self.storage, on_get=self.io_hook)
            sf = open_shard(store, self.release_uri + self.shards[i]["path"],
                            tail_bytes=self.footer_tail_bytes)
            self._check_rows(sf, i)
            return _scan_shard(store, sf, self.filters, cols, self.bucket_by_length), store

        with ThreadPoolExecutor(max(1, min(threads, len(self.shards)))) as pool:
            results = list(pool.map(scan, range(len(self.shards))))
        stats = {"shards": len(self.shards), "gets": 0, "bytes": 0, "row_groups": 0,
                 "row_groups_read": 0, "row_groups_skipped": 0}
        for i, ((kept, bounds, frames, st), store) in enumerate(results):
            self._kept[i], self._bounds[i], self._frames[i] = kept, bounds, frames
            stats["gets"] += store.gets
            stats["bytes"] += store.bytes_read
            for k in ("row_groups", "row_groups_read", "row_groups_skipped"):
                stats[k] += st[k]
        stats["footer_bytes"] = sum(store.footer_bytes for _, store in results)
        stats["split_bytes"] = int(sum(int(s.get("bytes", 0)) for s in self.shards))
        self.scan_stats = stats

    def _check_rows(self, sf: ShardFile, i: int) -> None:
        # The plan counted rows from the manifest; a different count would skip or repeat rows.
        meta = self.shards[i]
        if sf.num_rows != meta["rows"]:
            raise ValueError(f"shard {meta['path']} of release {self.release_uri} has "
                             f"{sf.num_rows} rows; the manifest says {meta['rows']}")

    def _shard_order(self, i: int, epoch: int) -> np.ndarray:
        """Positions into shard i's kept rows in the epoch's block-major order."""
        n = int(self._counts[i])
        bounds = self._bounds[i]
        if bounds is None:
            bounds = np.append(np.arange(0, n, self._block_rows), n)
        sizes = np.diff(bounds)
        # Separate streams (the second tag) for the shard order, each shard's block order and
        # each block's rows, so any rank can order one shard without the others.
        blocks = np.random.default_rng([self.seed, epoch, 1, i]).permutation(len(sizes))
        parts = [bounds[b] + np.random.default_rng([self.seed, epoch, 2, i, int(b)])
                 .permutation(sizes[b]) for b in blocks if sizes[b]]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def rank_batches(self, epoch: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """This rank's batches of an epoch as (shard indices, row numbers in the shard) pairs,
        in order. Only the shards that overlap this rank's block are ordered."""
        epoch = self.epoch if epoch is None else epoch
        n, r, R = self.num_rows, self.rank, self.world_size
        lo, hi = r * n // R, (r + 1) * n // R
        order = np.random.default_rng([self.seed, epoch, 0]).permutation(len(self.shards))
        ends = np.cumsum(self._counts[order])
        starts = ends - self._counts[order]
        shard_parts, row_parts, frame_parts = [], [], []
        for pos, s in enumerate(order):
            a, b = max(lo, starts[pos]), min(hi, ends[pos])
            if a >= b:
                continue
            at = self._shard_order(int(s), epoch)[a - starts[pos]:b - starts[pos]]
            kept = self._kept[s]
            row_parts.append(at if kept is None else kept[at])
            shard_parts.append(np.full(len(at), s, dtype=np.int64))
            if self.bucket_by_length:
                frame_parts.append(self._frames[s][at])
        shard_idx = np.concatenate(shard_parts)
        row_idx = np.concatenate(row_parts).astype(np.int64)
        splits = np.array_split(np.arange(len(shard_idx)), self._nb)
        if self.bucket_by_length:
            splits = self._bucket(splits, np.concatenate(frame_parts), epoch)
        return [(shard_idx[p], row_idx[p]) for p in splits]

    def _bucket(self, splits: list[np.ndarray], frames: np.ndarray,
                epoch: int) -> list[np.ndarray]:
        """Within each window of bucket_window batches: sort its rows by length, cut them into
        batches of the window's sizes, shuffle those batches."""
        out: list[np.ndarray] = []
        for w, first in enumerate(range(0, len(splits), self.bucket_window)):
            window = splits[first:first + self.bucket_window]
            rows = np.concatenate(window)
            rows = rows[np.argsort(frames[rows], kind="stable")]
            cut = np.split(rows, np.cumsum([len(b) for b in window])[:-1])
            shuffle = np.random.default_rng([self.seed, epoch, 3, self.rank, w]) \
                .permutation(len(cut))
            out += [cut[j] for j in shuffle]
        return out

    # --- reading --------------------------------------------------------------------------
    def _read_columns(self) -> list[str]:
        return _CORE_COLUMNS + self.columns

    def _open(self, store: ReaderStore, s: int) -> ShardFile:
        meta = self.shards[s]
        sf = open_shard(store, self.release_uri + meta["path"], whole=self.verify_checksums,
                        tail_bytes=self.footer_tail_bytes)
        if sf.whole is not None:
            data = sf.whole
            digest = hashlib.sha256(data).hexdigest()
            if digest != meta.get("sha256") or ("bytes" in meta and len(data) != meta["bytes"]):
                raise ValueError(
                    f"shard {meta['path']} of release {self.release_uri} does not match the "
                    f"manifest (sha256 {digest}, {len(data)} bytes; manifest says "
                    f"{meta.get('sha256')}, {meta.get('bytes')} bytes): it was changed or "
                    f"damaged after the release was written"
                )
        self._check_rows(sf, s)
        return sf

    def _produce(self, store: ReaderStore, mine: list[tuple[np.ndarray, np.ndarray]], put):
        """The prefetch thread: per batch, fetch (and decode) the row groups not fetched yet,
        then describe the batch as (shard, row group, row in group) per row."""
        columns = self._read_columns()
        last_shard: dict[int, int] = {}
        for k, (shard_idx, _) in enumerate(mine):
            for s in np.unique(shard_idx).tolist():
                last_shard[s] = k
        opened: dict[int, ShardFile] = {}
        rg_last: dict[tuple[int, int], int] = {}
        sent: set[tuple[int, int]] = set()
        for k, (shard_idx, row_idx) in enumerate(mine):
            groups = np.empty(len(row_idx), dtype=np.int64)
            local = np.empty(len(row_idx), dtype=np.int64)
            for s in dict.fromkeys(shard_idx.tolist()):
                if s not in opened:
                    sf = opened[s] = self._open(store, s)
                    # The last batch needing each of this shard's row groups, so the consumer
                    # drops a row group as soon as it is done with it.
                    for k2 in range(k, last_shard[s] + 1):
                        si, ri = mine[k2]
                        for g in np.unique(np.searchsorted(sf.rg_starts, ri[si == s], "right") - 1):
                            rg_last[(s, int(g))] = k2
                sf = opened[s]
                here = shard_idx == s
                g = np.searchsorted(sf.rg_starts, row_idx[here], "right") - 1
                groups[here], local[here] = g, row_idx[here] - sf.rg_starts[g]
            for s, g in dict.fromkeys(zip(shard_idx.tolist(), groups.tolist())):
                if (s, g) in sent:
                    continue
                tables, misses = opened[s].read_row_groups(store, [g], columns)
                sent.add((s, g))
                put(("rg", (s, g), tables[g], rg_last[(s, g)], misses), counts=True)
            put(("batch", k, shard_idx, groups, local))
            for s in [s for s in opened if last_shard[s] <= k]:
                del opened[s]  # its footer (or, verifying, its bytes) is no longer needed

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import pyarrow as pa

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, start = self.epoch, self.start_batch  # read once: the shared values may change
        mine = self.rank_batches(epoch)[start:][worker::workers]
        store = ReaderStore(self.storage, on_get=self.io_hook)
        stats = {"row_groups": 0, "held_max": 0, "misses": 0}
        prefetch = Prefetcher(lambda put: self._produce(store, mine, put),
                              self.prefetch_row_groups)
        self._live = (store, prefetch, stats)
        tables: dict[tuple[int, int], tuple[Any, int]] = {}
        try:
            for item in prefetch:
                if item[0] == "rg":
                    _, key, table, last, misses = item
                    tables[key] = (table, last)
                    stats["row_groups"] += 1
                    stats["misses"] += misses
                    continue
                _, k, shard_idx, groups, local = item
                keys = list(dict.fromkeys(zip(shard_idx.tolist(), groups.tolist())))
                offset, base = {}, 0
                for key in keys:
                    offset[key] = base
                    base += tables[key][0].num_rows
                index = local + np.array([offset[key] for key in zip(shard_idx.tolist(),
                                                                     groups.tolist())])
                rows = pa.concat_tables([tables[key][0] for key in keys]).take(pa.array(index))
                stats["held_max"] = max(stats["held_max"], len(tables) + prefetch.queued)
                for key in [key for key, (_, last) in tables.items() if last <= k]:
                    del tables[key]
                yield self._collate(rows)
        finally:
            prefetch.close()

    @property
    def io_stats(self) -> dict[str, int]:
        """The latest iteration's reading in this process (with num_workers=0, the trainer's):
        GETs and bytes, row groups fetched, the most row groups held at once (decoded in use
        plus fetched ahead), the most queued ahead, and reads pyarrow made outside the ranges
        fetched (misses; 0 expected)."""
        if self._live is None:
            return {}
        store, prefetch, stats = self._live
        return {**stats, "gets": store.gets, "bytes": store.bytes_read,
                "footer_bytes": store.footer_bytes, "queued_max": prefetch.queued_max}

    def _collate(self, table) -> dict[str, Any]:
        seg_ids = table.column("segment_id").to_pylist()
        codes = table.column("codes").combine_chunks()
        if codes.null_count:
            raise ValueError(f"{codes.null_count} rows without codes in a batch of "
                             f"{self.release_uri}")
        k = self.num_codebooks
        per_row = np.asarray(codes.value_lengths())             # codebooks of each row
        if (per_row != k).any():
            i = int(np.flatnonzero(per_row != k)[0])
            raise ValueError(f"segment {seg_ids[i]} has codes of {per_row[i]} codebooks; the "
                             f"release's codec has {k}")
        inner = codes.flatten()                                  # one list per codebook
        frames_cb = np.asarray(inner.value_lengths()).reshape(len(seg_ids), k)
        values = np.asarray(inner.flatten())                     # [rows][codebooks][frames]
        num_frames = frames_cb[:, 0].astype(np.int64)
        declared = np.asarray(table.column("num_frames").combine_chunks().fill_null(-1))
        bad = (frames_cb != num_frames[:, None]).any(axis=1) | (declared != num_frames)
        if bad.any():
            raise ValueError(f"segment {seg_ids[int(np.flatnonzero(bad)[0])]}: codebooks of "
                             f"different lengths, or num_frames does not match its codes")

        out = np.full((len(seg_ids), k, int(num_frames.max())), CODE_PAD, dtype=np.int16)
        offset = 0
        for i, f in enumerate(num_frames.tolist()):
            out[i, :, :f] = values[offset:offset + k * f].reshape(k, f)
            offset += k * f
        batch: dict[str, Any] = {
            "segment_id": seg_ids,
            "codes": torch.from_numpy(out),
            "num_frames": torch.from_numpy(num_frames),
        }
        for name in self.columns:
            batch[name] = table.column(name).to_pylist()
        return batch


class ReleaseLoader:
    """A DataLoader over a ReleaseDataset that knows how far the trainer got, so a checkpoint
    can resume mid-epoch exactly: `state_dict()` -> {"epoch", "batches_done", ...}.

    The dataset in the trainer's process cannot see what DataLoader workers produced or what the
    trainer consumed, so this wrapper counts the batches it hands out. Resuming at batch k of an
    epoch deals the remaining batches rank_batches[k:] to the workers (worker w takes every W-th
    from k + w), so the trainer sees exactly the batches an uninterrupted epoch would have given
    from k on, in the same order.

    Epochs: after a whole epoch the loader moves to the next one by itself (state {"epoch": e+1,
    "batches_done": 0}); `set_epoch(e)` for the current epoch keeps the resume point, for
    another epoch starts it from its first batch. After `load_state_dict`, start the epoch loop
    at `loader.epoch`.
    """

    def __init__(self, dataset: ReleaseDataset, num_workers: int = 0, **dataloader_kwargs):
        if dataloader_kwargs.get("batch_size", None) is not None:
            raise ValueError("ReleaseLoader: the dataset makes the batches; do not pass batch_size")
        dataloader_kwargs.pop("batch_size", None)
        self.dataset = dataset
        self.loader = DataLoader(dataset, batch_size=None, num_workers=num_workers,
                                 **dataloader_kwargs)
        self.epoch = dataset.epoch
        self.batches_done = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        if epoch != self.epoch:
            self.epoch, self.batches_done = int(epoch), 0

    def _normalise(self) -> None:
        if self.batches_done >= len(self):   # a finished epoch: the next one is due
            self.epoch, self.batches_done = self.epoch + 1, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._normalise()
        self.dataset.set_epoch(self.epoch)
        self.dataset.set_start_batch(self.batches_done)
        for batch in self.loader:
            self.batches_done += 1  # counted when handed over: a checkpoint after it includes it
            yield batch
        self._normalise()

    def state_dict(self) -> dict[str, Any]:
        self._normalise()
        return {"format": STATE_FORMAT, "epoch": self.epoch, "batches_done": self.batches_done,
                **self.dataset.fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a ReleaseLoader state (format {state.get('format')!r}, "
                             f"expected {STATE_FORMAT!r})")
        mine = self.dataset.fingerprint()
        diff = [f"{k}={state.get(k)!r} (this loader: {mine[k]!r})" for k in _STATE_KEYS
                if _jsonable(state.get(k)) != _jsonable(mine[k])]
        if diff:
            raise ValueError(
                "this state was saved by a loader that makes other batches: "
                + "; ".join(diff) + ". Resume with the same release, split, seed, world size, "
                "batch size, filters and bucketing, or start afresh without load_state_dict.")
        done = int(state["batches_done"])
        if not 0 <= done <= len(self):
            raise ValueError(f"batches_done={done} is outside an epoch of {len(self)} batches")
        self.epoch, self.batches_done = int(state["epoch"]), done


def _jsonable(value: Any) -> Any:
    """Compare states after a JSON round trip (a checkpoint may store them as JSON)."""
    return json.loads(json.dumps(value, sort_keys=True))


# --- read-time filters -------------------------------------------------------------------
# filter name -> the shard column it reads
_FILTER_COLUMNS = {"languages": "language", "content_types": "content_type",
                   "min_quality_score": "quality_score", "min_duration_s": "duration_s",
                   "max_duration_s": "duration_s"}


def _normalise_filters(languages, content_types, min_quality_score, min_duration_s,
                       max_duration_s) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, values in (("languages", languages), ("content_types", content_types)):
        if values is None:
            continue
        if isinstance(values, str):
            raise ValueError(f"{name} takes a list of values, e.g. {name}=[{values!r}]")
        if not values:
            raise ValueError(f"{name}=[] would keep no rows; pass None to not filter")
        out[name] = sorted(set(values))
    for name, value in (("min_quality_score", min_quality_score),
                        ("min_duration_s", min_duration_s), ("max_duration_s", max_duration_s)):
        if value is not None:
            out[name] = float(value)
    if out.get("min_duration_s", 0.0) > out.get("max_duration_s", float("inf")):
        raise ValueError(f"min_duration_s {out['min_duration_s']} is above max_duration_s "
                         f"{out['max_duration_s']}")
    return out


def _verdict(md_rg, leaf: dict[str, int], filters: dict[str, Any]) -> str | None:
    """From a row group's statistics: "none" if no row can pass, "all" if every row passes,
    None if its rows must be read."""
    every = True
    for name, column in (("languages", "language"), ("content_types", "content_type")):
        if name not in filters:
            continue
        st = md_rg.column(leaf[column]).statistics
        if st is None:
            every = False
            continue
        if st.has_null_count and st.null_count == md_rg.num_rows:
            return "none"
        if not st.has_min_max:
            every = False
            continue
        if not any(st.min <= v <= st.max for v in filters[name]):
            return "none"
        every &= bool(st.min == st.max and st.has_null_count and st.null_count == 0)
    lo_hi = {"quality_score": (filters.get("min_quality_score"), None),
             "duration_s": (filters.get("min_duration_s"), filters.get("max_duration_s"))}
    for column, (lo, hi) in lo_hi.items():
        if lo is None and hi is None:
            continue
        st = md_rg.column(leaf[column]).statistics
        if st is None or not st.has_min_max:
            every = False
            continue
        if (lo is not None and st.max < lo) or (hi is not None and st.min > hi):
            return "none"
        every &= bool((lo is None or st.min >= lo) and (hi is None or st.max <= hi)
                      and st.has_null_count and st.null_count == 0)
    return "all" if every else None


def _row_mask(table, filters: dict[str, Any]) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pa.scalar(True)
    if "languages" in filters:
        mask = pc.and_(mask, pc.is_in(table["language"], value_set=pa.array(filters["languages"])))
    if "content_types" in filters:
        mask = pc.and_(mask, pc.is_in(table["content_type"],
                                      value_set=pa.array(filters["content_types"])))
    if "min_quality_score" in filters:
        mask = pc.and_(mask, pc.greater_equal(table["quality_score"],
                                              filters["min_quality_score"]))
    if "min_duration_s" in filters:
        mask = pc.and_(mask, pc.greater_equal(table["duration_s"], filters["min_duration_s"]))
    if "max_duration_s" in filters:
        mask = pc.and_(mask, pc.less_equal(table["duration_s"], filters["max_duration_s"]))
    if isinstance(mask, pa.Scalar):
        return np.ones(table.num_rows, dtype=bool)
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _scan_shard(store: ReaderStore, sf: ShardFile, filters: dict[str, Any], columns: list[str],
                need_frames: bool):
    """(kept rows, block bounds into them, num_frames of kept rows or None, stats) of a shard:
    row groups decided by their statistics are not read; the rest by their small columns."""
    md = sf.metadata
    leaf = {md.schema.column(c).path: c for c in range(md.num_columns)}
    verdicts = [_verdict(md.row_group(g), leaf, filters) for g in range(sf.num_row_groups)]
    to_read = [g for g, v in enumerate(verdicts) if v is None or (v == "all" and need_frames)]
    tables = sf.read_row_groups(store, to_read, columns)[0] if to_read else {}
    kept, frames, bounds = [], [], [0]
    for g, v in enumerate(verdicts):
        first, n = int(sf.rg_starts[g]), int(sf.rg_starts[g + 1] - sf.rg_starts[g])
        if v == "none":
            rows = np.zeros(0, dtype=np.int64)
        elif v == "all":
            rows = np.arange(n)
        else:
            rows = np.flatnonzero(_row_mask(tables[g], filters))
        kept.append(first + rows)
        if need_frames:
            frames.append(np.asarray(tables[g]["num_frames"].to_numpy())[rows] if len(rows)
                          else np.zeros(0, dtype=np.int64))
        bounds.append(bounds[-1] + len(rows))
    stats = {"row_groups": sf.num_row_groups, "row_groups_read": len(to_read),
             "row_groups_skipped": sum(v == "none" for v in verdicts)}
    return (np.concatenate(kept).astype(np.int64), np.array(bounds, dtype=np.int64),
            np.concatenate(frames).astype(np.int64) if need_frames else None, stats)
