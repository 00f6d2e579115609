"""The caption endpoint for one run: check a configured one, or start the embedded server.

Runs in the driver before Ray starts, so an unreachable endpoint, a wrong model id or a GGUF that
fails to load stops the run in seconds with one line, before any audio is decoded.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator

from model_serving.chat_client import ChatClient, EndpointError
from model_serving.llm_server import LocalLlmServer
from model_serving.registry import ModelRegistry
from operators.logs import stage_logger
from pipeline.dag import CaptionEndpoint
from schemas.config import PipelineConfig

log = stage_logger("caption")
HEALTH_TIMEOUT_S = 10


def check_endpoint(url: str, model: str, api_key: str | None) -> None:
    """Raise EndpointError with what to do if `url` does not serve `model`."""
    # A host that drops packets keeps the check silent until the timeout: say so first.
    log.info("checking the caption endpoint %s (waits up to %d s for an answer)", url,
             HEALTH_TIMEOUT_S)
    t0 = time.monotonic()
    try:
        served = ChatClient(url, model, api_key=api_key, timeout_s=HEALTH_TIMEOUT_S).health()
    except EndpointError as exc:
        raise EndpointError(
            f"caption endpoint {url} does not answer after {time.monotonic() - t0:.0f} s "
            f"({exc}); start it (see "
            f"infra/captioner/README.md) or fix caption.endpoint.url, or set "
            f"caption.enabled=false to run without captions",
            kind=exc.failure, retryable=False, status=exc.status) from exc
    if model not in served:
        raise EndpointError(f"caption endpoint {url} serves {served}, not '{model}'; set "
                            f"caption.endpoint.model to one of them", kind="model",
                            retryable=False)


def check_configured_endpoint(cfg: PipelineConfig) -> None:
    """Preflight: a configured endpoint must answer and serve the configured model."""
    c = cfg.caption
    if c.enabled and c.endpoint.url:
        api_key = os.environ.get(c.endpoint.api_key_env) if c.endpoint.api_key_env else None
        check_endpoint(c.endpoint.url, c.endpoint.model, api_key)


@contextmanager
def caption_service(cfg: PipelineConfig, registry: ModelRegistry) -> Iterator[CaptionEndpoint | None]:
    c = cfg.caption
    if not c.enabled:
        log.info("captions disabled (caption.enabled=false): caption columns stay empty")
        yield None
        return
    if c.endpoint.url:  # checked by `check_configured_endpoint` in the preflight
        log.info("caption endpoint %s serves %s (%s)", c.endpoint.url, c.endpoint.model,
                 "hears audio" if c.endpoint.hears_audio else "text features only")
        yield CaptionEndpoint(c.endpoint.url, f"{c.endpoint.model}@{c.endpoint.url}")
        return
    resolved = registry.resolve(c.local_server.model)
    gguf = resolved.only_file(".gguf", "GGUF model")
    server = LocalLlmServer(str(gguf), alias=c.endpoint.model, threads=c.local_server.threads,
                            context_tokens=c.local_server.context_tokens,
                            startup_timeout_s=c.local_server.startup_timeout_s)
    with server:
        check_endpoint(server.url, c.endpoint.model, None)
        log.info("embedded caption server %s up at %s (log %s); text features only, it cannot "
                 "hear", resolved.label, server.url, server.log_path)
        try:
            yield CaptionEndpoint(server.url, resolved.label)
        finally:
            log.info("stopping the embedded caption server")
