"""The nightly job on a real two-node Ray cluster on this machine: `ray start --head` plus
`ray start --address` (a second raylet that declares one GPU and a `worker_node` resource),
the annotation run and the release submitted with `ray job submit` as KubeRay's RayJob would,
against the real SeaweedFS server with real recordings.

Checks: the job succeeds, the run's summary and the release manifest are in S3, the tokenize
stage (which declares `num_gpus` through `ray.resources.tokenize`) ran on the GPU node, work ran
on both nodes, and stopping this cluster leaves every other Ray runtime on the machine alone.

Why not `ray stop`: it kills every process on the machine whose name looks like Ray's (it
matches names, not clusters), which would take down the test session's own runtime and any
other suite running beside this one. Each `ray start --block` here runs in a session of its
own, and every process of that cluster (GCS, raylets, dashboard, agents, workers, the job's
supervisor and driver) stays in that session, so teardown SIGKILLs exactly those sessions.
(The job supervisor's watcher shell detaches, but exits within a second of its supervisor.)
SIGKILL, not SIGTERM: `ray start --block` answers SIGTERM by draining its node for up to 30 s."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from infra.demo_corpus import LIBRIVOX, StagedFile, stage
from tests.conftest import LOCAL_CONFIG, ROOT, TEST_BUCKET
from tests.helpers import CHEAP

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

BIN = Path(sys.executable).parent          # the venv's console scripts, never whatever PATH has
RAY = BIN / "ray"
AUDIOVERSE = BIN / "audioverse"

PREFIX = f"s3://{TEST_BUCKET}/multinode/"
RAW = PREFIX + "raw/"
RUN_ID, RELEASE_ID = "mn1", "mnr1"
SUBMISSION_ID = "audioverse-nightly-mn1"
JOB_TIMEOUT_S = 420
CLIPS = sorted(LIBRIVOX.glob("*.wav"))[:2]  # two real LibriVox recordings (~10 s of speech)

# The writer of every partition steered onto the second node (its `worker_node` resource):
# parts written by workers there, not by the driver on the head.
COMMON = [f"input.uri={RAW}", f"output.uri={PREFIX}", "run.progress_interval_s=5", *CHEAP,
          "ray.resources.write.resources={worker_node: 0.01}"]
# The cluster config's GPU stage: on a cluster the codec actor must land on a GPU node.
RELEASE = ["release.fraction=1.0", "ray.resources.tokenize.num_gpus=1",
           "release.tokenizer.device=cpu"]

HEAD_CPUS, WORKER_CPUS = 2, 4               # logical; the model actors claim 3.75 in all
OBJECT_STORE_BYTES = 200 * 1024 * 1024


def _free_ports(n: int) -> list[int]:
    """n distinct ports free on every interface (held open together, so never the same)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]


