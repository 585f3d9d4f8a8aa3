"""The http import against a real local HTTP server: scopes name host and port,
redirects are not followed, sizes and timeouts are bounded, and a granted name
reaches no internal address unless the host's config lists it
(``egress.allow_addresses``), checked at the address actually connected to.

The servers here listen on loopback, so the ``host`` fixture of this module
lists 127.0.0.1; ``strict`` is a host with the default (public addresses only).
Where a name must point at an address no test can listen on (10.0.0.1,
169.254.169.254) or change its answer (rebinding), ``_egress.resolve`` is
replaced: the resolver is the one stand-in, the connection is real.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import ionflux as e
import pytest
from conftest import MANIFESTS, make_config
from ionflux.config import Config, EgressSettings, load_config
from ionflux.host import Host
from ionflux.runtime import _egress, http_scope
from ionflux.runtime._egress import EgressPolicy, address_class

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
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
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
            me = self.server.server_address[0]
            body = f"hello from {self.path} host={self.headers.get('Host')} at={me}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(address: str, port: int = 0) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer((address, port), _Handler)
    httpd.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _stop(*servers: ThreadingHTTPServer) -> None:
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def loopback() -> Iterator[ThreadingHTTPServer]:
    httpd = _serve("127.0.0.1")
    yield httpd
    _stop(httpd)


@pytest.fixture
def server(loopback: ThreadingHTTPServer) -> str:
    return f"127.0.0.1:{loopback.server_address[1]}"


def _host(data_dir: Path, *allow: str, **limits: int) -> Host:
    config = make_config(data_dir, **limits)
    config = config.model_copy(update={"egress": EgressSettings(allow_addresses=list(allow))})
    h = Host(config)
    h.publish(MANIFESTS / "http-request.yaml")
    return h


@pytest.fixture
def host(tmp_path: Path, built: Path) -> Iterator[Host]:
    """This module's servers listen on loopback: the owner listed 127.0.0.1."""
    h = _host(tmp_path / "data", "127.0.0.1")
    yield h
    h.close()


@pytest.fixture
def strict(tmp_path: Path, built: Path) -> Iterator[Host]:
    """A host with the default egress: public addresses only."""
    h = _host(tmp_path / "strict")
    yield h
    h.close()


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[list[str]]]:
    """Replaces the resolver (the one stand-in): ``names[host]`` is the list of
    answers it gives, one per lookup, the last repeated."""
    table: dict[str, list[list[str]]] = {}
    real = _egress.resolve

    def resolve(host: str, port: int) -> list[str]:
        answers = table.get(host)
        if answers is None:
            return real(host, port)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    monkeypatch.setattr(_egress, "resolve", resolve)
    return table


def _fetch(h: Host, url: str, *allowed: str) -> object:
    return h.invoke("http-request", {"method": "GET", "url": url}, gate=ExactGate(*allowed)).value


def _refused(h: Host, url: str, scope: str) -> str:
    """Fetches ``url`` with ``scope`` granted; returns the denial's message."""
    with pytest.raises(e.TransformFailed) as info:
        _fetch(h, url, scope)
    assert info.value.case == "denied", info.value
    return str(info.value)


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
    assert out.value["body"] == f"hello from /hi host={server} at=127.0.0.1"
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


def test_response_over_limit(tmp_path: Path, built: Path, server: str) -> None:
    h = _host(tmp_path, "127.0.0.1", http_max_response_bytes=1024 * 1024)
    try:
        gate = ExactGate(f"http_fetch:{server}")
        with pytest.raises(e.TransformFailed) as info:
            h.invoke("http-request", {"method": "GET", "url": f"http://{server}/big"}, gate=gate)
        assert info.value.case == "too-large"
    finally:
        h.close()


