"""The embedded caption endpoint: llama.cpp's OpenAI-compatible server (`llama_cpp.server`) on
loopback, serving a GGUF model from the registry, run as a child process of the pipeline.

Two additions to llama.cpp's app, in `main()` (the child process):
- `GET /health` answers 200 once the model is loaded (the app loads it before serving);
- OpenAI-style structured output, `response_format={"type": "json_schema", "json_schema":
  {"schema": S}}`, is rewritten to llama.cpp's form `{"type": "json_object", "schema": S}`, so the
  client speaks one protocol to this server and to vLLM alike.

`LocalLlmServer` (the parent side) picks a free port, starts the child, polls `/health`, and stops
it by PID; its log goes to a file whose tail is quoted if it fails to start.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from model_serving.registry import ModelError

HEALTH_PATH = "/health"
# llama.cpp's OpenMP threads spin-wait for work by default. Beside other CPU load (the Ray
# workers of the same run) that spinning starves everyone: generation fell from ~70 to ~2.5
# tokens/s on a loaded 2-core machine. PASSIVE makes idle threads sleep (make bench-caption
# measures both).
SERVER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalLlmServer:
    """Start/stop the embedded server. Use as a context manager; `url` is the /v1 base URL."""

    def __init__(self, model_path: str, alias: str, threads: int = 2, context_tokens: int = 2048,
                 startup_timeout_s: float = 60.0, log_dir: str | None = None,
                 env: dict[str, str] | None = None):
        self.model_path = model_path
        self.alias = alias
        self.threads = threads
        self.context_tokens = context_tokens
        self.startup_timeout_s = startup_timeout_s
        self.extra_env = {**SERVER_ENV, **(env or {})}  # env: e.g. the bench's ACTIVE baseline
        self.log_path = Path(log_dir or tempfile.gettempdir()) / f"audioverse-llm-{os.getpid()}.log"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> str:
        self.port = _free_port()
        cmd = [sys.executable, "-m", "model_serving.llm_server", "--model", self.model_path,
               "--alias", self.alias, "--port", str(self.port), "--threads", str(self.threads),
               "--context-tokens", str(self.context_tokens)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, **self.extra_env, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ModelError(f"the local caption server exited with code "
                                 f"{self.proc.returncode} while loading {self.model_path}: "
                                 f"{self.log_tail()}")
            if self.healthy():
                return self.url
            time.sleep(0.2)
        self.stop()
        raise ModelError(f"the local caption server did not answer {HEALTH_PATH} within "
                         f"{self.startup_timeout_s:g}s (caption.local_server.startup_timeout_s); "
                         f"its log: {self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{HEALTH_PATH}",
                                        timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> "LocalLlmServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def translate_response_format(body: bytes) -> bytes:
    """OpenAI `json_schema` response_format -> llama.cpp's `json_object` + schema."""
    try:
        request = json.loads(body)
    except ValueError:
        return body  # let the app answer 422 for a body that is not JSON
    fmt = request.get("response_format") if isinstance(request, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        request["response_format"] = {"type": "json_object", "schema": schema}
        return json.dumps(request).encode()
    return body


class _OpenAISchemaShim:
    """ASGI middleware applying `translate_response_format` to chat-completion requests."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        body = translate_response_format(body)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app(dict(scope, headers=headers), replay, send)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a GGUF model, OpenAI-compatible, with "
                                                 "/health (the embedded caption endpoint).")
    parser.add_argument("--model", required=True)
    parser.add_argument("--alias", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context-tokens", type=int, default=2048)
    args = parser.parse_args(argv)

    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    model = ModelSettings(model=args.model, model_alias=args.alias, n_ctx=args.context_tokens,
                          n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    app = create_app(server_settings=ServerSettings(host="127.0.0.1", port=args.port),
                     model_settings=[model])
    app.add_api_route(HEALTH_PATH, lambda: {"status": "ok", "model": args.alias},
                      methods=["GET"])
    uvicorn.run(_OpenAISchemaShim(app), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
