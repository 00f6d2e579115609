"""The model registry: packaged, path and s3 sources; missing or corrupt models are clear errors
naming the entry and where it looked; nothing is ever fetched from a hub."""
import shutil

import pytest

from model_serving import registry as reg
from model_serving.registry import ModelError, ModelRegistry, sha256_file
from schemas.config import ModelEntry, ModelFile, StorageConfig
from tests.conftest import TEST_BUCKET


@pytest.fixture(autouse=True)
def fresh_process_cache():
    reg._verified.clear()  # each test sees the registry as a new worker would
    yield
    reg._verified.clear()


@pytest.fixture
def vad_file(registry):
    return registry.resolve("vad/silero-v6").file("silero_vad_v6.onnx")


def test_split_packaged_weights_are_joined_and_verified(registry, tmp_path):
    entry = registry.entries["asr/whisper-base"]
    fresh = ModelRegistry({"asr/whisper-base": entry}, str(tmp_path))
    resolved = fresh.resolve("asr/whisper-base")
    assert resolved.directory.is_relative_to(tmp_path)
    model_bin = resolved.file("model.bin")
    assert sha256_file(model_bin) == entry.files["model.bin"].sha256
    assert not list(resolved.directory.glob(".*tmp*"))  # no half-written files left behind
    assert resolved.label == f"asr/whisper-base@{entry.version}"


def test_unknown_name_lists_known_entries(registry):
    with pytest.raises(ModelError, match="not in the registry.*asr/whisper-base"):
        registry.resolve("asr/large-v3")


def test_missing_package_names_entry_and_place(tmp_path):
    entry = ModelEntry(source="packaged", version="1", files={
        "model.bin": ModelFile(sha256="0" * 64, parts=["not_installed_pkg/data/model.bin"])})
    with pytest.raises(ModelError) as err:
        ModelRegistry({"asr/ghost": entry}, str(tmp_path)).resolve("asr/ghost")
    assert "asr/ghost" in str(err.value) and "not_installed_pkg" in str(err.value)


def test_optional_model_not_installed_says_how_and_is_skipped_by_models(tmp_path, capsys):
    from dataclasses import replace

    from pipeline.cli import _models
    from pipeline.config import load_config
    from tests.conftest import LOCAL_CONFIG

    entry = ModelEntry(source="packaged", version="1", install="make install-optional-models",
                       files={"m.gguf": ModelFile(sha256="0" * 64,
                                                  parts=["not_installed_pkg/data/m.gguf"])})
    registry = ModelRegistry({"caption/optional": entry}, str(tmp_path))
    assert not registry.installed("caption/optional")
    with pytest.raises(ModelError, match="make install-optional-models"):
        registry.resolve("caption/optional")
    cfg = load_config(LOCAL_CONFIG)
    only = replace(cfg, models={"caption/optional": entry}, model_cache_dir=str(tmp_path))
    assert _models(only, quiet=False) == 0
    assert "not installed (optional: make install-optional-models)" in capsys.readouterr().out
    required = replace(only, models={"caption/optional": replace(entry, install=None)})
    with pytest.raises(ModelError):
        _models(required, quiet=True)


def test_path_source_checks_checksums(tmp_path, vad_file):
    shutil.copy(vad_file, tmp_path / "silero_vad_v6.onnx")
    good = ModelEntry(source="path", version="1", location=str(tmp_path), files={
        "silero_vad_v6.onnx": ModelFile(sha256=sha256_file(vad_file))})
    assert ModelRegistry({"vad/x": good}, str(tmp_path)).resolve("vad/x").directory == tmp_path

    reg._verified.clear()
    with open(tmp_path / "silero_vad_v6.onnx", "r+b") as f:  # one flipped byte
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelError, match="vad/x' is corrupt"):
        ModelRegistry({"vad/x": good}, str(tmp_path)).resolve("vad/x")


def test_unset_checksum_in_cluster_config_says_how_to_fill_it(tmp_path):
    from pipeline.config import load_config
    from tests.conftest import LOCAL_CONFIG

    cfg = load_config(LOCAL_CONFIG.parent / "cluster.yaml",
                      [f"models.asr/whisper-large-v3.location={tmp_path}"])
    for name in cfg.models["asr/whisper-large-v3"].files:
        (tmp_path / name).write_bytes(b"staged weights")
    registry = ModelRegistry(cfg.models, str(tmp_path / "cache"))
    with pytest.raises(ModelError, match="checksum of 'model.bin' is not set.*sha256sum"):
        registry.resolve("asr/whisper-large-v3")


def test_missing_path_says_where_it_looked(tmp_path):
    entry = ModelEntry(source="path", version="1", location=str(tmp_path / "nowhere"),
                       files={"model.bin": ModelFile(sha256="0" * 64)})
    with pytest.raises(ModelError, match=f"{tmp_path}/nowhere does not exist"):
        ModelRegistry({"asr/big": entry}, str(tmp_path)).resolve("asr/big")


def test_s3_source_is_copied_to_cache_and_verified(s3_server, s3_client, tmp_path, vad_file):
    s3_client.upload_file(str(vad_file), TEST_BUCKET, "models/vad-test/silero_vad_v6.onnx")
    entry = ModelEntry(source="s3", version="7", location=f"s3://{TEST_BUCKET}/models/vad-test/",
                       files={"silero_vad_v6.onnx": ModelFile(sha256=sha256_file(vad_file))})
    resolved = ModelRegistry({"vad/s3": entry}, str(tmp_path), StorageConfig()).resolve("vad/s3")
    assert resolved.directory.is_relative_to(tmp_path)
    assert sha256_file(resolved.file("silero_vad_v6.onnx")) == entry.files["silero_vad_v6.onnx"].sha256

    missing = ModelEntry(source="s3", version="1", location=f"s3://{TEST_BUCKET}/models/none/",
                         files={"model.bin": ModelFile(sha256="0" * 64)})
    with pytest.raises(ModelError, match="vad/none' not found.*models/none/model.bin"):
        ModelRegistry({"vad/none": missing}, str(tmp_path), StorageConfig()).resolve("vad/none")
