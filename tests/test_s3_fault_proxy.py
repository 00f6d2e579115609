"""The fault-injecting proxy (tests/s3_fault_proxy.py) against the real SeaweedFS server: clean
relaying (SigV4 signatures, bodies, chunked uploads) and each kind of fault as botocore sees it."""
from __future__ import annotations

import errno
import io
import os
import uuid

import pytest
from botocore import exceptions as bx

from tests.conftest import TEST_BUCKET
from tests.s3_fault_proxy import S3FaultProxy


@pytest.fixture
def proxy(s3_server):
    with S3FaultProxy(s3_server.endpoint_url) as p:
        yield p


@pytest.fixture
def quick_retries(monkeypatch):
    """Shorten botocore's waits between attempts; which errors it retries, and how often, stay
    its own. Left alone, the backoff (rand(0, 1) s per retry) and the adaptive mode's client-side
    rate limiter (which a SlowDown switches on, down to a couple of requests a second) make a
    test with a fault on every other request take 10-15 s. Must run before a client is built."""
    from botocore.retries import adaptive, standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.005)
    monkeypatch.setattr(adaptive.ClientRateLimiter, "on_sending_request",
                        lambda self, request, **kwargs: None)


@pytest.fixture
def prefix(s3_client):
    """A fresh key prefix under proxytest/, emptied afterwards (directly, not via the proxy)."""
    pre = f"proxytest/{uuid.uuid4().hex[:8]}/"
    yield pre
    listed = s3_client.list_objects_v2(Bucket=TEST_BUCKET, Prefix=pre).get("Contents", [])
    if listed:
        s3_client.delete_objects(Bucket=TEST_BUCKET, Delete={
            "Objects": [{"Key": o["Key"]} for o in listed]})


def client_via(proxy: S3FaultProxy, max_attempts: int):
    from model_serving.s3client import make_s3_client
    from schemas.config import StorageConfig

    return make_s3_client(StorageConfig(endpoint_url=proxy.url, max_attempts=max_attempts,
                                        read_timeout_s=20))


def test_relays_signed_requests_and_bodies(proxy, prefix, s3_client):
    client = client_via(proxy, max_attempts=1)
    big = os.urandom(3 * 1024 * 1024 + 17)
    client.put_object(Bucket=TEST_BUCKET, Key=prefix + "big.bin", Body=big)
    assert client.get_object(Bucket=TEST_BUCKET, Key=prefix + "big.bin")["Body"].read() == big
    # A file-like body: botocore sends it with `Expect: 100-continue`.
    client.upload_fileobj(io.BytesIO(b"small body"), TEST_BUCKET, prefix + "small.txt")
    # The real server holds what went through the proxy.
    assert s3_client.get_object(Bucket=TEST_BUCKET, Key=prefix + "big.bin")["Body"].read() == big

    head = client.head_object(Bucket=TEST_BUCKET, Key=prefix + "big.bin")
    assert head["ContentLength"] == len(big)
    ranged = client.get_object(Bucket=TEST_BUCKET, Key=prefix + "big.bin", Range="bytes=10-19")
    assert ranged["Body"].read() == big[10:20]
    listed = client.list_objects_v2(Bucket=TEST_BUCKET, Prefix=prefix)
    assert sorted(o["Key"] for o in listed["Contents"]) == [prefix + "big.bin",
                                                            prefix + "small.txt"]
    deleted = client.delete_objects(Bucket=TEST_BUCKET, Delete={
        "Objects": [{"Key": prefix + "big.bin"}, {"Key": prefix + "small.txt"}]})
    assert not deleted.get("Errors") and len(deleted["Deleted"]) == 2
    assert client.list_objects_v2(Bucket=TEST_BUCKET, Prefix=prefix)["KeyCount"] == 0
    with pytest.raises(bx.ClientError) as missing:
        client.head_object(Bucket=TEST_BUCKET, Key=prefix + "big.bin")
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    assert proxy.requests == proxy.forwarded >= 9 and not proxy.faults


