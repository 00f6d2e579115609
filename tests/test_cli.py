"""User errors stop early (before Ray starts) with one line and a distinct exit code."""
import pytest

from pipeline.errors import EXIT_CONFIG, EXIT_MODEL, EXIT_STORAGE
from tests.conftest import LOCAL_CONFIG, TEST_BUCKET
from tests.helpers import run_cli


def test_help_lists_commands_and_exit_codes():
    proc, _ = run_cli("run", "--help")
    assert proc.returncode == 0
    assert "--set" in proc.stdout and "--json" in proc.stdout and "storage error" in proc.stdout


def test_unknown_config_key_is_exit_2_with_one_line():
    proc, _ = run_cli("run", str(LOCAL_CONFIG), "--set", "asr.beam_sise=5")
    assert proc.returncode == EXIT_CONFIG
    assert "asr.beam_sise" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("env, message", [
    ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "cannot reach S3 at http://127.0.0.1:9"),
    ({"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, "rejected the credentials"),
    ({"AWS_ACCESS_KEY_ID": "NOSUCHKEY"}, "rejected the credentials"),
])
def test_storage_misconfiguration_fails_fast(s3_server, env, message):
    proc, seconds = run_cli("run", str(LOCAL_CONFIG), "--set", f"input.uri=s3://{TEST_BUCKET}/raw/",
                            "--set", f"output.uri=s3://{TEST_BUCKET}/", "--set",
                            "storage.max_attempts=1", env=env)
    assert proc.returncode == EXIT_STORAGE, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert "Started a local Ray" not in proc.stderr  # failed before any work
    assert seconds < 60


def test_missing_bucket_fails_fast(s3_server):
    proc, _ = run_cli("run", str(LOCAL_CONFIG), "--set", "input.uri=s3://no-such-bucket/raw/",
                      "--set", f"output.uri=s3://{TEST_BUCKET}/")
    assert proc.returncode == EXIT_STORAGE
    assert "bucket does not exist" in proc.stderr and "no-such-bucket" in proc.stderr


@pytest.mark.parametrize("entry", ["asr/whisper-base", "asr/moonshine-base-en"])
def test_missing_model_of_any_system_is_exit_5_naming_the_entry(s3_server, tmp_path, entry):
    proc, seconds = run_cli("run", str(LOCAL_CONFIG), "--set", f"input.uri=s3://{TEST_BUCKET}/raw/",
                            "--set", f"output.uri=s3://{TEST_BUCKET}/",
                            "--set", f"models.{entry}.source=path",
                            "--set", f"models.{entry}.location={tmp_path}/weights")
    assert proc.returncode == EXIT_MODEL, proc.stderr
    assert entry in proc.stderr and f"{tmp_path}/weights" in proc.stderr
    assert "Traceback" not in proc.stderr and "Started a local Ray" not in proc.stderr
