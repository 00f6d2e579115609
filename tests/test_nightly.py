"""Nightly operations on the real stack (SeaweedFS, local Ray, packaged models, real audio):
incremental nights and the ledger, `status` and `--dry-run`, the run lock, resume after a killed
driver / a killed worker / everything stopped, and storage faults (a fault-injecting proxy in
front of the real server; the real server restarted mid-run).

Every fault run must publish what a clean run of the same objects publishes: the same
recordings in rejects (with reasons) and the same (segment id, drop reason, selected transcript,
caption) rows in annotations; nothing twice, nothing missing, and under the run's published
prefix exactly the files its summary.json lists. Captions are off in this cheap config, so the
caption column is null on both sides here (tests/test_captioner.py checks that greedy captions
repeat).
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra import local_s3
from infra.processes import descendants
from infra.demo_corpus import POCKETSPHINX, TUXPAINT, StagedFile, stage
from operators.storage import ObjectStore
from pipeline.cli import main
from pipeline.errors import EXIT_LOCKED, EXIT_STORAGE
from pipeline.lock import LockHeld, LockLost, RunLock, lock_uri, pid_alive, read_lock
from pipeline.runner import run_pipeline
from schemas.config import StorageConfig
from tests.conftest import LOCAL_CONFIG, TEST_BUCKET
from tests.helpers import CHEAP
from tests.s3_fault_proxy import S3FaultProxy

pytestmark = pytest.mark.integration

BASE = f"s3://{TEST_BUCKET}/nightly/"
RAW = BASE + "raw/"
AUDIOVERSE = str(Path(sys.executable).parent / "audioverse")


def corpus() -> list[StagedFile]:
    cards = sorted((POCKETSPHINX / "cards").glob("*.wav"))
    rng = np.random.default_rng(7)
    return [
        StagedFile("a/card1.wav", cards[0].read_bytes()),
        StagedFile("a/card2.wav", cards[1].read_bytes()),
        StagedFile("b/violin.ogg", (TUXPAINT / "hobbies/music/string/violin.ogg").read_bytes()),
        StagedFile("c/random_bytes.wav", rng.bytes(48_000)),
    ]


def overrides(out: str, *extra: str, raw: str = RAW) -> list[str]:
    """The cheap config; the four objects in two partitions unless `extra` says otherwise."""
    return [f"input.uri={raw}", f"output.uri={out}", "ray.object_store_mb=300",
            "run.progress_interval_s=5", "run.ledger_buckets=2", *CHEAP, *extra]


def outputs(store: ObjectStore, out: str, run_id: str) -> dict:
    """What a run published, in the terms the equality with a clean run is defined in."""
    prefix = f"{out}runs/{run_id}/"
    summary = json.loads(store.get(prefix + "summary.json"))
    tables = {}
    for name in ("annotations", "rejects"):
        parts = [pq.read_table(io.BytesIO(store.get(prefix + f["path"])))
                 for f in summary["files"][name]]
        tables[name] = pa.concat_tables(parts)
    ann = tables["annotations"].to_pylist()
    rows = sorted((r["segment_id"], r["drop_reason"], r["transcript"], r["caption_description"])
                  for r in ann)
    rejects = sorted((r["source_uri"].rsplit("/", 1)[-1], r["reason"])
                     for r in tables["rejects"].to_pylist())
    listed = sorted(o.uri[len(prefix):] for o in store.list(prefix))
    named = sorted([f["path"] for fs in summary["files"].values() for f in fs] + ["summary.json"])
    assert listed == named, f"files under {prefix} that its summary does not list"
    assert len({r[0] for r in rows}) == len(rows), "a segment is published twice"
    assert not store.list(f"{out}_staging/{run_id}/"), "staging left after commit"
    return {"summary": summary, "rows": rows, "rejects": rejects}


def same_as_clean(got: dict, clean: dict) -> None:
    assert got["rejects"] == clean["rejects"]
    assert got["rows"] == clean["rows"]
    assert got["summary"]["inputs"] == clean["summary"]["inputs"]


@pytest.fixture(scope="module")
def store(s3_server, s3_client):
    stage(corpus(), RAW, client=s3_client)
    return ObjectStore(StorageConfig())


@pytest.fixture(scope="module")
def clean(store, ray_runtime, local_config):
    out = BASE + "clean/"
    result = run_pipeline(local_config(*overrides(out)), run_id="clean")
    assert result.exit_code == 0
    got = outputs(store, out, "clean")
    assert got["rejects"] == [("random_bytes.wav", "undecodable")]
    assert len(got["rows"]) >= 3 and any(r[2] for r in got["rows"])  # speech was transcribed
    return got


# --- processes --------------------------------------------------------------------------------
def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def start_driver(out: str, run_id: str, log_path: Path) -> subprocess.Popen:
    """`audioverse run` as its own process (and session), one object per partition."""
    args = [AUDIOVERSE, "run", str(LOCAL_CONFIG), "--run-id", run_id]
    for item in overrides(out, "run.partition_objects=1"):
        args += ["--set", item]
    return subprocess.Popen(args, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for_checkpoint(store: ObjectStore, out: str, run_id: str, proc: subprocess.Popen,
                        log_path: Path, parts: int = 1, timeout_s: float = 240) -> None:
    """Wait until `parts` partitions of the run are written (their done markers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(store.list(f"{out}_staging/{run_id}/done/")) >= parts:
            return
        assert proc.poll() is None, f"the run ended before a checkpoint:\n{log_path.read_text()}"
        time.sleep(0.3)
    raise AssertionError(f"no checkpoint within {timeout_s}s:\n{log_path.read_text()}")


# --- incremental nights, ledger, status, dry run ----------------------------------------------
def test_incremental_nights_ledger_status_and_dry_run(store, s3_client, ray_runtime,
                                                      local_config, capsys):
    raw, out = BASE + "inc-raw/", BASE + "inc/"
    files = corpus()
    stage(files[:3], raw, client=s3_client)  # card1, card2, violin
    cfg = local_config(*overrides(out, raw=raw))
    night1 = run_pipeline(cfg, run_id="n1")
    assert night1.exit_code == 0 and night1.summary["sources"]["new"] == 3

    # During the day: one object arrives, one is replaced, one is deleted, one is taken down.
    bucket, prefix = TEST_BUCKET, raw[len(f"s3://{TEST_BUCKET}/"):]
    s3_client.put_object(Bucket=bucket, Key=prefix + "c/random_bytes.wav", Body=files[3].body)
    s3_client.put_object(Bucket=bucket, Key=prefix + "a/card1.wav",
                         Body=files[0].body[:-3200])  # new bytes, new ETag
    s3_client.delete_object(Bucket=bucket, Key=prefix + "b/violin.ogg")
    # Two more arrive under keys with '#', '?', spaces and non-ASCII, and are taken down at
    # once: a '#' inside a line is part of the key, not a comment.
    odd = ["d/hash#frag.wav", "d/sp ace \u00fc?.wav"]
    for key in odd:
        s3_client.put_object(Bucket=bucket, Key=prefix + key, Body=files[1].body)
    s3_client.put_object(Bucket=bucket, Key="nightly/takedown.txt",
                         Body=("# legal request 123\na/card2.wav\n" + odd[0] + "\n"
                               + raw + odd[1] + "\n").encode())
    takedown = f"input.takedown_uri=s3://{TEST_BUCKET}/nightly/takedown.txt"
    cfg2 = local_config(*overrides(out, takedown, raw=raw))

    assert main(["run", str(LOCAL_CONFIG), "--dry-run", "--json",
                 *sum([["--set", o] for o in overrides(out, takedown, raw=raw)], [])]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["sources"]["to_process"] == 2 and plan["sources"]["new"] == 1
    assert plan["sources"]["changed"] == 1 and plan["sources"]["deleted"] == 1
    assert plan["sources"]["takedown"] == 3 and plan["sources"]["unchanged"] == 0
    assert sorted(o["source_uri"].rsplit("/", 1)[-1] for o in plan["objects"]) == \
        ["card1.wav", "random_bytes.wav"]
    card1 = next(o for o in plan["objects"] if o["source_uri"].endswith("card1.wav"))
    assert 0.5 < card1["seconds"] < 10  # read from the WAV header
    assert plan["real_time_factor_from"] == "run n1"
    # the plan rounds the estimate to 0.1 s: at a few seconds that step is more than 1%
    assert plan["estimated_wall_s"] == pytest.approx(
        sum(o["seconds"] for o in plan["objects"]) * night1.summary["real_time_factor"],
        rel=0.01, abs=0.05)
    assert not store.list(f"{out}_staging/"), "a dry run writes nothing"

    night2 = run_pipeline(cfg2, run_id="n2")
    src = night2.summary["sources"]
    assert (src["listed"], src["to_process"], src["unchanged"]) == (5, 2, 0)
    assert (src["new"], src["changed"], src["deleted"], src["takedown"]) == (1, 1, 1, 3)
    assert night2.summary["inputs"] == 2
    # Night 3: nothing changed, nothing to do; --full processes every listed object again.
    night3 = run_pipeline(cfg2, run_id="n3")
    assert night3.summary["inputs"] == 0 and night3.summary["sources"]["unchanged"] == 2

    from pipeline.ledger import latest_rows, latest_states, read_bucket, read_snapshot
    from schemas.layout import Layout

    layout = Layout(out)
    snapshot = read_snapshot(store, layout, 16)
    assert snapshot.merged_runs == ["n1", "n2", "n3"] and snapshot.buckets == 2
    states = latest_states(latest_rows([read_bucket(store, layout, snapshot, b)
                                        for b in range(snapshot.buckets)]))
    by_key = {uri.rsplit("/", 1)[-1]: s for uri, s in states.items()}
    assert {k: s["state"] for k, s in by_key.items()} == {
        "card1.wav": "annotated", "card2.wav": "takedown", "violin.ogg": "deleted",
        "random_bytes.wav": "rejected", "hash#frag.wav": "takedown",
        "sp ace \u00fc?.wav": "takedown"}
    assert by_key["card1.wav"]["run_id"] == "n2"  # the changed object's new version
    # The release's view: the annotated sources of the ledger, nothing deleted or taken down.
    from pipeline.release_select import collect_view

    view = collect_view(cfg2, store, layout)
    assert {u.rsplit("/", 1)[-1] for u in view.column("source_uri").to_pylist()} == \
        {"card1.wav"}
    assert set(view.column("run_id").to_pylist()) == {"n2"}

    assert main(["status", str(LOCAL_CONFIG), "--json",
                 *sum([["--set", o] for o in overrides(out, raw=raw)], [])]) == 0
    st = json.loads(capsys.readouterr().out)
    assert [(r["run_id"], r["state"], r["inputs"]) for r in st["runs"]] == \
        [("n1", "committed", 3), ("n2", "committed", 2), ("n3", "committed", 0)]
    assert st["sources"] == {"annotated": 1, "rejected": 1, "deleted": 1, "takedown": 3}
    assert st["lock"] is None

    # A reject whose settings changed since is planned again without --full; --reprocess
    # names reasons. (random_bytes.wav was rejected by the decoder: undecodable.)
    def dry(*extra: str) -> tuple[dict, set[str]]:
        sets = sum([["--set", o] for o in overrides(out, takedown, raw=raw)], [])
        assert main(["run", str(LOCAL_CONFIG), "--dry-run", "--json", *sets, *extra]) == 0
        plan = json.loads(capsys.readouterr().out)
        return plan["sources"], {o["source_uri"].rsplit("/", 1)[-1] for o in plan["objects"]}

    assert dry()[0]["to_process"] == 0
    # Every stage comes after the decoder: card1 is planned again too if a segment of it was
    # dropped (by whatever stage), since that drop depended on the decode settings as well.
    dropped = {"card1.wav"} if by_key["card1.wav"]["drop_reasons"] else set()
    counts, names = dry("--set", "decode.min_decoded_fraction=0.5")
    assert names == {"random_bytes.wav"} | dropped and counts["reconfigured"] == len(names)
    assert dry("--set", "caption.max_tokens=200")[0]["to_process"] == 0  # after every drop
    counts, names = dry("--reprocess", "undecodable")
    assert names == {"random_bytes.wav"} and counts["reprocess_reason"] == 1


# --- the lock ---------------------------------------------------------------------------------
def test_lock_keeps_runs_apart_and_a_stale_lock_is_taken_over(store, capsys):
    out = BASE + "lock/"
    first = RunLock(store, out, "night-a", ttl_s=30).acquire()
    try:
        with pytest.raises(LockHeld, match="night-a"):
            RunLock(store, out, "night-b", ttl_s=30).acquire()
        t0 = time.monotonic()
        code = main(["run", str(LOCAL_CONFIG), "--run-id", "night-b",
                     *sum([["--set", o] for o in overrides(out)], [])])
        assert code == EXIT_LOCKED and time.monotonic() - t0 < 60
        assert "another run holds the lock" in capsys.readouterr().err
        # The holder's heartbeat renews the lock; a lost lock is noticed before publishing.
        before = read_lock(store, out)[0]["heartbeat_at"]
        first.renew()
        assert read_lock(store, out)[0]["heartbeat_at"] > before
    finally:
        first.release()
    assert read_lock(store, out) is None

    # A dead run's lock: heartbeat long past its ttl. Two runs race to take it over; one wins.
    dead = {"run_id": "dead", "token": "x", "host": "elsewhere", "pid": 1, "acquired_at": 0,
            "heartbeat_at": 1, "expires_at": 2, "ttl_s": 1}
    store.put(lock_uri(out), json.dumps(dead).encode())
    store.put(f"{out}_staging/dead/done/0000-00000.json", b"left by a dead run")
    store.put(f"{out}runs/dead/annotations/part-00000.parquet", b"half-published")
    winners, losers = [], []

    def contend(run_id):
        lock = RunLock(store, out, run_id, ttl_s=30)
        try:
            lock.acquire()
            winners.append(lock)
        except LockHeld:
            losers.append(run_id)

    threads = [threading.Thread(target=contend, args=(f"r{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(losers) == 2
    assert winners[0].taken_over["run_id"] == "dead"
    # Someone overwrites the lock behind the winner's back: it must not publish.
    store.put(lock_uri(out), json.dumps({**dead, "run_id": "intruder"}).encode())
    with pytest.raises(LockLost):
        winners[0].check()
    winners[0].release()
    assert read_lock(store, out)[0]["run_id"] == "intruder"  # not ours to delete
    store.delete(lock_uri(out))

    # The next run cleans up what the dead run left (staging, files without summary.json).
    from pipeline.staging import clean_dead_runs
    from schemas.layout import Layout

    assert clean_dead_runs(store, Layout(out), keep_run_id="next") == ["dead"]
    assert not store.list(f"{out}_staging/") and not store.list(f"{out}runs/dead/")


# --- resume -----------------------------------------------------------------------------------
@pytest.mark.faults
def test_resume_after_sigterm_then_a_driver_kill_and_everything_stopped(
        store, clean, s3_server, ray_runtime, local_config, tmp_path, capsys):
    """Attempt 1 (`audioverse run`, one object per partition) gets SIGTERM once its first
    partition is written, as Kubernetes sends on eviction: it stops within 30 s with exit 143
    and one line saying how to resume, releases the lock, stops its Ray processes and keeps its
    staging. Attempt 2, the same run id, resumes and has its driver `kill -9`ed while it works;
    then the rest goes down as in a reboot (its Ray processes and the S3 server, SIGKILL).
    Attempt 3 resumes and finishes. The result must be the clean run's. (A killed Ray worker is in the
    transient-faults test below.)"""
    out = BASE + "kill/"

    log1 = tmp_path / "attempt1.log"
    proc = start_driver(out, "k1", log1)
    try:
        # `status` while it runs (its model actors still starting): the run, its partitions
        # and its live progress line (written every run.progress_interval_s).
        deadline = time.monotonic() + 120
        while not store.exists(f"{out}_staging/k1/progress.json"):
            assert proc.poll() is None and time.monotonic() < deadline, log1.read_text()
            time.sleep(0.3)
        assert main(["status", str(LOCAL_CONFIG), "--json",
                     *sum([["--set", o] for o in overrides(out)], [])]) == 0
        live = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}["k1"]
        assert live["state"] == "running" and live["partitions"] == 4
        assert "recordings decoded" in live["progress"]["line"]
        wait_for_checkpoint(store, out, "k1", proc, log1, parts=1)
        ray_procs = descendants(proc.pid)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        stopped_in = time.monotonic() - t0
    finally:
        _kill([proc.pid, *descendants(proc.pid)])
    text = log1.read_text()
    assert code == 143 and stopped_in < 30, (code, stopped_in, text[-3000:])
    last = text.strip().splitlines()[-1]
    assert last.startswith("audioverse: interrupted by SIGTERM") and "--run-id k1" in last
    for noise in ("Traceback", "Aborted", "SIGTERM received", "core_worker.cc"):
        assert noise not in text, noise
    deadline = time.monotonic() + 10
    while [p for p in ray_procs if pid_alive(p)] and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [_cmdline(p) for p in ray_procs if pid_alive(p)]
    assert not alive, f"processes of the stopped run still run: {alive}"
    assert read_lock(store, out) is None               # the lock was released
    assert store.exists(f"{out}_staging/k1/plan.json")  # resumable
    assert store.list(f"{out}_staging/k1/done/")
    assert not store.exists(f"{out}runs/k1/summary.json")

    # Partitions still in flight when the signal came may finish while Ray shuts down (they
    # are marked done then, whole). Keep two done, as if the signal had come earlier: the
    # other partitions' files stay without a marker, which a resumed run must redo.
    markers = sorted(o.uri for o in store.list(f"{out}_staging/k1/done/"))
    for uri in markers[2:]:
        store.delete(uri)
    written = min(len(markers), 2)
    # Attempt 2 is killed while its model actors start, once it shows progress.
    store.delete(f"{out}_staging/k1/progress.json")
    log2 = tmp_path / "attempt2.log"
    proc = start_driver(out, "k1", log2)
    try:
        deadline = time.monotonic() + 120
        while not store.exists(f"{out}_staging/k1/progress.json"):
            assert proc.poll() is None and time.monotonic() < deadline, log2.read_text()
            time.sleep(0.2)
        ray_procs = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _kill([proc.pid, *descendants(proc.pid)])
    assert "resuming run k1" in log2.read_text()
    assert not store.exists(f"{out}runs/k1/summary.json")
    assert read_lock(store, out)[0]["run_id"] == "k1"  # the dead driver's lock is still there
    time.sleep(1)
    _kill(ray_procs)                                   # the power goes: its Ray ...
    local_s3.stop(s3_server.data_dir, timeout_s=0)     # ... and the S3 server, SIGKILL
    restarted = local_s3.start(s3_server.data_dir)
    assert restarted.endpoint_url == s3_server.endpoint_url  # same endpoint after the restart

    # Attempt 3: takes the dead driver's lock over, reloads the frozen plan, skips the two
    # partitions already written, and runs the ones left.
    result = run_pipeline(local_config(*overrides(out)), run_id="k1")
    assert result.exit_code == 0
    resumed = result.summary["resumed_recordings"]
    assert written <= resumed < result.summary["inputs"], "the rerun should resume"
    same_as_clean(outputs(store, out, "k1"), clean)
    assert read_lock(store, out) is None


# --- storage faults ---------------------------------------------------------------------------
@pytest.mark.faults
def test_transient_s3_faults_and_a_killed_worker(store, clean, s3_server, ray_runtime,
                                               local_config):
    """Through the fault proxy (every third request: 503 SlowDown, a reset before or after the
    server acted, a 500), and with one Ray Data actor process SIGKILLed mid-run: the run
    retries, Ray restarts the actor, and the clean run's rows come out."""
    out = BASE + "proxy/"
    killed: list[str] = []
    done = threading.Event()

    def kill_a_worker():
        while not done.is_set():
            for pid in descendants(os.getpid()):
                cmd = _cmdline(pid)
                if cmd.startswith("ray::") and "MapWorker" in cmd:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(cmd)
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.every(3, ["slowdown", "reset", "reset_after", "500"])
        killer.start()
        try:
            result = run_pipeline(local_config(*overrides(
                out, f"storage.endpoint_url={proxy.url}")), run_id="p1")
        finally:
            done.set()
            killer.join()
            proxy.every(0)
    assert killed, "no Ray Data actor process was found to kill"
    assert result.exit_code == 0
    assert set(proxy.faults) == {"slowdown", "reset", "reset_after", "500"}
    assert sum(proxy.faults.values()) >= 6
    same_as_clean(outputs(store, out, "p1"), clean)


@pytest.mark.faults
def test_s3_server_restarted_mid_run(store, clean, s3_server, ray_runtime, local_config):
    """SeaweedFS goes down for 3 s as soon as the run's Ray Data actors exist, while the read
    tasks fetch the objects, and comes back on the same endpoint; the run waits for it."""
    out = BASE + "restart/"
    events: list[str] = []
    finished = threading.Event()

    def dataset_running() -> bool:
        return any(_cmdline(pid).startswith("ray::") and "MapWorker" in _cmdline(pid)
                   for pid in descendants(os.getpid()))

    def restart_server():
        while not finished.is_set():
            if dataset_running():
                local_s3.stop(s3_server.data_dir)
                events.append("stopped")
                time.sleep(3)
                local_s3.start(s3_server.data_dir)
                events.append("started" if not finished.is_set() else "started late")
                return
            time.sleep(0.2)

    thread = threading.Thread(target=restart_server, daemon=True)
    thread.start()
    try:
        result = run_pipeline(local_config(*overrides(out)), run_id="r1")
    finally:
        finished.set()
        thread.join()
    assert events == ["stopped", "started"], "the server was not restarted while the run ran"
    assert result.exit_code == 0
    same_as_clean(outputs(store, out, "r1"), clean)


@pytest.mark.parametrize("case", ["bad_secret", "missing_bucket", "access_denied"])
def test_permanent_s3_errors_fail_fast(case, store, s3_server, capsys):
    extra, expect = [], ""
    proxy = None
    if case == "bad_secret":
        extra, expect = ["storage.secret_access_key=not-the-secret"], "rejected the credentials"
    elif case == "missing_bucket":
        extra, expect = ["output.uri=s3://no-such-bucket-audioverse/"], "bucket does not exist"
    else:
        proxy = S3FaultProxy(s3_server.endpoint_url)
        proxy.start()
        proxy.deny(True)
        extra, expect = [f"storage.endpoint_url={proxy.url}"], "access denied"
    try:
        t0 = time.monotonic()
        code = main(["run", str(LOCAL_CONFIG),
                     *sum([["--set", o] for o in overrides(BASE + "perm/", *extra)], [])])
        elapsed = time.monotonic() - t0
    finally:
        if proxy:
            proxy.stop()
    err = capsys.readouterr().err
    assert code == EXIT_STORAGE, err
    assert expect in err and "Traceback" not in err
    assert elapsed < 20, f"a permanent error took {elapsed:.0f}s to report"