def _session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`, from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()   # state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"<{path}: {exc}>"


class LocalCluster:
    """A head node and a GPU worker node started with `ray start --block`, each in a session of
    its own; `stop()` SIGKILLs exactly those two sessions (what `ray stop --force` does, scoped)."""

    def __init__(self):
        # Short: Ray's unix socket paths (<temp>/session_<date>_<pid>/sockets/...) must stay
        # under the 107-byte limit, which pytest's tmp_path can exceed.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rmn", dir="/tmp"))
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
        # The AWS_* variables of the S3 fixture are in os.environ: the raylets pass their
        # environment on to every worker and to the job's driver, so no secret goes on a
        # command line or into the job's runtime_env.
        self.env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
        self.procs: list[subprocess.Popen] = []
        self.gcs_port = self.dashboard_port = 0

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _node_flags(self) -> list[str]:
        manager, objects, agent_http, agent_grpc, metrics, runtime_env = _free_ports(6)
        return ["--node-ip-address=127.0.0.1", "--block", "--disable-usage-stats",
                f"--object-store-memory={OBJECT_STORE_BYTES}",
                # 0/0: workers bind OS-chosen ports, so two raylets (and any other Ray
                # runtime on the machine) never hand out the same one.
                "--min-worker-port=0", "--max-worker-port=0",
                f"--node-manager-port={manager}", f"--object-manager-port={objects}",
                f"--dashboard-agent-listen-port={agent_http}",
                f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"]

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.temp_dir / f"{name}.log", "wb")
        with log:
            proc = subprocess.Popen([str(RAY), "start", *args], env=self.env,
                                    cwd=self.temp_dir, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def _wait(self, what: str, ready, proc: subprocess.Popen, log: str, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: `ray start` exited with {proc.returncode}:\n"
                                   + _tail(self.temp_dir / log))
            try:
                result = ready()
            except Exception:  # noqa: BLE001 - not up yet (connection refused, 5xx)
                result = None
            if result:
                return result
            time.sleep(0.5)
        raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s:\n"
                           + _tail(self.temp_dir / log))

    def alive_nodes(self) -> list:
        from ray.util.state import list_nodes

        return [n for n in list_nodes(address=self.dashboard_url, detail=True, timeout=10)
                if n.state == "ALIVE"]

    def start(self, timeout_s: float = 90) -> None:
        self.gcs_port, self.dashboard_port, client_port = _free_ports(3)
        head = self._spawn("head", [
            "--head", f"--port={self.gcs_port}", f"--num-cpus={HEAD_CPUS}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={client_port}",
            f"--temp-dir={self.temp_dir}", *self._node_flags()])
        self._wait("head node", lambda: len(self.alive_nodes()) == 1, head, "head.log",
                   timeout_s)
        worker = self._spawn("worker", [
            f"--address={self.gcs_address}", f"--num-cpus={WORKER_CPUS}", "--num-gpus=1",
            "--resources=" + json.dumps({"worker_node": 1}), *self._node_flags()])
        nodes = self._wait("worker node", lambda: (n := self.alive_nodes()) and len(n) == 2 and n,
                           worker, "worker.log", timeout_s)
        self.head_id = next(n.node_id for n in nodes if n.is_head_node)
        self.gpu_id = next(n.node_id for n in nodes if not n.is_head_node)
        gpu = next(n for n in nodes if n.node_id == self.gpu_id)
        assert gpu.resources_total.get("GPU") == 1 and gpu.resources_total.get("worker_node") == 1

    def pids(self) -> list[int]:
        return [pid for proc in self.procs for pid in _session_pids(proc.pid)]

    def stop(self) -> None:
        for proc in reversed(self.procs):          # the worker node first, then the head
            for pid in _session_pids(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def ray_cli(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(RAY), *args], env=self.env, cwd=self.temp_dir,
                              capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture(scope="module")
def cluster(s3_server, ray_runtime):
    """The two-node cluster. Started after the S3 fixture (its AWS_* variables must be in the
    environment the raylets inherit) and beside the session's own local runtime, which it must
    leave alone. A second try with fresh ports covers a port taken between choosing and binding."""
    for attempt in (1, 2):
        c = LocalCluster()
        try:
            c.start()
            break
        except (RuntimeError, TimeoutError):
            c.stop()
            if attempt == 2:
                raise
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def nightly(cluster, s3_client):
    """Stage the recordings, submit run + release as one Ray job, wait for it to end."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    stage([StagedFile(f"librivox/{p.name}", p.read_bytes()) for p in CLIPS], RAW,
          client=s3_client)
    run = [str(AUDIOVERSE), "run", str(LOCAL_CONFIG), "--run-id", RUN_ID]
    release = [str(AUDIOVERSE), "release", str(LOCAL_CONFIG), "--release-id", RELEASE_ID]
    for cmd, overrides in ((run, COMMON), (release, COMMON + RELEASE)):
        for item in overrides:
            cmd += ["--set", item]
    # The entrypoint runs in a shell whose cwd is the raylet's; `ray job submit` shell-quotes
    # its arguments, so the `&&` chain goes in as one `bash -c` script.
    script = f"cd {shlex.quote(str(ROOT))} && {shlex.join(run)} && {shlex.join(release)}"
    t0 = time.monotonic()
    submitted = cluster.ray_cli("job", "submit", "--address", cluster.dashboard_url,
                                "--submission-id", SUBMISSION_ID, "--no-wait",
                                "--", "bash", "-c", script)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr

    client = JobSubmissionClient(cluster.dashboard_url)
    status = client.get_job_status(SUBMISSION_ID)
    while not status.is_terminal() and time.monotonic() - t0 < JOB_TIMEOUT_S:
        time.sleep(1)
        status = client.get_job_status(SUBMISSION_ID)
    wall = time.monotonic() - t0
    logs = client.get_job_logs(SUBMISSION_ID)          # what `ray job logs` prints
    if not status.is_terminal():
        cluster.ray_cli("job", "stop", "--address", cluster.dashboard_url, "--no-wait",
                        SUBMISSION_ID)
    print(f"\nnightly job {SUBMISSION_ID}: {status} after {wall:.0f}s")
    return {"status": status, "succeeded": status == JobStatus.SUCCEEDED,
            "logs": logs[-12000:], "info": client.get_job_info(SUBMISSION_ID)}


def _job_ok(nightly):
    assert nightly["succeeded"], (f"job ended {nightly['status']} "
                                  f"({nightly['info'].message}); its logs:\n{nightly['logs']}")


def _get_json(s3_client, key: str) -> dict:
    return json.loads(s3_client.get_object(Bucket=TEST_BUCKET, Key=key)["Body"].read())


def test_cluster_has_a_head_and_a_gpu_worker_node(cluster):
    nodes = {n.node_id: n for n in cluster.alive_nodes()}
    assert set(nodes) == {cluster.head_id, cluster.gpu_id}
    assert nodes[cluster.head_id].resources_total.get("GPU", 0) == 0
    assert nodes[cluster.gpu_id].resources_total["GPU"] == 1


def test_nightly_job_succeeds_and_publishes_the_run_and_the_release(nightly, s3_client,
                                                                     cluster):
    _job_ok(nightly)
    # The driver joined this cluster through RAY_ADDRESS (set by the job supervisor).
    assert "Connecting to existing Ray cluster" in nightly["logs"], nightly["logs"]
    summary = _get_json(s3_client, f"multinode/runs/{RUN_ID}/summary.json")
    assert summary["status"] == "succeeded" and summary["inputs"] == len(CLIPS)
    assert summary["recordings_annotated"] == len(CLIPS) and summary["segments"] > 0
    # Every partition's files were written by a worker on the second node.
    written = [f for files in summary["files"].values() for f in files if f.get("node")]
    assert written and {f["node"] for f in written} == {cluster.gpu_id}, written
    manifest = _get_json(s3_client, f"multinode/releases/{RELEASE_ID}/manifest.json")
    assert manifest["runs"] == [RUN_ID] and manifest["rows"] > 0
    assert manifest["tokenized"]["new"] == manifest["rows"]   # the codec ran in this job
    shards = [s for split in manifest["splits"].values() for s in split["shards"]]
    assert shards and sum(s["rows"] for s in shards) == manifest["rows"]
    for shard in shards:
        head = s3_client.head_object(Bucket=TEST_BUCKET,
                                     Key=f"multinode/releases/{RELEASE_ID}/{shard['path']}")
        assert head["ContentLength"] == shard["bytes"]


def test_gpu_stage_lands_on_the_gpu_node_and_work_spans_both_nodes(nightly, cluster):
    from ray.util.state import list_actors

    _job_ok(nightly)
    # Ray Data's actors report their class as "MapWorker(MapBatches(<Stage>))" (a stateless
    # stage fused in front shows as "...(_run_task_stage)->MapBatches(<Stage>)").
    actors = list_actors(address=cluster.dashboard_url, detail=True, limit=1000, timeout=30)
    node = {cluster.head_id: "head", cluster.gpu_id: "gpu"}
    where: dict[str, set[str]] = {}
    for actor in actors:
        if actor.class_name.startswith("MapWorker("):
            where.setdefault(actor.class_name, set()).add(node.get(actor.node_id, actor.node_id))
    print(f"\nstage actors by node: { {k: sorted(v) for k, v in sorted(where.items())} }")
    tokenize = [v for k, v in where.items() if "TokenizeStage" in k]
    assert tokenize == [{"gpu"}], where                 # declared num_gpus=1: the GPU node only
    # The annotation run's model actors (Ray Data spreads them) used both nodes.
    run_nodes = set().union(*(v for k, v in where.items() if "TokenizeStage" not in k))
    assert run_nodes == {"head", "gpu"}, where


def test_stopping_the_cluster_leaves_other_ray_runtimes_alive(cluster, ray_runtime):
    ray = ray_runtime
    assert cluster.pids()
    cluster.stop()
    assert cluster.pids() == []
    # The session's own runtime (started in this process by ray.init) still schedules work.
    assert ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60) == 42
