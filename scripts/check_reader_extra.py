"""Two halves of `make check-reader-extra` (scripts/check_reader_extra.sh):

    .venv/bin/python scripts/check_reader_extra.py write          # the project's venv
    <reader-only venv>/bin/python scripts/check_reader_extra.py read URI
    <the same venv + datasets>/bin/python scripts/check_reader_extra.py read-hf URI

`write` puts a small release (3 shards, the release format of schemas/release.py) on the S3
server the environment names and prints its URI; `read` checks that the reader-only install has
none of the pipeline's heavy packages, then reads every row of the release with a DataLoader;
`read-hf` loads the same shards with Hugging Face `datasets`' Parquet loader (the plain-Parquet
route the README documents) and checks rows and codes against the reader's.
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


def read_hf(uri: str) -> None:
    import tempfile
    from pathlib import Path

    import numpy as np
    from datasets import load_dataset

    from operators.storage import ObjectStore
    from pipeline.reader import ReleaseDataset, codes_array
    from schemas.config import StorageConfig

    ds = ReleaseDataset(uri, split="train", batch_size=4)
    want = {sid: (codes, int(n)) for batch in ds
            for sid, codes, n in zip(batch["segment_id"], batch["codes"], batch["num_frames"])}
    store = ObjectStore(StorageConfig())
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, shard in enumerate(ds.shard_uris()):
            files.append(str(Path(tmp) / f"shard-{i}.parquet"))
            Path(files[-1]).write_bytes(store.get(shard))
        hf = load_dataset("parquet", data_files=files, split="train",
                          cache_dir=str(Path(tmp) / "cache"))
        if sorted(hf["segment_id"]) != sorted(want):
            raise SystemExit(f"datasets read {len(hf)} rows, not the reader's {len(want)}")
        for row in hf:
            codes, n = want[row["segment_id"]]
            got = codes_array(row["codes"])
            if got.shape != (ds.num_codebooks, n) or not np.array_equal(got, codes[:, :n].numpy()):
                raise SystemExit(f"segment {row['segment_id']}: datasets' codes differ")
    print(f"Hugging Face datasets read the same {len(want)} rows and codes from the shards")


if __name__ == "__main__":
    if sys.argv[1:2] == ["write"]:
        write()
    elif sys.argv[1:2] == ["read"] and len(sys.argv) == 3:
        read(sys.argv[2])
    elif sys.argv[1:2] == ["read-hf"] and len(sys.argv) == 3:
        read_hf(sys.argv[2])
    else:
        raise SystemExit(__doc__)
