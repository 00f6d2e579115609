"""The model registry: a model name -> a local directory holding its verified files.

Four kinds of source, all without a model hub:
- `packaged`: files inside installed Python packages, each given as one or more parts
  ("<import name>/<path>") that are joined in order into the cache (weights split in two packages);
  a file of one part is used where it lies.
- `path`: a directory on local disk (a mounted volume on a cluster).
- `s3`: an s3://bucket/prefix/ copied once into the local cache.
- `seeded`: an untrained model built in the cache from a fixed seed by this project's code
  (the local audio codec: no trained codec ships in any package). Its bytes are the same on
  every machine, so its sha256 is pinned like any other file.

Every file's sha256 is checked before a model is handed out; a missing or corrupt model raises
ModelError naming the registry entry and every place that was looked at.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from schemas.config import ModelEntry, StorageConfig
from schemas.errors import EXIT_MODEL, AudioverseError

_CHUNK = 8 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_lock = threading.Lock()
_verified: dict[tuple, "ResolvedModel"] = {}  # per process: hash each file once


class ModelError(AudioverseError):
    """A model that cannot be used: unknown name, missing files or a checksum mismatch."""

    exit_code = EXIT_MODEL
    kind = "model error"


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    family: str
    directory: Path
    files: tuple[str, ...] = ()  # the entry's declared (checksummed) files

    def file(self, name: str) -> Path:
        return self.directory / name

    def only_file(self, suffix: str, what: str) -> Path:
        """The one declared file ending in `suffix` (a checkpoint, a label list). Only declared
        files count: a packaged model used in place sits among files nobody checksummed."""
        names = sorted(f for f in self.files if f.endswith(suffix))
        if len(names) != 1:
            raise ModelError(f"model '{self.name}': expected exactly one {what} (*{suffix}) among "
                             f"its registry files, found {names or 'none'}")
        return self.directory / names[0]

    @property
    def label(self) -> str:
        """Provenance string written into every row the model touched."""
        return f"{self.name}@{self.version}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _package_dir(import_name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


class ModelRegistry:
    """Resolves registry entries (from the run config) to verified local directories."""

    def __init__(self, entries: dict[str, ModelEntry], cache_dir: str,
                 storage: StorageConfig | None = None):
        self.entries = entries
        self.cache_dir = Path(os.path.expanduser(cache_dir))
        self.storage = storage or StorageConfig()

    def resolve(self, name: str) -> ResolvedModel:
        entry = self.entries.get(name)
        if entry is None:
            known = ", ".join(sorted(self.entries)) or "none"
            raise ModelError(
                f"model '{name}' is not in the registry (known: {known}); add it under "
                f"`models:` in the config"
            )
        # Same name and version from another place (a test's temp dir, a new mount) is another
        # model as far as verification goes.
        key = (name, entry.version, entry.source, entry.location, str(self.cache_dir),
               tuple(sorted((f, m.sha256) for f, m in entry.files.items())))
        with _lock:
            if key in _verified:
                return _verified[key]
            if entry.source == "packaged":
                directory = self._packaged(name, entry)
            elif entry.source == "path":
                directory = self._local_path(name, entry)
            elif entry.source == "s3":
                directory = self._from_s3(name, entry)
            elif entry.source == "seeded":
                directory = self._seeded(name, entry)
            else:
                raise ModelError(
                    f"model '{name}': unknown source '{entry.source}' "
                    f"(use packaged, path, s3 or seeded)"
                )
            resolved = ResolvedModel(name, entry.version, entry.family, directory,
                                     tuple(sorted(entry.files)))
            _verified[key] = resolved
            return resolved

    def installed(self, name: str) -> bool:
        """Whether every package a packaged model's parts live in is installed (a model that is
        not packaged counts as installed)."""
        entry = self.entries[name]
        if entry.source != "packaged":
            return True
        return all(_package_dir(part.partition("/")[0]) is not None
                   for spec in entry.files.values() for part in spec.parts or [])

    # --- sources -------------------------------------------------------------------------------
    def _cache_for(self, name: str, entry: ModelEntry) -> Path:
        return self.cache_dir / name.replace("/", "--") / entry.version

    def _packaged(self, name: str, entry: ModelEntry) -> Path:
        part_paths: dict[str, list[Path]] = {}
        for filename, spec in entry.files.items():
            if not spec.parts:
                raise ModelError(f"model '{name}': packaged file '{filename}' lists no parts")
            paths = []
            for part in spec.parts:
                package, _, rel = part.partition("/")
                pkg_dir = _package_dir(package)
                where = pkg_dir / rel if pkg_dir else None
                if where is None or not where.is_file():
                    looked = str(where) if where else f"installed package '{package}' (not installed)"
                    raise ModelError(
                        f"model '{name}': file '{filename}' part '{part}' not found; looked in "
                        f"{looked}. Install the model packages with "
                        + (f"`{entry.install}`" if entry.install
                           else "`make install` (pinned in requirements.txt)")
                    )
                paths.append(where)
            part_paths[filename] = paths

        in_place = self._common_root(part_paths)
        if in_place is not None:  # every file lies in one package directory: nothing to join
            self._verify(name, entry, in_place, where=f"package data {in_place}")
            return in_place

        directory = self._cache_for(name, entry)
        if self._is_complete(entry, directory):
            self._verify(name, entry, directory, where=f"cache {directory}")
            return directory
        directory.mkdir(parents=True, exist_ok=True)
        for filename, paths in part_paths.items():
            tmp = directory / f".{filename}.tmp-{os.getpid()}"
            with open(tmp, "wb") as out:
                for path in paths:
                    with open(path, "rb") as src:
                        while chunk := src.read(_CHUNK):
                            out.write(chunk)
            os.replace(tmp, directory / filename)  # atomic: a half-joined file is never seen
        self._verify(name, entry, directory, where=f"cache {directory} (joined from packages)")
        return directory

    def _seeded(self, name: str, entry: ModelEntry) -> Path:
        directory = self._cache_for(name, entry)
        if not self._is_complete(entry, directory):
            if entry.family != "mimi-seeded":
                raise ModelError(f"model '{name}': no seeded builder for family "
                                 f"'{entry.family}' (known: mimi-seeded)")
            import shutil

            from model_serving.codec import write_seeded_codec

            tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            write_seeded_codec(tmp)
            shutil.rmtree(directory, ignore_errors=True)
            directory.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, directory)  # atomic: another worker never sees half a model
            except OSError:  # another process got there first
                shutil.rmtree(tmp, ignore_errors=True)
        self._verify(name, entry, directory, where=f"cache {directory} (built from a seed)")
        return directory

    def _local_path(self, name: str, entry: ModelEntry) -> Path:
        if not entry.location:
            raise ModelError(f"model '{name}': source 'path' needs `location:` (a directory)")
        directory = Path(os.path.expanduser(entry.location))
        if not directory.is_dir():
            raise ModelError(
                f"model '{name}' not found: directory {directory} does not exist; mount or copy "
                f"the weights there, or change models.{name}.location"
            )
        self._verify(name, entry, directory, where=str(directory))
        return directory

    def _from_s3(self, name: str, entry: ModelEntry) -> Path:
        from model_serving.s3client import classify, make_s3_client, split_uri

        if not entry.location or not entry.location.startswith("s3://"):
            raise ModelError(f"model '{name}': source 's3' needs `location: s3://bucket/prefix/`")
        directory = self._cache_for(name, entry)
        if self._is_complete(entry, directory):
            self._verify(name, entry, directory, where=f"cache {directory}")
            return directory
        bucket, prefix = split_uri(entry.location)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        client = make_s3_client(self.storage)
        directory.mkdir(parents=True, exist_ok=True)
        for filename in entry.files:
            tmp = directory / f".{filename}.tmp-{os.getpid()}"
            try:
                client.download_file(bucket, prefix + filename, str(tmp))
            except Exception as exc:  # noqa: BLE001 - reported as a model error below
                tmp.unlink(missing_ok=True)
                err = classify(exc, f"fetching model '{name}'", self.storage)
                missing = "404" in str(exc) or "NoSuchKey" in str(exc)
                raise ModelError(
                    f"model '{name}' not found: could not copy s3://{bucket}/{prefix}{filename} "
                    f"to {directory}" + (" (no such object)" if missing else f" ({err})")
                ) from exc
            os.replace(tmp, directory / filename)
        self._verify(name, entry, directory, where=f"cache {directory} (from {entry.location})")
        return directory

    @staticmethod
    def _common_root(part_paths: dict[str, list[Path]]) -> Path | None:
        """The directory D with D/<file name> == its only part, for every file; else None.
        File names may hold sub-directories (e.g. "en-us/mdef")."""
        roots = set()
        for filename, paths in part_paths.items():
            if len(paths) != 1:
                return None
            depth = len(Path(filename).parts)
            path = paths[0]
            if path.parts[-depth:] != Path(filename).parts:
                return None
            roots.add(Path(*path.parts[:-depth]))
        return roots.pop() if len(roots) == 1 else None

    # --- checks --------------------------------------------------------------------------------
    @staticmethod
    def _is_complete(entry: ModelEntry, directory: Path) -> bool:
        return all((directory / f).is_file() for f in entry.files)

    @staticmethod
    def _verify(name: str, entry: ModelEntry, directory: Path, where: str) -> None:
        for filename, spec in entry.files.items():
            path = directory / filename
            if not path.is_file():
                raise ModelError(f"model '{name}' not found: file '{filename}' missing in {where}")
            if not _SHA256.fullmatch(spec.sha256):
                raise ModelError(
                    f"model '{name}': the checksum of '{filename}' is not set in the registry "
                    f"({spec.sha256!r}); check the file's origin, run `sha256sum {path}` and put "
                    f"the value in models.{name}.files.{filename}.sha256")
            actual = sha256_file(path)
            if actual != spec.sha256:
                raise ModelError(
                    f"model '{name}' is corrupt: {path} has sha256 {actual[:12]}..., the registry "
                    f"expects {spec.sha256[:12]}...; delete it and reinstall, or fix "
                    f"models.{name}.files.{filename}.sha256"
                )