def test_timeout_is_bounded_by_the_call_deadline(tmp_path: Path, built: Path, server: str) -> None:
    h = _host(tmp_path, "127.0.0.1", timeout_ms=500, ceiling_factor=1)
    try:
        gate = ExactGate(f"http_fetch:{server}")
        # The server answers after 1.5 s; the request's own timeout is the
        # call's remaining time (under 0.5 s), not http_timeout_ms (10 s).
        with pytest.raises((e.TransformFailed, e.DeadlineExceeded)) as info:
            h.invoke("http-request", {"method": "GET", "url": f"http://{server}/slow"}, gate=gate)
        if isinstance(info.value, e.TransformFailed):
            found = re.search(r"timed out after ([0-9.]+)s", str(info.value))
            assert found is not None and float(found.group(1)) <= 0.5, info.value
    finally:
        h.close()


def test_no_grant_no_request(host: Host, server: str) -> None:
    with pytest.raises(e.ConsentRequired, match="ionflux consent approve") as info:
        host.invoke("http-request", {"method": "GET", "url": f"http://{server}/"})
    assert info.value.request.scopes == ("http_fetch:**",)


# --- internal addresses -------------------------------------------------------


def test_a_granted_name_that_resolves_to_loopback_is_refused(
    strict: Host, loopback: ThreadingHTTPServer
) -> None:
    port = loopback.server_address[1]
    message = _refused(strict, f"http://localhost:{port}/secret", f"http_fetch:localhost:{port}")
    assert "loopback address" in message and "egress.allow_addresses" in message
    assert loopback.seen == []  # nothing reached the server
    # The gate allowed the name; the host refused the address, and says so in the audit.
    denial = strict.ionwall.audit_tail(1)[0]
    assert denial.decision == "deny" and denial.scope == f"http_fetch:localhost:{port}"
    assert "127.0.0.1 is a loopback address" in denial.reason
    assert strict.ionwall.audit_verify().ok


def test_an_ip_literal_is_checked_like_a_name(strict: Host, loopback: ThreadingHTTPServer) -> None:
    port = loopback.server_address[1]
    for host in ("127.0.0.1", "127.1", "2130706433", "[::ffff:127.0.0.1]"):
        url = f"http://{host}:{port}/"
        message = _refused(strict, url, http_scope(url))
        assert "loopback" in message, host
    assert loopback.seen == []


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.0.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("100.64.0.1", "a carrier-grade NAT address"),
        ("0.0.0.0", "a unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("240.0.0.1", "a reserved (special-purpose) address"),
        ("fd00::1", "a private address"),
        ("fe80::1", "a link-local address"),
        ("::ffff:169.254.169.254", "link-local (embedded in"),
        ("64:ff9b::a9fe:a9fe", "link-local (embedded in"),
    ],
)
def test_names_pointing_inside_are_refused(
    strict: Host, names: dict[str, list[list[str]]], address: str, kind: str
) -> None:
    names["inside.example.com"] = [[address]]
    message = _refused(strict, "http://inside.example.com/", "http_fetch:inside.example.com")
    assert kind in message


def test_every_address_of_a_name_is_checked(
    host: Host, names: dict[str, list[list[str]]], loopback: ThreadingHTTPServer
) -> None:
    port = loopback.server_address[1]
    # One refused address and one allowed: the connection goes to the allowed one only.
    names["mixed.example.com"] = [["169.254.169.254", "127.0.0.1"]]
    url = f"http://mixed.example.com:{port}/m"
    out = _fetch(host, url, f"http_fetch:mixed.example.com:{port}")
    assert out["body"] == f"hello from /m host=mixed.example.com:{port} at=127.0.0.1"  # type: ignore[index]


def test_the_owner_lists_an_address_with_its_port(
    tmp_path: Path, built: Path, loopback: ThreadingHTTPServer
) -> None:
    port = loopback.server_address[1]
    h = _host(tmp_path / "d", f"127.0.0.1:{port}")
    try:
        out = _fetch(h, f"http://localhost:{port}/ok", f"http_fetch:localhost:{port}")
        # Pinned to the checked address; Host header (and SNI for https) stay the name's.
        assert out["body"] == f"hello from /ok host=localhost:{port} at=127.0.0.1"  # type: ignore[index]
        other = _serve("127.0.0.1")
        try:
            o = other.server_address[1]
            assert "loopback" in _refused(h, f"http://127.0.0.1:{o}/", f"http_fetch:127.0.0.1:{o}")
            assert other.seen == []
        finally:
            _stop(other)
    finally:
        h.close()