def test_relays_aws_chunked_upload_with_trailing_checksum(proxy, prefix, s3_client):
    """What botocore sends over https: `Transfer-Encoding: chunked`, aws-chunked framing and a
    trailing x-amz-checksum-crc32. Over plain http botocore sends a Content-Length instead, so
    the request is switched to the trailer form just before botocore applies the checksum."""
    client = client_via(proxy, max_attempts=1)
    seen = {}

    def to_trailer(params, **kwargs):
        params["context"]["checksum"]["request_algorithm"]["in"] = "trailer"

    def capture(request, **kwargs):
        seen.update({k: v.decode() if isinstance(v, bytes) else v
                     for k, v in request.headers.items()})

    client.meta.events.register("before-call.s3.PutObject", to_trailer)
    client.meta.events.register("before-send.s3.PutObject", capture)
    data = os.urandom(2 * 1024 * 1024 + 5)  # more than one aws-chunked chunk (1 MiB each)
    client.put_object(Bucket=TEST_BUCKET, Key=prefix + "chunked.bin", Body=io.BytesIO(data))

    assert seen["Transfer-Encoding"] == "chunked" and "Content-Length" not in seen
    assert seen["X-Amz-Content-SHA256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert s3_client.get_object(Bucket=TEST_BUCKET, Key=prefix + "chunked.bin")["Body"].read() \
        == data
    assert proxy.forwarded == proxy.requests == 1


def test_retries_ride_through_every_kind_of_fault(proxy, prefix, s3_client, quick_retries):
    client = client_via(proxy, max_attempts=6)
    proxy.every(2, ["slowdown", "reset", "reset_after", "500"])
    bodies = {f"{prefix}obj-{i}": os.urandom(64 * 1024 + i) for i in range(10)}
    for key, body in bodies.items():
        client.put_object(Bucket=TEST_BUCKET, Key=key, Body=body)
    for key, body in bodies.items():
        assert client.get_object(Bucket=TEST_BUCKET, Key=key)["Body"].read() == body

    assert set(proxy.faults) == {"slowdown", "reset", "reset_after", "500"}
    assert sum(proxy.faults.values()) == proxy.requests // 2
    # Every fault cost one extra request; "reset_after" ones reached the server anyway.
    assert proxy.requests == 20 + sum(proxy.faults.values())
    assert proxy.forwarded == 20 + proxy.faults["reset_after"]
    proxy.every(0)
    for key, body in bodies.items():  # and the server holds the right bytes
        assert s3_client.get_object(Bucket=TEST_BUCKET, Key=key)["Body"].read() == body


def test_faults_surface_when_retries_run_out(proxy, prefix, s3_client, quick_retries):
    s3_client.put_object(Bucket=TEST_BUCKET, Key=prefix + "x", Body=b"x")
    client = client_via(proxy, max_attempts=1)
    # botocore's Config(retries={"max_attempts": N}) counts retries, not attempts: N + 1 in all.
    attempts = client.meta.config.retries["total_max_attempts"]

    proxy.every(1, ["slowdown"])
    with pytest.raises(bx.ClientError) as slow:
        client.get_object(Bucket=TEST_BUCKET, Key=prefix + "x")
    assert slow.value.response["Error"]["Code"] == "SlowDown"
    assert slow.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503

    proxy.every(1, ["500"])
    with pytest.raises(bx.ClientError) as internal:
        client.get_object(Bucket=TEST_BUCKET, Key=prefix + "x")
    assert internal.value.response["Error"]["Code"] == "InternalError"

    proxy.every(1, ["reset"])
    with pytest.raises(bx.ConnectionClosedError) as reset:  # urllib3 saw ECONNRESET
        client.get_object(Bucket=TEST_BUCKET, Key=prefix + "x")
    assert reset.value.kwargs["error"].args[1].errno == errno.ECONNRESET  # an RST, not a FIN

    assert proxy.forwarded == 0 and proxy.requests == 3 * attempts
    assert proxy.faults == {"slowdown": attempts, "500": attempts, "reset": attempts}
    proxy.every(0)
    assert client.get_object(Bucket=TEST_BUCKET, Key=prefix + "x")["Body"].read() == b"x"


def test_deny_is_a_permanent_403(proxy):
    client = client_via(proxy, max_attempts=5)
    client.head_bucket(Bucket=TEST_BUCKET)
    proxy.deny(True)
    with pytest.raises(bx.ClientError) as head:
        client.head_bucket(Bucket=TEST_BUCKET)
    assert head.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(bx.ClientError) as listing:
        client.list_objects_v2(Bucket=TEST_BUCKET, Prefix="proxytest/")
    assert listing.value.response["Error"]["Code"] == "AccessDenied"
    assert listing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert proxy.requests == 3 and proxy.faults["deny"] == 2  # botocore did not retry a 403
    proxy.deny(False)
    client.head_bucket(Bucket=TEST_BUCKET)
    assert proxy.forwarded == 2


def test_reframes_chunked_and_close_delimited_answers():
    """SeaweedFS answers with a Content-Length; other servers may stream chunked answers or end
    them by closing. A bare upstream here shows the proxy re-frames those for a keep-alive
    client, without passing Transfer-Encoding on."""
    import http.client
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Upstream(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/chunked":
                self.protocol_version = "HTTP/1.1"
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            else:  # HTTP/1.0 without a length: the body ends when the connection closes
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"until close")

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        with S3FaultProxy(f"http://127.0.0.1:{upstream.server_address[1]}") as proxy:
            conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]),
                                              timeout=10)
            for path, body in [("/chunked", b"hello world"), ("/closed", b"until close"),
                               ("/chunked", b"hello world")]:  # one client connection for all
                conn.request("GET", path)
                resp = conn.getresponse()
                assert resp.read() == body
                assert resp.getheader("Content-Length") == str(len(body))
                assert resp.getheader("Transfer-Encoding") is None
            assert conn.sock is not None  # still open: kept alive across the three
            conn.close()
            assert proxy.forwarded == 3
    finally:
        upstream.shutdown()
        upstream.server_close()
