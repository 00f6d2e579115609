"""The local S3 launcher must never signal a process that is not its server.

Its state.json keeps the server's PID. After a reboot or a SIGKILL that PID can belong to
another process, possibly the leader of another process group (a shell running the tests), and
`stop` signals the server's whole group. A reused PID must read as "not running"."""
import json
import logging
import socket
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


def test_the_five_ports_and_their_grpc_twins_are_ten_distinct_ports():
    # The pair that once took every test down: filer 43217 and admin 33217, whose gRPC twin is
    # 43217. Whatever order the free ports come in, no port is another's twin.
    offered = iter([43217, 33217, 33217, 23217, 44000, 34000, 45000, 46000, 47000])
    ports = local_s3._free_ports(5, pick=lambda: next(offered))
    every = ports + [p + local_s3.GRPC_OFFSET for p in ports]
    assert len(set(every)) == 10, ports


def test_start_recovers_when_weed_fails_on_a_port_taken_under_it(tmp_path, monkeypatch):
    """The first ports handed to `weed` include one another process listens on (taken after
    they were picked, as happens on a busy machine): weed exits with 'Port allocation failed';
    start() logs it and starts again on new ports."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    real, calls = local_s3._free_ports, []

    def first_ports_include_the_held_one(count, **kw):
        ports = real(count, **kw)
        if not calls:
            ports[3] = held.getsockname()[1]  # the S3 port
        calls.append(list(ports))
        return ports

    monkeypatch.setattr(local_s3, "_free_ports", first_ports_include_the_held_one)
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    local_s3.log.addHandler(handler)
    try:
        server = local_s3.start(tmp_path, bucket="recover-test", timeout_s=60)
        try:
            assert len(calls) == 2, calls
            assert server.endpoint_url == f"http://127.0.0.1:{calls[1][3]}"
            assert any("Port allocation failed" in m and "attempt 2 of" in m
                       for m in messages), messages
            assert local_s3.running(tmp_path) is not None
        finally:
            local_s3.stop(tmp_path)
    finally:
        local_s3.log.removeHandler(handler)
        held.close()
