"""Two halves of `make check-reader-extra` (scripts/check_reader_extra.sh):

    .venv/bin/python scripts/check_reader_extra.py write          # the project's venv
    <reader-only venv>/bin/python scripts/check_reader_extra.py read URI

`write` puts a small release (3 shards, the release format of schemas/release.py) on the S3
server the environment names and prints its URI; `read` checks that the reader-only install has
none of the pipeline's heavy packages, then reads every row of the release with a DataLoader.
"""
from __future__ import annotations

import importlib.util
import sys

# What a trainer image must not need: the nightly job's stack.
NOT_INSTALLED = ("ray", "faster_whisper", "librosa", "duckdb", "transformers", "llama_cpp")


def write() -> None:
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.test_reader import write_release

    uri, written = write_release(sizes=(7, 5, 9))
    print(uri)


def read(uri: str) -> None:
    present = [m for m in NOT_INSTALLED if importlib.util.find_spec(m) is not None]
    if present:
        raise SystemExit(f"the [reader] extra installed {present}: a trainer image would carry "
                         f"the pipeline's stack")
    from torch.utils.data import DataLoader

    import pipeline.reader as reader
    from pipeline.reader import ReleaseDataset

    if "/site-packages/" not in reader.__file__:
        raise SystemExit(f"pipeline.reader came from {reader.__file__}, not the installed wheel")
    ds = ReleaseDataset(uri, split="train", batch_size=4)
    ids = [i for batch in DataLoader(ds, batch_size=None, num_workers=2)
           for i in batch["segment_id"]]
    if len(ids) != 21 or len(set(ids)) != 21:
        raise SystemExit(f"read {len(ids)} rows ({len(set(ids))} distinct) of 21")
    loaded = sorted(m for m in ("ray", "librosa", "pandas", "duckdb") if m in sys.modules)
    print(f"reader extra alone: read all 21 rows of {uri} in {len(ds)} batches with 2 workers; "
          f"heavy modules loaded: {loaded or 'none'}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["write"]:
        write()
    elif sys.argv[1:2] == ["read"] and len(sys.argv) == 3:
        read(sys.argv[2])
    else:
        raise SystemExit(__doc__)
