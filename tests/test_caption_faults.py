"""Endpoint faults: retries with backoff, timeouts, the circuit breaker, and what a run does when
the caption endpoint is down. Faults come from tests/fault_endpoint.py (a test double that only
injects faults) and from a closed port."""
import random
import socket
import time

import pyarrow as pa
import pytest

from model_serving.chat_client import ChatClient, EndpointDown, EndpointError
from model_serving.resilience import CallStats, CircuitBreaker, RetryPolicy, call_with_retries
from operators.caption import CaptionStage
from pipeline.errors import EXIT_ENDPOINT
from schemas import reasons
from schemas.config import CaptionConfig
from tests.fault_endpoint import FaultEndpoint


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens once the socket is closed


def segments(n: int) -> pa.Table:
    return pa.Table.from_pylist([
        {"segment_id": f"rec-{i:05d}", "content_type": "speech", "drop_reason": None,
         "transcript": f"segment number {i}", "language": "en", "speaker_count": 1,
         "duration_s": 3.0}
        for i in range(n)])


def stage(url: str, **cfg) -> CaptionStage:
    defaults = dict(timeout_s=2.0, max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.05,
                    breaker_failures=50, concurrency=2)
    return CaptionStage(CaptionConfig(**{**defaults, **cfg}), endpoint_url=url,
                        model_label="fault-endpoint")


# --- the retry policy and the breaker on their own ---------------------------------------------
def test_backoff_grows_exponentially_with_full_jitter_and_a_cap():
    policy, rng = RetryPolicy(max_attempts=8, base_delay_s=0.5, max_delay_s=8.0), random.Random(1)
    for attempt in range(8):
        cap = min(8.0, 0.5 * 2 ** attempt)
        delays = [policy.delay(attempt, rng) for _ in range(400)]
        assert 0.0 <= min(delays) and max(delays) <= cap
        assert max(delays) > 0.8 * cap and min(delays) < 0.2 * cap  # jitter spans the range


def test_retryable_failures_are_retried_then_succeed():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise EndpointError("boom", kind="http", retryable=True, status=503)
        return "ok"

    stats = CallStats()
    result = call_with_retries(flaky, RetryPolicy(4, 1.0, 8.0), CircuitBreaker(10, "x"), stats,
                               rng=random.Random(0), sleep=sleeps.append)
    assert result == "ok" and stats.attempts == 3 and len(sleeps) == 2
    assert sleeps[0] <= 1.0 and sleeps[1] <= 2.0


def test_client_errors_are_not_retried():
    stats = CallStats()

    def bad_request():
        raise EndpointError("400", kind="http", retryable=False, status=400)

    with pytest.raises(EndpointError):
        call_with_retries(bad_request, RetryPolicy(4), CircuitBreaker(2, "x"), stats,
                          sleep=lambda s: None)
    assert stats.attempts == 1


def test_breaker_opens_after_consecutive_failures_across_requests():
    breaker = CircuitBreaker(5, "http://dead/v1")

    def dead():
        raise EndpointError("refused", kind="connection", retryable=True)

    attempts = 0
    with pytest.raises(EndpointDown, match="http://dead/v1 failed 5 times in a row"):
        for _ in range(10):
            stats = CallStats()
            try:
                call_with_retries(dead, RetryPolicy(2), breaker, stats, sleep=lambda s: None)
            except EndpointDown:
                attempts += stats.attempts
                raise
            except EndpointError:
                attempts += stats.attempts
    assert attempts == 5 and breaker.opened


def test_a_success_resets_the_breaker():
    breaker = CircuitBreaker(3, "x")
    for _ in range(2):
        breaker.record_failure(RuntimeError("e"))
    breaker.record_success()
    for _ in range(2):
        breaker.record_failure(RuntimeError("e"))
    breaker.check()  # 2 in a row, not 4: still closed


# --- the stage against a faulty endpoint ----------------------------------------------------------
def test_500s_are_retried_and_the_caption_lands():
    with FaultEndpoint(["500", "500", "ok"]) as ep:
        out = stage(ep.url, concurrency=1)(segments(1)).to_pylist()[0]
    assert out["drop_reason"] is None and out["caption_attempts"] == 3
    assert out["caption_scene"] == "reading" and out["caption_source"] == "text_features"
    assert len(ep.requests) == 3


def test_garbage_bytes_and_dropped_connections_are_retried():
    with FaultEndpoint(["garbage", "drop", "429", "ok"]) as ep:
        out = stage(ep.url, concurrency=1, max_attempts=4)(segments(1)).to_pylist()[0]
    assert out["drop_reason"] is None and out["caption_attempts"] == 4


