"""Where the ``http`` import may connect: public addresses, and the few
internal ones the host's owner listed.

A grant names hosts (``http_fetch:api.example.com``); a name can resolve to
anything, so the name alone says nothing about where a request goes. The
address is checked where the connection is made: ``PinnedBackend`` is the
network backend of the host's HTTP client, and its ``connect_tcp`` resolves
the name (through ``resolve``, the one seam tests replace), checks every
address and connects to one that passed. The address checked is the address
connected to, so a name that answers a public address first and an internal
one a moment later (DNS rebinding) cannot slip through. The URL keeps the
name: the ``Host`` header, TLS SNI and certificate check are the name's.

Refused unless ``egress.allow_addresses`` lists them: loopback, link-local
(cloud metadata at 169.254.169.254), private (RFC 1918, IPv6 ULA), carrier-grade
NAT, unspecified, multicast, reserved and documentation ranges, IPv6 forms
embedding one of those (IPv4-mapped, 6to4, NAT64), and the host's own
addresses. The host's own API and NATS ports stay refused on its own
addresses even inside a listed range, unless the entry names that port.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from .._errors import AddressRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_PRIVATE: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("10.0.0.0/8"),  # RFC 1918
    ipaddress.IPv4Network("172.16.0.0/12"),
    ipaddress.IPv4Network("192.168.0.0/16"),
    ipaddress.IPv6Network("fc00::/7"),  # unique local
)


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order. The seam
    tests replace to point a name anywhere without touching the system."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_class(ip: IPAddress) -> str | None:
    """The kind of non-public address ``ip`` is, or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_class(embedded)
            return None if inner is None else f"{inner} (embedded in {ip})"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT"
    if any(ip in net for net in _PRIVATE):
        return "private"
    if ip.is_reserved or ip.is_private or not ip.is_global:
        return "reserved (special-purpose)"
    return None


@dataclass(frozen=True, slots=True)
class Allowed:
    """One entry of ``egress.allow_addresses``: a network, and a port or any."""

    network: IPNetwork
    port: int | None

    def matches(self, ip: IPAddress, port: int) -> bool:
        return ip in self.network and (self.port is None or self.port == port)


def parse_allowed(entry: str) -> Allowed:
    """``10.0.0.0/8``, ``127.0.0.1``, ``127.0.0.1:8080``, ``[::1]:8080``, ``fd00::/8``."""
    text = entry.strip()
    port: int | None = None
    try:
        if text.startswith("["):
            inside, _, rest = text[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError("expected ]:<port>")
                port = int(rest[1:])
            text = inside
        elif text.count(":") == 1:
            text, _, port_text = text.partition(":")
            port = int(port_text)
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        return Allowed(ipaddress.ip_network(text, strict=False), port)
    except ValueError as exc:
        raise ValueError(
            f"{entry!r} is not an address or network with an optional port "
            f"(e.g. 10.0.0.0/8, 127.0.0.1:8080, [::1]:8080): {exc}"
        ) from None


def own_addresses() -> frozenset[IPAddress]:
    """The addresses of this machine's interfaces (Linux: /proc), plus what its
    host name resolves to."""
    found: set[str] = set()
    try:  # IPv4: the LOCAL routes of the kernel's FIB
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        for prev, line in itertools.pairwise(lines):
            if line.strip() == "/32 host LOCAL":
                found.add(prev.split()[-1])
    except OSError:
        pass
    try:  # IPv6: one interface address per line, 32 hex digits first
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            digits = line.split()[0]
            found.add(":".join(digits[i : i + 4] for i in range(0, 32, 4)))
    except (OSError, IndexError):
        pass
    try:
        found.update(resolve(socket.gethostname(), 0))
    except OSError:
        pass
    out: set[IPAddress] = set()
    for text in found:
        try:
            out.add(ipaddress.ip_address(text.partition("%")[0]))
        except ValueError:
            continue
    return frozenset(out)


def endpoint(url: str | None, default_port: int) -> tuple[str, int] | None:
    """``(host, port)`` of a URL such as ``nats://127.0.0.1:4222``, or None."""
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"//{url}")
    if parts.hostname is None:
        return None
    try:
        return parts.hostname, parts.port or default_port
    except ValueError:
        return None


class EgressPolicy:
    """Decides whether an address may be connected to. Immutable after
    construction except ``add_own_port`` (the ports a serving host learns late)."""

    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        own: Iterable[IPAddress] | None = None,
        own_ports: Iterable[int] = (),
    ) -> None:
        self.allow: tuple[Allowed, ...] = tuple(parse_allowed(a) for a in allow)
        self.own: frozenset[IPAddress] = own_addresses() if own is None else frozenset(own)
        self._own_ports: frozenset[int] = frozenset(own_ports)
        self._lock = threading.Lock()

    def add_own_port(self, port: int) -> None:
        """A port this host serves on (its API, its nats-server)."""
        with self._lock:
            self._own_ports = self._own_ports | {port}

    def refusal(self, ip: IPAddress, port: int) -> str | None:
        """Why ``ip``:``port`` may not be reached, or None when it may."""
        kind = address_class(ip)
        own = ip in self.own or kind in ("loopback", "unspecified")
        if ip in self.own and kind is None:
            kind = "the host's own"
        if kind is None:
            return None
        if own and port in self._own_ports:
            if any(a.port == port and ip in a.network for a in self.allow):
                return None
            return f"{ip}:{port} is this host's own service ({kind} address)"
        if any(a.matches(ip, port) for a in self.allow):
            return None
        return f"{ip} is a {kind} address"


class PinnedBackend(httpcore.NetworkBackend):
    """Resolves, checks, and connects to the address it checked."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._addresses(host, port)
        allowed: list[str] = []
        refused: list[str] = []
        for ip in addresses:
            reason = self.policy.refusal(ip, port)
            if reason is None:
                allowed.append(str(ip))
            else:
                refused.append(reason)
        if not allowed:
            raise AddressRefused(host, port, "; ".join(refused))
        error: Exception | None = None
        for ip_text in allowed:  # the connection goes only where the check said yes
            try:
                return self._inner.connect_tcp(
                    ip_text, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    def _addresses(self, host: str, port: int) -> Sequence[IPAddress]:
        try:
            return [ipaddress.ip_address(host.strip("[]").partition("%")[0])]
        except ValueError:
            pass
        try:
            found = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        out: list[IPAddress] = []
        for text in found:
            try:
                out.append(ipaddress.ip_address(text.partition("%")[0]))
            except ValueError:
                continue
        if not out:
            raise httpcore.ConnectError(f"{host} resolves to no IP address")
        return out

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise AddressRefused(path, 0, "unix sockets are never reached by the http import")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _PinnedTransport(httpx.HTTPTransport):
    def __init__(self, policy: EgressPolicy) -> None:
        super().__init__(trust_env=False)
        ssl_context = self._pool._ssl_context
        self._pool.close()
        # httpx's transport has no parameter for a network backend; the pool it
        # wraps does. Everything else (exception mapping, streaming) is httpx's.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, network_backend=PinnedBackend(policy)
        )


def pinned_client(policy: EgressPolicy) -> httpx.Client:
    """The host's client for the ``http`` import: no redirects (each hop must
    pass the gate), no proxies or netrc from the environment, and every
    connection checked by ``policy`` at the address it is made to."""
    return httpx.Client(transport=_PinnedTransport(policy), follow_redirects=False, trust_env=False)
