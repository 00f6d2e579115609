"""A test double of an OpenAI-compatible endpoint, for injecting faults only: HTTP 500s, slow
answers, garbage bytes, dropped connections. It answers with a fixed valid caption when told to
succeed; the real model's behaviour is tested against the real server (tests/test_captioner.py).
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A valid reply of a text model that saw the features (the fields it is asked for).
VALID_CAPTION = {
    "scene": "reading", "environment": "indoor",
    "description": "Someone reads a short passage aloud.",
}


class FaultEndpoint:
    """`script`: one behaviour per chat request, in order; the last repeats. Behaviours:
    ok | 500 | 429 | 400 | garbage | drop | slow:<seconds> | text:<the reply's content>."""

    def __init__(self, script: list[str], model: str = "smollm2-135m"):
        self.script = list(script)
        self.model = model
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0  # most chat requests being answered at once
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _done(self):
                # A request stops counting as in flight before its reply is written: once the
                # client has the reply it may send the next one, possibly before this thread
                # would reach a decrement after the write (max_in_flight then read one high).
                if getattr(self, "_counted", False):
                    self._counted = False
                    with outer._lock:
                        outer.in_flight -= 1

            def _send(self, code: int, body: bytes, ctype="application/json"):
                self._done()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, json.dumps({"object": "list", "data": [
                    {"id": outer.model, "object": "model"}]}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.requests.append(body)
                    step = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                self._counted = True
                try:
                    self._answer(step)
                finally:
                    self._done()  # a dropped connection sends nothing

            def _answer(self, step: str):
                if step.startswith("slow:"):
                    time.sleep(float(step.split(":", 1)[1]))
                    step = "ok"
                if step == "ok" or step.startswith("text:"):
                    content = step[5:] if step.startswith("text:") else json.dumps(VALID_CAPTION)
                    reply = {"choices": [{"message": {"role": "assistant", "content": content},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 100, "completion_tokens": 50}}
                    self._send(200, json.dumps(reply).encode())
                elif step in ("500", "429", "400"):
                    self._send(int(step), b'{"error": "injected"}')
                elif step == "garbage":
                    self._send(200, b"\x00\xff\xfe<html>bad gateway</html>\x17", "text/html")
                elif step == "drop":
                    self.connection.close()  # no status line at all
                else:
                    raise ValueError(step)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FaultEndpoint":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
