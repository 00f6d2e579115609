"""A minimal client for OpenAI-compatible chat completions (vLLM, Ray Serve LLM, the embedded
llama.cpp server). Standard library only: one POST per call, no retries here (see
`model_serving/resilience.py`), and every failure is an `EndpointError` that says whether a retry
could help.

Structured output is requested the OpenAI way, `response_format = {"type": "json_schema", ...}`;
vLLM honours it, and the embedded server translates it for llama.cpp.
"""
from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Optional

from schemas.errors import EXIT_ENDPOINT, AudioverseError


class EndpointError(AudioverseError):
    """A chat endpoint failed. `retryable`: a timeout, a refused connection, a 5xx or 429, or a
    reply that is not the JSON the protocol promises (a proxy's error page, garbage bytes)."""

    exit_code = EXIT_ENDPOINT
    kind = "endpoint error"  # the CLI's word; `failure` says how this one failed

    def __init__(self, message: str, kind: str, retryable: bool, status: int | None = None):
        super().__init__(message)
        self.failure = kind         # timeout | connection | http | bad_response
        self.retryable = retryable
        self.status = status


class EndpointDown(EndpointError):
    """The endpoint is considered dead (the circuit breaker opened): the run must stop."""

    def __init__(self, message: str):
        super().__init__(message, kind="down", retryable=False)


@dataclass(frozen=True)
class ChatReply:
    text: str
    finish_reason: Optional[str]
    prompt_tokens: Optional[int]
    completion_tokens: Optional[int]
    latency_s: float


class ChatClient:
    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 timeout_s: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s  # per socket operation: connect, and each read

    def _request(self, method: str, path: str, body: dict | None) -> dict:
        url = f"{self.base_url}{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            retryable = exc.code >= 500 or exc.code == 429
            raise EndpointError(f"{method} {url}: HTTP {exc.code}: {detail}", kind="http",
                                retryable=retryable, status=exc.code) from exc
        except (socket.timeout, TimeoutError) as exc:
            raise EndpointError(f"{method} {url}: no answer within {self.timeout_s:g}s",
                                kind="timeout", retryable=True) from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            kind = "timeout" if isinstance(reason, (socket.timeout, TimeoutError)) else "connection"
            raise EndpointError(f"{method} {url}: {reason}", kind=kind, retryable=True) from exc
        except (ConnectionError, http.client.HTTPException) as exc:
            raise EndpointError(f"{method} {url}: connection broken: {exc}", kind="connection",
                                retryable=True) from exc
        try:
            return json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EndpointError(f"{method} {url}: the reply is not JSON: {payload[:80]!r}",
                                kind="bad_response", retryable=True) from exc

    def health(self) -> list[str]:
        """The model ids the endpoint serves (`GET /models`); raises EndpointError."""
        reply = self._request("GET", "/models", None)
        try:
            return [m["id"] for m in reply["data"]]
        except (KeyError, TypeError) as exc:
            raise EndpointError(f"{self.base_url}/models: not an OpenAI model list",
                                kind="bad_response", retryable=False) from exc

    def complete(self, messages: list[dict], *, max_tokens: int, temperature: float = 0.0,
                 seed: int | None = 0, json_schema: dict | None = None,
                 schema_name: str = "caption") -> ChatReply:
        body: dict = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                      "temperature": temperature}
        if temperature == 0.0:
            body["top_k"] = 1  # greedy, also on servers whose temperature 0 still samples
        if seed is not None:
            body["seed"] = seed
        if json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": schema_name, "schema": json_schema, "strict": True}}
        t0 = time.monotonic()
        reply = self._request("POST", "/chat/completions", body)
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"]
            usage = reply.get("usage") or {}
        except (KeyError, IndexError, TypeError) as exc:
            raise EndpointError(f"{self.base_url}/chat/completions: the reply has no "
                                f"choices[0].message: {str(reply)[:120]}", kind="bad_response",
                                retryable=True) from exc
        return ChatReply(text=text or "", finish_reason=choice.get("finish_reason"),
                         prompt_tokens=usage.get("prompt_tokens"),
                         completion_tokens=usage.get("completion_tokens"),
                         latency_s=time.monotonic() - t0)