def test_rebinding_cannot_reach_the_second_answer(
    tmp_path: Path, built: Path, names: dict[str, list[list[str]]]
) -> None:
    # 127.0.0.2 stands for a public address (listed, so it passes); 127.0.0.1 on
    # the same port is the internal service the name is rebound to afterwards.
    public = _serve("127.0.0.2")
    port = public.server_address[1]
    try:
        internal = _serve("127.0.0.1", port)
    except OSError:
        _stop(public)
        pytest.skip(f"port {port} is taken on 127.0.0.1")
    h = _host(tmp_path / "d", "127.0.0.2")
    try:
        names["rebind.example.com"] = [["127.0.0.2"], ["127.0.0.1"]]
        scope = f"http_fetch:rebind.example.com:{port}"
        for i in range(3):
            try:
                out = _fetch(h, f"http://rebind.example.com:{port}/{i}", scope)
            except e.TransformFailed as exc:  # a new connection: checked again, refused
                assert exc.case == "denied" and "loopback" in str(exc)
            else:
                assert out["body"].endswith("at=127.0.0.2")  # type: ignore[index]
        assert public.seen and internal.seen == []
    finally:
        h.close()
        _stop(public, internal)


def test_the_hosts_own_ports_stay_closed_inside_a_listed_range() -> None:
    loop = ipaddress.ip_address("127.0.0.1")
    policy = EgressPolicy(["127.0.0.0/8"], own=[], own_ports=[8620])
    assert policy.refusal(loop, 8000) is None
    assert "this host's own service" in (policy.refusal(loop, 8620) or "")
    assert EgressPolicy(["127.0.0.1:8620"], own=[], own_ports=[8620]).refusal(loop, 8620) is None
    public = ipaddress.ip_address("203.0.114.7")  # stands for one of the host's interfaces
    mine = EgressPolicy([], own=[public])
    assert "the host's own address" in (mine.refusal(public, 443) or "")
    assert EgressPolicy([]).refusal(ipaddress.ip_address("8.8.8.8"), 443) is None


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:10.1.2.3", "private (embedded in ::ffff:a01:203)"),
        ("2002:a9fe:a9fe::1", "link-local (embedded in 2002:a9fe:a9fe::1)"),
        ("172.31.255.255", "private"),
        ("100.127.255.255", "carrier-grade NAT"),
        ("192.0.2.1", "reserved (special-purpose)"),
        ("255.255.255.255", "reserved (special-purpose)"),
        ("ff02::1", "multicast"),
        ("::", "unspecified"),
    ],
)
def test_address_classes(text: str, kind: str | None) -> None:
    assert address_class(ipaddress.ip_address(text)) == kind


@pytest.mark.parametrize("entry", ["intranet", "10.0.0.0/33", "127.0.0.1:99999", "[::1]x"])
def test_a_bad_allow_entry_is_a_config_error(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "ionflux.yaml"
    path.write_text(f"egress:\n  allow_addresses: [{entry!r}]\n")
    with pytest.raises(e.ConfigError, match="allow_addresses"):
        load_config(path, data_dir=tmp_path)


def test_allow_entries_parse() -> None:
    config: Config = load_config(data_dir=Path("/nonexistent"))
    assert config.egress.allow_addresses == []
    parse: Callable[[str], _egress.Allowed] = _egress.parse_allowed
    assert parse("10.0.0.0/8").port is None
    assert parse("[::1]:8080").port == 8080 and parse("[::1]:8080").network.num_addresses == 1
    assert parse("127.0.0.1:18999").port == 18999
