"""The local S3 launcher must never signal a process that is not its server.

Its state.json keeps the server's PID. After a reboot or a SIGKILL that PID can belong to
another process, possibly the leader of another process group (a shell running the tests), and
`stop` signals the server's whole group. A reused PID must read as "not running"."""
import json
import subprocess
import time

from infra import local_s3
from pipeline.lock import pid_alive


def test_a_reused_pid_in_state_json_is_not_taken_for_the_server(tmp_path):
    # A process group leader of its own, as a shell started with `set -m` would be.
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (tmp_path / local_s3.STATE_FILE).write_text(json.dumps({
            "endpoint_url": "http://127.0.0.1:9", "access_key_id": "AVX",
            "secret_access_key": "s", "region": "us-east-1", "pid": bystander.pid,
            "data_dir": str(tmp_path), "ports": [1, 2, 3, 4, 5]}))
        assert local_s3.running(tmp_path) is None
        assert local_s3.stop(tmp_path) is False
        time.sleep(0.2)
        assert pid_alive(bystander.pid), "stop() signalled a process that is not its server"
    finally:
        bystander.kill()
        bystander.wait()


def test_the_running_server_is_recognised(s3_server):
    # Its PID may differ from the fixture's: tests/test_nightly.py restarts the server.
    server = local_s3.running(s3_server.data_dir)
    assert server is not None and server.endpoint_url == s3_server.endpoint_url
    cmdline = open(f"/proc/{server.pid}/cmdline", "rb").read().split(b"\0")
    assert cmdline[0].endswith(b"weed") and b"mini" in cmdline
