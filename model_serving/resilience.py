"""Retries with exponential backoff and full jitter, and a circuit breaker, for calls to a remote
model endpoint.

The breaker counts consecutive failed *attempts* across every caller sharing it (the threads of
one caption worker). A request that still fails after its retries does not stop the run by itself
(its segment is dropped with a reason); `failure_threshold` failed attempts in a row with no
success in between mean the endpoint is dead, and every caller then gets `EndpointDown`, which
stops the run with a message instead of leaving it retrying for hours.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from model_serving.chat_client import EndpointDown, EndpointError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^attempt)] (attempt counts from 0)."""
        return rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2 ** attempt))


class CircuitBreaker:
    def __init__(self, failure_threshold: int, endpoint: str):
        self.failure_threshold = failure_threshold
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._consecutive = 0
        self._last_error = ""
        self.opened = False

    def check(self) -> None:
        if self.opened:
            raise EndpointDown(self.message())

    def message(self) -> str:
        return (f"caption endpoint {self.endpoint} failed {self._consecutive} times in a row "
                f"(last: {self._last_error}); check that the server is up "
                f"(caption.endpoint.url), or lower the load with caption.concurrency")

    def record_success(self) -> None:
        with self._lock:
            if not self.opened:
                self._consecutive = 0

    def record_failure(self, error: Exception) -> None:
        with self._lock:
            if self.opened:
                return  # the message keeps the failures that opened it
            self._consecutive += 1
            self._last_error = str(error)[:300]
            if self._consecutive >= self.failure_threshold:
                self.opened = True


@dataclass
class CallStats:
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy, breaker: CircuitBreaker,
                      stats: CallStats, rng: random.Random | None = None,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Call `fn` until it succeeds, fails with a non-retryable error, or runs out of attempts
    (then the last EndpointError is raised). Raises EndpointDown as soon as the breaker is open."""
    rng = rng or random.Random()
    for attempt in range(policy.max_attempts):
        breaker.check()
        stats.attempts += 1
        try:
            result = fn()
        except EndpointError as exc:
            stats.errors.append(f"{exc.failure}: {exc}"[:300])
            if not exc.retryable:
                breaker.record_success()  # it answered: alive, the request itself is wrong
                raise
            breaker.record_failure(exc)
            if attempt + 1 == policy.max_attempts:
                breaker.check()
                raise
            sleep(policy.delay(attempt, rng))
            continue
        breaker.record_success()
        return result
    raise AssertionError("unreachable")
