"""A fault-injecting HTTP proxy in front of a real S3 server, for tests of storage-fault handling.

It is a test double used only to inject faults (throttling, 5xx, connection resets, resets after
the operation took effect, permanent 403s); every other request is relayed byte for byte to the
real server (SeaweedFS, started by tests/conftest.py), which does the real work.

Requests keep their headers unchanged, the Host header included: clients sign requests (SigV4)
over the Host they connect to, i.e. the proxy's, and the server checks the signature against the
Host it receives.

    with S3FaultProxy(server.endpoint_url) as proxy:
        client = make_s3_client(StorageConfig(endpoint_url=proxy.url, max_attempts=6))
        proxy.every(2, ["slowdown", "reset"])   # every 2nd request fails, cycling the kinds
        proxy.deny(True)                        # every request answered 403 AccessDenied
"""
from __future__ import annotations

import collections
import http.client
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

KINDS = ("slowdown", "reset", "reset_after", "500")

_ERRORS = {  # kind -> (status, S3 error code, message)
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "deny": (403, "AccessDenied", "Access Denied"),
    "bad_gateway": (502, "BadGateway", "The fault proxy could not reach the upstream server."),
}


class S3FaultProxy:
    """Relay to `upstream_url` (http://host:port), injecting the faults set by `every`/`deny`."""

    def __init__(self, upstream_url: str):
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"need an http://host:port upstream, got {upstream_url!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.requests = 0                          # every request received
        self.forwarded = 0                         # requests relayed to upstream
        self.faults: collections.Counter = collections.Counter()  # kind -> injected count
        self.url: str | None = None
        self._every = 0
        self._kinds: list[str] = []
        self._next_kind = 0
        self._deny = False
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- configuration (thread-safe, any time) -----------------------------------------------
    def every(self, n: int, kinds: list[str] | tuple[str, ...] = ("slowdown",)) -> None:
        """Fault every n-th request (counting all requests), cycling through `kinds`; 0: off."""
        kinds = list(kinds)
        if n < 0 or (n and not kinds) or any(k not in KINDS for k in kinds):
            raise ValueError(f"every({n}, {kinds}): n >= 0 and kinds from {KINDS}")
        with self._lock:
            self._every, self._kinds, self._next_kind = n, kinds, 0

    def deny(self, on: bool = True) -> None:
        """Answer every request 403 AccessDenied (a permanent error) while on."""
        with self._lock:
            self._deny = on

    def _decide(self) -> str | None:
        """Count the request and pick its fault: None, "deny" or one of KINDS."""
        with self._lock:
            self.requests += 1
            if self._deny:
                kind = "deny"
            elif self._every and self.requests % self._every == 0:
                kind = self._kinds[self._next_kind % len(self._kinds)]
                self._next_kind += 1
            else:
                return None
            self.faults[kind] += 1
            return kind

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> str:
        """Listen on a free loopback port; returns the endpoint URL (http://127.0.0.1:PORT)."""
        if self._server is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            name="s3-fault-proxy", daemon=True)
            self._thread.start()
            self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> "S3FaultProxy":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _make_handler(proxy: S3FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive towards the client
        timeout = 120                  # idle keep-alive connections end eventually

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_request(self):
            body = self._read_body()    # always consume it, so keep-alive stays in step
            kind = proxy._decide()
            if kind == "reset":
                return self._reset()
            if kind in _ERRORS:
                return self._send_error(kind)
            try:
                status, reason, headers, payload = self._forward(body)
            except (OSError, http.client.HTTPException):  # upstream down or garbled
                return self._send_error("bad_gateway")
            with proxy._lock:
                proxy.forwarded += 1
            if kind == "reset_after":   # the operation happened; the client never hears of it
                return self._reset()
            self._relay(status, reason, headers, payload)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = do_request

        def _read_body(self) -> bytes:
            """The request body exactly as sent: Content-Length bytes, or the raw chunked framing
            (chunk sizes, extensions and trailers included, e.g. aws-chunked checksums)."""
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                raw = bytearray()
                while True:
                    line = self.rfile.readline(65537)
                    raw += line
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        break
                    raw += self.rfile.read(size + 2)  # the data and its CRLF
                while True:  # trailers, up to the empty line
                    line = self.rfile.readline(65537)
                    raw += line
                    if line in (b"\r\n", b"\n", b""):
                        return bytes(raw)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _forward(self, body: bytes):
            """Send the request upstream with its headers unchanged; the whole answer back."""
            conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
            try:
                conn.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
                for name, value in self.headers.items():  # Host included, as the client sent it
                    conn.putheader(name, value)
                conn.endheaders(body or None)
                resp = conn.getresponse()
                payload = resp.read()  # de-chunked by http.client; nothing for HEAD/204/304
                return resp.status, resp.reason, resp.getheaders(), payload
            finally:
                conn.close()

        def _relay(self, status, reason, headers, payload: bytes):
            """The upstream's answer, headers as they came; a body that came chunked (or ended
            by closing the connection) is re-framed with a Content-Length."""
            self.send_response_only(status, reason)
            has_length = False
            for name, value in headers:
                lower = name.lower()
                if lower == "transfer-encoding":
                    continue
                has_length = has_length or lower == "content-length"
                if lower == "connection" and value.lower() == "close":
                    self.close_connection = True
                self.send_header(name, value)
            bodyless = self.command == "HEAD" or status in (204, 304) or status < 200
            if not has_length and not bodyless:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not bodyless and payload:
                self.wfile.write(payload)

        def _send_error(self, kind: str):
            status, code, message = _ERRORS[kind]
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f"<Message>{message}</Message></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _reset(self):
            """Close abruptly: SO_LINGER 0 makes the close send RST, so the client sees a reset."""
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()          # drop the buffered reader's reference to the socket
            self.connection.close()     # the real close (RST) happens here

    return Handler