def test_a_slow_endpoint_times_out_and_the_segment_is_dropped_with_a_reason():
    with FaultEndpoint(["slow:3"]) as ep:
        t0 = time.monotonic()
        out = stage(ep.url, timeout_s=0.5, max_attempts=2, concurrency=1)(segments(1))
        seconds = time.monotonic() - t0
    row = out.to_pylist()[0]
    assert row["drop_reason"] == reasons.CAPTION_ERROR and row["drop_stage"] == "caption"
    assert "no answer within 0.5s" in row["drop_detail"] and row["caption_attempts"] == 2
    assert seconds < 2.5  # two timeouts, not two slow answers


def test_a_request_the_endpoint_rejects_drops_only_that_segment():
    with FaultEndpoint(["400", "ok"]) as ep:
        out = stage(ep.url, concurrency=1)(segments(2)).to_pylist()
    assert [r["drop_reason"] for r in out] == [reasons.CAPTION_ERROR, None]
    assert out[0]["caption_attempts"] == 1  # a 4xx is not retried


def test_a_dead_endpoint_opens_the_breaker_and_stops_the_stage_quickly():
    s = stage(closed_port_url(), breaker_failures=4, max_attempts=3)
    t0 = time.monotonic()
    with pytest.raises(EndpointDown, match="failed 4 times in a row"):
        s(segments(6))
    assert time.monotonic() - t0 < 5


def test_requests_in_flight_are_bounded_by_concurrency():
    for concurrency in (1, 3):
        with FaultEndpoint(["slow:0.3"]) as ep:
            out = stage(ep.url, concurrency=concurrency)(segments(6)).to_pylist()
        assert all(r["drop_reason"] is None for r in out) and len(ep.requests) == 6
        assert ep.max_in_flight == concurrency  # used, and never exceeded


def test_only_segments_without_a_drop_reason_are_captioned():
    table = segments(3).to_pylist()
    table[1]["drop_reason"] = reasons.ASR_DISAGREEMENT
    with FaultEndpoint(["ok"]) as ep:
        out = stage(ep.url)(pa.Table.from_pylist(table)).to_pylist()
    assert len(ep.requests) == 2
    assert out[1]["drop_reason"] == reasons.ASR_DISAGREEMENT and out[1]["caption_source"] is None


def test_client_sends_greedy_schema_constrained_requests():
    with FaultEndpoint(["ok"]) as ep:
        ChatClient(ep.url, "m").complete([{"role": "user", "content": "x"}], max_tokens=16,
                                         json_schema={"type": "object"})
    body = ep.requests[0]
    assert body["temperature"] == 0.0 and body["top_k"] == 1
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}


# --- a whole run whose endpoint is down ---------------------------------------------------------
def test_run_with_unreachable_endpoint_stops_before_any_work(s3_server, demo_corpus):
    from tests.test_cli import run_cli
    from tests.conftest import LOCAL_CONFIG, TEST_BUCKET

    url = closed_port_url()
    proc, seconds = run_cli("run", str(LOCAL_CONFIG), "--set", f"input.uri=s3://{TEST_BUCKET}/raw/",
                            "--set", f"output.uri=s3://{TEST_BUCKET}/",
                            "--set", f"caption.endpoint.url={url}")
    assert proc.returncode == EXIT_ENDPOINT, proc.stderr[-2000:]
    assert f"caption endpoint {url} does not answer" in proc.stderr
    assert "caption.endpoint.url" in proc.stderr and "Traceback" not in proc.stderr
    assert "Started a local Ray" not in proc.stderr
    assert seconds < 60


def test_endpoint_dying_mid_run_stops_the_dataset_with_the_endpoint_named(ray_runtime):
    """Healthy at first, then every chat request fails: in a Ray actor the breaker opens, Ray
    wraps the error, and the driver's collector re-raises it as itself (the CLI's exit 6)."""
    from model_serving.chat_client import EndpointError
    from pipeline.dag import CaptionEndpoint, apply_stage, stage_plan, stage_resources
    from pipeline.errors import find_cause
    from pipeline.ray_session import stream
    from tests.conftest import LOCAL_CONFIG
    from pipeline.config import load_config

    with FaultEndpoint(["ok", "500"]) as ep:
        cfg = load_config(LOCAL_CONFIG, [f"caption.endpoint.url={ep.url}",
                                         "caption.backoff_base_s=0.01",
                                         "caption.backoff_max_s=0.02",
                                         "caption.breaker_failures=3"])
        kwargs = dict(stage_plan(cfg, None, CaptionEndpoint(ep.url, "fault")))[CaptionStage]
        ds = ray_runtime.data.from_arrow([segments(3), segments(3)])
        ds = apply_stage(ds, CaptionStage, kwargs, stage_resources(cfg, CaptionStage))
        with pytest.raises(EndpointDown) as info:  # the worker's error, as itself
            list(stream(ds.iter_batches(batch_format="pyarrow", batch_size=None)))
    assert ep.url in str(info.value) and "failed 3 times in a row" in str(info.value)
    assert find_cause(info.value.__cause__, (EndpointError,)) is not None  # the Ray wrapper
    assert 1 + 3 <= len(ep.requests) <= 1 + 3 + 2  # at most those in flight when it opened
