"""A stage for the scale benchmark and the selection tests only: in place of the model stages, it
turns each listed object of a partition into result rows copied from a template (the rows a real
run wrote for real recordings, or generated rows; cycled to `segments` rows a recording), with the
object's own ids. Everything around it is the real night: loading
partitions from the plan, the writer, the markers, the summary, the ledger merge.
"""
from __future__ import annotations

import zlib

import pyarrow as pa
import pyarrow.compute as pc

from operators.base import Stage
from schemas.config import StageResources
from schemas.tables import LISTING_SCHEMA

SOURCE = tuple(LISTING_SCHEMA.names)


class ReplayStage(Stage):
    """listing rows -> result rows copied from `template` (result rows of real recordings, with
    reject_* columns): an object gets the rows of template recording crc32(its id) mod n; a recording's
    segments are cycled to `segments` rows (segment_index 0..segments-1), a rejected one stays
    one reject row."""

    name = "replay"
    requires = SOURCE
    resources = StageResources(num_cpus=0.5, concurrency=2)

    def __init__(self, template: pa.Table, segments: int = 10, vary: bool = False):
        super().__init__()
        self.template = template
        self.vary = vary
        ids = template.column("recording_id")
        rejected = pc.is_valid(template.column("reject_reason"))
        self.recordings = []
        for rid in pc.unique(ids).to_pylist():
            rows = pc.indices_nonzero(pc.equal(ids, rid)).to_pylist()
            if not pc.any(pc.and_(pc.equal(ids, rid), rejected)).as_py():
                rows = [rows[k % len(rows)] for k in range(segments)]
            self.recordings.append(pa.array(rows, pa.uint64()))

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.process(batch)  # no models to load, no schema to conform to

    def process(self, batch: pa.Table) -> pa.Table:
        picks, owners, index = [], [], []
        ids = batch.column("recording_id").to_pylist()
        for i in range(batch.num_rows):
            # By the object's id, not its place in the partition: every template recording
            # is used, whatever the partition size.
            rows = self.recordings[zlib.crc32(ids[i].encode()) % len(self.recordings)]
            picks.append(rows)
            owners.append(pa.array([i] * len(rows), pa.int64()))
            index.append(pa.array(range(len(rows)), pa.int32()))
        out = self.template.take(pa.concat_arrays(picks))
        listing = batch.take(pa.concat_arrays(owners))
        for name in (*SOURCE, "partition"):
            out = out.set_column(out.schema.get_field_index(name), name, listing.column(name)) \
                if name in out.column_names else out.append_column(name, listing.column(name))
        is_segment = pc.is_valid(out.column("segment_index"))
        index = pc.if_else(is_segment, pa.concat_arrays(index), pa.scalar(None, pa.int32()))
        segment = pc.if_else(is_segment, pc.binary_join_element_wise(
            out.column("recording_id"), pc.utf8_lpad(pc.cast(index, pa.string()), 5, "0"), "-"),
            pa.scalar(None, pa.string()))
        out = out.set_column(out.schema.get_field_index("segment_index"), "segment_index", index)
        out = out.set_column(out.schema.get_field_index("segment_id"), "segment_id", segment)
        return self._varied(out, listing) if self.vary else out

    @staticmethod
    def _varied(out: pa.Table, listing: pa.Table) -> pa.Table:
        """Rows less alike than their template (the scale benchmark's release): each segment
        its own audio hash except those of one object in 20 (exact copies of the template's
        sound), and an SNR shifted by up to 10 dB by object, so scores spread out (ties
        remain)."""
        import numpy as np

        keys = np.array([zlib.crc32(r.encode()) for r in
                         listing.column("recording_id").to_pylist()], dtype=np.int64)
        copy = pa.array(keys % 20 == 0)
        sha = out.column("audio_sha256")
        sha = pc.if_else(pc.or_(copy, pc.is_null(sha)), sha, out.column("segment_id"))
        snr = pc.add(out.column("snr_db"), pa.array((keys % 1000) / 100.0))
        out = out.set_column(out.schema.get_field_index("audio_sha256"), "audio_sha256", sha)
        return out.set_column(out.schema.get_field_index("snr_db"), "snr_db",
                              snr.cast(out.schema.field("snr_db").type))
