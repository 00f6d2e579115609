"""Stream a release's shards from S3 into a trainer: `ReleaseDataset`, a torch IterableDataset
that yields ready batches (use it with `DataLoader(ds, batch_size=None, num_workers=W)`).

Only trainers import this module (it imports torch); the pipeline never does.

Sharding rule, the same on every rank and worker with no communication between them:

1. The rows of the split are numbered from the manifest alone (no data is read to plan): row
   (i, j) is row j of the i-th shard listed under `splits.<split>.shards`. N rows in all.
2. The global order of an epoch: the shards in a permuted order (a generator seeded by
   (seed, epoch)), and inside each shard its rows in a permuted order (seeded by
   (seed, epoch, shard index)). Rows of one shard stay together, so a worker reads few shards.
3. Rank r of R takes the contiguous block [floor(r*N/R), floor((r+1)*N/R)) of that order.
4. Every rank yields exactly nb = ceil(ceil(N/R) / batch_size) batches: its rows are split with
   numpy.array_split into nb nearly equal batches (each <= batch_size). Equal batch counts
   keep collective ops of DistributedDataParallel in step; a rank that would get fewer rows
   than nb (tiny split, batch_size 1) is a ValueError at construction instead of a hang.
5. DataLoader worker w of W yields batches w, w+W, w+2W, ... of its rank. The DataLoader
   takes one batch from each worker in turn, so the trainer still sees batches 0, 1, 2, ... in
   order, nb per rank whatever W is, and workers never share a row.

`set_epoch(e)` before iterating changes the order (as DistributedSampler.set_epoch does). With
`persistent_workers=True` the workers keep the epoch they were started with, so leave it off.

A batch is a dict: "segment_id" (list[str]), "codes" (int16 tensor [B, num_codebooks,
max_frames], padded with CODE_PAD), "num_frames" (int64 tensor [B]) and each requested column as
a list.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from model_serving.s3client import StorageError, resolve_storage
from operators.storage import ObjectStore
from schemas.config import StorageConfig
from schemas.release import CODE_PAD, MANIFEST, RELEASE_FORMAT, SHARD_SCHEMA

__all__ = ["ReleaseDataset", "DEFAULT_COLUMNS"]

DEFAULT_COLUMNS = ["transcript", "language", "content_type", "caption_description", "duration_s"]
# Always read: they make the batch's tensors and identify its rows.
_CORE_COLUMNS = ["segment_id", "codes", "num_frames"]


def _default_rank_world() -> tuple[int, int]:
    """The process group's rank and size if one is initialised, else the RANK / WORLD_SIZE that
    torchrun exports, else a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class ReleaseDataset(IterableDataset):
    """Batches of one split of the release at `release_uri` (s3://.../releases/<release_id>/)."""

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
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
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
        self.epoch = 0

        self.manifest = self._read_manifest()
        splits = self.manifest.get("splits", {})
        if split not in splits:
            raise ValueError(f"release {self.release_uri} has no split {split!r}; it has "
                             f"{sorted(splits)}")
        self.shards: list[dict[str, Any]] = list(splits[split].get("shards", []))
        self.num_codebooks = int(self.manifest["codec"]["num_codebooks"])
        self._shard_rows = np.array([int(s["rows"]) for s in self.shards], dtype=np.int64)
        self.num_rows = int(self._shard_rows.sum())

        n, r = self.num_rows, world_size
        if n == 0:
            raise ValueError(f"split {split!r} of release {self.release_uri} has no rows")
        self._nb = -(-(-(-n // r)) // batch_size)  # ceil(ceil(N/R) / batch_size)
        fewest = n // r  # the smallest block a rank gets
        if fewest < self._nb:
            raise ValueError(
                f"{n} rows of split {split!r} cannot give every one of {r} ranks {self._nb} "
                f"batches (some rank gets only {fewest} rows); use a smaller world or batch size"
            )

    # --- planning -------------------------------------------------------------------------
    def _read_manifest(self) -> dict[str, Any]:
        uri = self.release_uri + MANIFEST
        # A store of its own, dropped after: a boto3 client must not be shared across a fork.
        store = ObjectStore(self.storage)
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

    def set_epoch(self, epoch: int) -> None:
        """Use the order of this epoch from the next iteration on (call before each epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = int(epoch)

    def batches_per_rank(self) -> int:
        """nb: how many batches every rank yields per epoch (the same on all ranks)."""
        return self._nb

    def rank_batches(self, epoch: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """This rank's batches of an epoch as (shard indices, row indices) pairs, in order.
        Only the shards that overlap this rank's block have their rows permuted."""
        epoch = self.epoch if epoch is None else epoch
        n, r, R = self.num_rows, self.rank, self.world_size
        lo, hi = r * n // R, (r + 1) * n // R
        # Separate streams for the shard order and each shard's rows (the leading tag keeps
        # them apart), so any rank can permute one shard's rows without the others.
        order = np.random.default_rng([self.seed, epoch, 0]).permutation(len(self.shards))
        ends = np.cumsum(self._shard_rows[order])
        starts = ends - self._shard_rows[order]
        shard_parts, row_parts = [], []
        for pos, s in enumerate(order):
            a, b = max(lo, starts[pos]), min(hi, ends[pos])
            if a >= b:
                continue
            perm = np.random.default_rng([self.seed, epoch, 1, int(s)]).permutation(
                self._shard_rows[s])
            rows = perm[a - starts[pos]:b - starts[pos]]
            shard_parts.append(np.full(len(rows), s, dtype=np.int64))
            row_parts.append(rows)
        shard_idx = np.concatenate(shard_parts)
        row_idx = np.concatenate(row_parts)
        return [(shard_idx[p], row_idx[p])
                for p in np.array_split(np.arange(len(shard_idx)), self._nb)]

    # --- reading --------------------------------------------------------------------------
    def _read_shard(self, store: ObjectStore, s: int):
        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = self.shards[s]
        uri = self.release_uri + meta["path"]
        data = store.get(uri)
        if self.verify_checksums:
            digest = hashlib.sha256(data).hexdigest()
            if digest != meta.get("sha256") or ("bytes" in meta and len(data) != meta["bytes"]):
                raise ValueError(
                    f"shard {meta['path']} of release {self.release_uri} does not match the "
                    f"manifest (sha256 {digest}, {len(data)} bytes; manifest says "
                    f"{meta.get('sha256')}, {meta.get('bytes')} bytes): it was changed or "
                    f"damaged after the release was written"
                )
        table = pq.read_table(pa.BufferReader(data), columns=_CORE_COLUMNS + self.columns)
        # The plan counted rows from the manifest; a different count would skip or repeat rows.
        if table.num_rows != meta["rows"]:
            raise ValueError(f"shard {meta['path']} of release {self.release_uri} has "
                             f"{table.num_rows} rows; the manifest says {meta['rows']}")
        return table

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

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import pyarrow as pa

        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        mine = self.rank_batches()[worker::workers]
        # When each shard is used for the last time, so at most the shards of the current
        # batch stay in memory (the order is shard-major: batches walk through shards).
        last_use = {int(s): k for k, (shard_idx, _) in enumerate(mine) for s in shard_idx}
        store = ObjectStore(self.storage)  # a client per worker process, made after the fork
        cache: dict[int, Any] = {}
        for k, (shard_idx, row_idx) in enumerate(mine):
            bounds = [0, *(np.flatnonzero(np.diff(shard_idx)) + 1).tolist(), len(shard_idx)]
            parts = []
            for a, b in zip(bounds[:-1], bounds[1:]):
                s = int(shard_idx[a])
                if s not in cache:
                    cache[s] = self._read_shard(store, s)
                parts.append(cache[s].take(pa.array(row_idx[a:b])))
            for s in [s for s in cache if last_use[s] <= k]:
                del cache[s]
            yield self._collate(pa.concat_tables(parts))
