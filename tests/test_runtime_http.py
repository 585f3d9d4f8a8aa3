"""The http import against a real local HTTP server: scopes name host and port,
redirects are not followed, sizes and timeouts are bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ionflux import _errors as e
from ionflux.host import Host
from ionflux.runtime import http_scope

from ionwall import CallContext, Decision


class ExactGate:
    """Allows exactly the listed scopes and records every question."""

    def __init__(self, *allowed: str) -> None:
        self.allowed = set(allowed)
        self.asked: list[str] = []

    def check(self, ctx: CallContext, scope: str) -> Decision:
        self.asked.append(scope)
        ok = scope in self.allowed
        return Decision(ok, scope, "listed" if ok else "not listed")


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://example.invalid/elsewhere")
            self.end_headers()
            return
        if self.path == "/big":
            body = b"x" * (2 * 1024 * 1024)
        elif self.path == "/medium":
            body = b"m" * (256 * 1024)
        elif self.path == "/slow":
            time.sleep(1.5)
            body = b"late"
        else:
            body = f"hello from {self.path} host={self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    ("url", "scope"),
    [
        ("http://api.example.com/x?y=1", "http_fetch:api.example.com"),
        ("https://API.Example.com:443/", "http_fetch:api.example.com"),
        ("http://api.example.com:80/", "http_fetch:api.example.com"),
        ("http://api.example.com.evil.net/", "http_fetch:api.example.com.evil.net"),
        ("http://api.example.com:8443/", "http_fetch:api.example.com:8443"),
        ("http://127.0.0.1:9000/", "http_fetch:127.0.0.1:9000"),
    ],
)
def test_scope_names_the_real_host_and_port(url: str, scope: str) -> None:
    assert http_scope(url) == scope


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "file:///etc/passwd", "http://user:pw@example.com/", "nonsense"]
)
def test_bad_urls_are_invalid(url: str) -> None:
    with pytest.raises(ValueError, match="invalid url"):
        http_scope(url)


def test_fetch_allowed_host(host: Host, server: str) -> None:
    gate = ExactGate(f"http_fetch:{server}")
    out = host.invoke("http-request", {"method": "GET", "url": f"http://{server}/hi"}, gate=gate)
    assert out.value["status"] == 200
    assert out.value["body"] == f"hello from /hi host={server}"
    assert gate.asked == [f"http_fetch:{server}"]


def test_other_port_on_loopback_denied(host: Host, server: str) -> None:
    ip, port = server.split(":")
    gate = ExactGate(f"http_fetch:{ip}:{int(port) + 1}")
    with pytest.raises(e.TransformFailed) as info:
        host.invoke("http-request", {"method": "GET", "url": f"http://{server}/"}, gate=gate)
    assert info.value.case == "denied"
    assert f"http_fetch:{server}" in str(info.value)


def test_redirect_is_not_followed(host: Host, server: str) -> None:
    gate = ExactGate(f"http_fetch:{server}")
    url = f"http://{server}/redirect"
    out = host.invoke("http-request", {"method": "GET", "url": url}, gate=gate)
    assert out.value["status"] == 302
    assert gate.asked == [f"http_fetch:{server}"]  # nothing asked for example.invalid


def test_response_size_limit(host: Host, server: str) -> None:
    gate = ExactGate(f"http_fetch:{server}")
    url = f"http://{server}/medium"
    out = host.invoke("http-request", {"method": "GET", "url": url}, gate=gate)
    assert out.value["body"] == "m" * (256 * 1024)


def test_response_over_limit(tmp_path, built, server: str) -> None:  # type: ignore[no-untyped-def]
    from conftest import MANIFESTS, make_config

    h = Host(make_config(tmp_path, http_max_response_bytes=1024 * 1024))
    try:
        h.publish(MANIFESTS / "http-request.yaml")
        gate = ExactGate(f"http_fetch:{server}")
        with pytest.raises(e.TransformFailed) as info:
            h.invoke("http-request", {"method": "GET", "url": f"http://{server}/big"}, gate=gate)
        assert info.value.case == "too-large"
    finally:
        h.close()


def test_timeout_is_bounded_by_the_call_deadline(tmp_path, built, server: str) -> None:  # type: ignore[no-untyped-def]
    from conftest import MANIFESTS, make_config

    h = Host(make_config(tmp_path, timeout_ms=500, ceiling_factor=1))
    try:
        h.publish(MANIFESTS / "http-request.yaml")
        gate = ExactGate(f"http_fetch:{server}")
        started = time.monotonic()
        with pytest.raises((e.TransformFailed, e.DeadlineExceeded)):
            h.invoke("http-request", {"method": "GET", "url": f"http://{server}/slow"}, gate=gate)
        assert time.monotonic() - started < 1.3
    finally:
        h.close()


def test_no_grant_no_request(host: Host, server: str) -> None:
    with pytest.raises(e.ConsentRequired, match="ionflux consent approve") as info:
        host.invoke("http-request", {"method": "GET", "url": f"http://{server}/"})
    assert info.value.request.scopes == ("http_fetch:**",)
