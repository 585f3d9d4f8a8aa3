"""Extism host functions (``extism:host/user`` ``ionflux_*``) called by real
plugins through the real host, IONWALL and Extism: each one runs, through the
same gated code as the component imports (grants, audit, per-call budgets,
egress address checks, reserved bus subjects), with per-call state of its own,
and nothing a plugin sends or a function raises reaches Extism's native code.

The plugins are inline WAT (``caller``): ``run`` copies its input into a
kernel block, passes it to one host function ``times`` times and returns the
last answer as its output.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ionflux as e
import pytest
import wasmtime
from conftest import GuestPublisher, make_config
from ionflux.config import EgressSettings
from ionflux.host import Host
from ionflux.runtime import extism as ionflux_extism

from ionwall import AllowListGate

FUNCTIONS = [
    "ionflux_log",
    "ionflux_config_get",
    "ionflux_pod_get",
    "ionflux_pod_put",
    "ionflux_bus_publish",
    "ionflux_http_fetch",
]
# One request per host function, with the scope it resolves to.
REQUESTS: dict[str, tuple[dict[str, Any], str]] = {
    "ionflux_log": ({"level": "info", "message": "hi"}, "emit_log:info"),
    "ionflux_config_get": ({"key": "greeting"}, "read_config:greeting"),
    "ionflux_pod_get": ({"reference": "notes/a.txt"}, "read_pod_data:notes/a.txt"),
    "ionflux_pod_put": ({"path": "notes/a.txt", "data": "x"}, "write_pod_data:notes/a.txt"),
    "ionflux_bus_publish": (
        {"subject": "ionflux.t.x", "payload": "{}"},
        "publish_nats_topic:ionflux.t.x",
    ),
    "ionflux_http_fetch": ({"url": "http://127.0.0.1:9/"}, "http_fetch:127.0.0.1:9"),
}

_KERNEL = """
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "free" (func $free (param i64)))
  (import "extism:host/env" "length" (func $length (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
"""


def caller(function: str, times: int = 1, forge_length: int | None = None) -> bytes:
    """A plugin whose ``run`` hands its input to ``function`` ``times`` times
    (freeing each answer but the last) and returns the last answer.

    ``forge_length``: before calling, it overwrites the ``used`` field of its
    request block's header (the kernel's ``MemoryBlock``, 4 bytes before the
    data on wasm32) with that length, as a hostile plugin can.
    """
    forge = ""
    if forge_length is not None:
        forge = "".join(
            f"(call $store_u8 (i64.sub (local.get $req) (i64.const {4 - i}))"
            f" (i32.const {(forge_length >> (8 * i)) & 0xFF}))"
            for i in range(4)
        )
    wat = f"""(module {_KERNEL}
  (import "extism:host/user" "{function}" (func $fn (param i64) (result i64)))
  (func (export "run") (result i32)
    (local $len i64) (local $req i64) (local $i i64) (local $answer i64) (local $n i32)
    (local.set $len (call $input_length))
    (local.set $req (call $alloc (local.get $len)))
    (block $done (loop $copy
      (br_if $done (i64.ge_u (local.get $i) (local.get $len)))
      (call $store_u8 (i64.add (local.get $req) (local.get $i))
                      (call $input_load_u8 (local.get $i)))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $copy)))
    {forge}
    (loop $again
      (if (i64.ne (local.get $answer) (i64.const 0)) (then (call $free (local.get $answer))))
      (local.set $answer (call $fn (local.get $req)))
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $n) (i32.const {times}))))
    (call $output_set (local.get $answer) (call $length (local.get $answer)))
    (i32.const 0)))"""
    return bytes(wasmtime.wat2wasm(wat))


def raw_caller(function: str, offset: int) -> bytes:
    """A plugin that passes ``function`` a made-up block offset and returns the answer."""
    wat = f"""(module {_KERNEL}
  (import "extism:host/user" "{function}" (func $fn (param i64) (result i64)))
  (func (export "run") (result i32)
    (local $answer i64)
    (local.set $answer (call $fn (i64.const {offset})))
    (call $output_set (local.get $answer) (call $length (local.get $answer)))
    (i32.const 0)))"""
    return bytes(wasmtime.wat2wasm(wat))


Publish = Callable[..., str]


@pytest.fixture
def publish(publish_guest: GuestPublisher, tmp_path: Path) -> Publish:
    """Publishes a plugin (bytes) as an Extism transform; returns its name."""

    def go(host: Host, name: str, data: bytes, **manifest: Any) -> str:
        path = tmp_path / f"{name}.wasm"
        path.write_bytes(data)
        publish_guest(host, name, path=path, abi="extism", **manifest)
        return name

    return go


def call(host: Host, name: str, request: Any, gate: Any = None) -> Any:
    return host.invoke(name, request, gate=gate).value


# --- every function runs, through the gate ---------------------------------------


def test_every_host_function_is_denied_and_audited_without_a_grant(
    host: Host, publish: Publish
) -> None:
    for function in FUNCTIONS:
        request, scope = REQUESTS[function]
        name = publish(host, function.replace("_", "-"), caller(function))
        out = call(host, name, request)
        assert out["error"]["case"] == "denied", (function, out)
        assert scope in out["error"]["message"], function
    denials = [x for x in host.ionwall.audit_tail(20) if x.decision == "deny"]
    assert {x.scope for x in denials} >= {scope for _, scope in REQUESTS.values()}
    assert host.ionwall.audit_verify().ok


def test_granted_host_functions_give_the_real_answer(host: Host, publish: Publish) -> None:
    gate = AllowListGate([scope for _, scope in REQUESTS.values()])
    log = publish(host, "log", caller("ionflux_log"))
    result = host.invoke(log, REQUESTS["ionflux_log"][0], gate=gate)
    assert result.value == {"ok": None}
    assert [(x.level, x.message) for x in result.logs] == [("info", "hi")]
    assert result.import_calls == 1

    config = publish(host, "config", caller("ionflux_config_get"), config={"greeting": "hello"})
    assert call(host, config, {"key": "greeting"}, gate) == {"ok": "hello"}
    assert call(host, config, {"key": "unset"}, AllowListGate(["read_config:unset"])) == {
        "ok": None
    }

    put = publish(host, "put", caller("ionflux_pod_put"))
    cid = call(host, put, {"path": "notes/a.txt", "data": "round trip"}, gate)["ok"]
    assert cid.startswith("bafk") and host.pod.resolve("notes/a.txt") == cid
    get = publish(host, "get", caller("ionflux_pod_get"))
    assert call(host, get, {"reference": "notes/a.txt"}, gate) == {"ok": "round trip"}
    by_cid = AllowListGate([f"read_pod_data:{cid}"])
    assert call(host, get, {"reference": cid}, by_cid) == {"ok": "round trip"}

    # A bare host has no bus: allowed by the gate, then unavailable (the real
    # bus is below, and against a serving host in tests/security).
    bus = publish(host, "bus", caller("ionflux_bus_publish"))
    out = call(host, bus, {"subject": "ionflux.t.x", "payload": "{}"}, gate)
    assert out["error"]["case"] == "unavailable"


class _Hello(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = b"got " + body + b" with " + self.headers["X-Test"].encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def loopback() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_http_fetch_reaches_an_address_the_owner_listed(
    tmp_path: Path, built: Path, publish: Publish, loopback: int
) -> None:
    config = make_config(tmp_path / "data")
    h = Host(config.model_copy(update={"egress": EgressSettings(allow_addresses=["127.0.0.1"])}))
    try:
        name = publish(h, "fetch", caller("ionflux_http_fetch"))
        request = {
            "method": "POST",
            "url": f"http://127.0.0.1:{loopback}/x",
            "headers": [["X-Test", "yes"]],
            "body": "ping",
            "timeout_ms": 5000,
        }
        out = call(h, name, request, AllowListGate([f"http_fetch:127.0.0.1:{loopback}"]))
        assert out["ok"]["status"] == 201
        assert out["ok"]["body"] == "got ping with yes"
        assert ["content-length", "17"] in out["ok"]["headers"]
    finally:
        h.close()


def test_http_fetch_to_an_internal_address_is_refused_and_audited(
    host: Host, publish: Publish, loopback: int
) -> None:
    # The default egress: a granted name that leads to loopback is refused.
    name = publish(host, "fetch", caller("ionflux_http_fetch"))
    scope = f"http_fetch:localhost:{loopback}"
    out = call(host, name, {"url": f"http://localhost:{loopback}/"}, AllowListGate([scope]))
    assert out["error"]["case"] == "denied"
    assert "127.0.0.1" in out["error"]["message"] and "loopback" in out["error"]["message"]
    entry = host.ionwall.audit_tail(1)[0]
    assert entry.decision == "deny" and entry.scope == scope


async def test_a_bus_publish_reaches_a_real_nats_subscriber(
    tmp_path: Path, built: Path, publish: Publish
) -> None:
    from ionflux.bus import NatsBus
    from ionflux.triggers import NatsServer

    server = NatsServer(tmp_path / "nats").start()
    bus = await NatsBus.connect(server.url, credentials=server.credentials)
    h = Host(make_config(tmp_path / "data"), bus=bus)
    try:
        name = publish(h, "bus", caller("ionflux_bus_publish"))
        received = await bus.nc.subscribe("ionflux.extism.out")
        gate = AllowListGate(["publish_nats_topic:ionflux.extism.out"])
        request = {"subject": "ionflux.extism.out", "payload": '{"n": 1}'}
        # The call blocks on the publish, which runs on this loop: off the loop.
        out = await asyncio.to_thread(call, h, name, request, gate)
        assert out == {"ok": None}
        msg = await received.next_msg(timeout=10)
        assert msg.data == b'{"n": 1}'
        # A completion subject, whatever the grant: refused, audited, not sent.
        wide = AllowListGate(["publish_nats_topic:**"])
        fake = {"subject": "ionflux.extism.completion", "payload": "{}"}
        watch = await bus.nc.subscribe("ionflux.extism.completion")
        out = await asyncio.to_thread(call, h, name, fake, wide)
        assert out["error"]["case"] == "denied" and "completion" in out["error"]["message"]
        entry = h.ionwall.audit_tail(1)[0]
        assert entry.decision == "deny"
        assert entry.scope == "publish_nats_topic:ionflux.extism.completion"
        await bus.nc.flush()
        assert watch.pending_msgs == 0
    finally:
        h.close()
        await bus.close()
        server.stop()


class RecordingBus:
    """Stands in for NATS where only what reached the bus matters (the real bus is above)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, subject: str, payload: bytes) -> None:
        self.sent.append((subject, payload))


@pytest.mark.parametrize(
    "subject",
    ["orders.completion", "ionflux.graph.digest.anything", "_INBOX.abc", "$JS.API.STREAM.DELETE.x"],
)
def test_reserved_subjects_are_refused(
    tmp_path: Path, built: Path, publish: Publish, subject: str
) -> None:
    bus = RecordingBus()
    h = Host(make_config(tmp_path / "data"), bus=bus)
    try:
        name = publish(h, "bus", caller("ionflux_bus_publish"))
        gate = AllowListGate(["publish_nats_topic:**"])
        out = call(h, name, {"subject": subject, "payload": "{}"}, gate)
        assert out["error"]["case"] == "denied"
        assert f"publish_nats_topic:{subject}" in out["error"]["message"]
        assert bus.sent == []
        entry = h.ionwall.audit_tail(1)[0]
        assert entry.decision == "deny" and entry.scope == f"publish_nats_topic:{subject}"
    finally:
        h.close()


# --- per-call budgets ------------------------------------------------------------


def test_the_per_call_import_budget_stops_a_flood(host: Host, publish: Publish) -> None:
    gate = AllowListGate(["read_config:*"])
    fits = publish(
        host, "fits", caller("ionflux_config_get", times=20), limits={"max_import_calls": 20}
    )
    assert call(host, fits, {"key": "k"}, gate) == {"ok": None}
    flood = publish(
        host, "flood", caller("ionflux_config_get", times=5_000), limits={"max_import_calls": 20}
    )
    with pytest.raises(e.ImportBudgetExceeded) as info:
        call(host, flood, {"key": "k"}, gate)
    assert info.value.budget == "max_import_calls" and info.value.limit == 20
    # Bad requests count too: a flood of them stops at the same budget.
    with pytest.raises(e.ImportBudgetExceeded):
        call(host, flood, {"key": 5}, gate)
    # The counter was the call's own: the next call starts from zero.
    assert call(host, fits, {"key": "k"}, gate) == {"ok": None}


def test_a_plugin_over_its_budget_is_stopped_not_left_to_spin(
    host: Host, publish: Publish, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past the budget every call is refused; the plugin is cancelled rather
    # than left to loop on refusals until its deadline or fuel (~180,000 more
    # calls here). Cancelling reaches it through Extism's timer thread, so a
    # few more calls may land first.
    served = 0
    original = ionflux_extism._HANDLERS["ionflux_config_get"]

    def counting(request: dict[str, Any]) -> Any:
        nonlocal served
        served += 1
        return original(request)

    monkeypatch.setitem(ionflux_extism._HANDLERS, "ionflux_config_get", counting)
    name = publish(
        host,
        "spinner",
        caller("ionflux_config_get", times=2**31 - 1),
        limits={"max_import_calls": 20, "timeout_ms": 8_000, "fuel": 200_000_000},
    )
    with pytest.raises(e.ImportBudgetExceeded):
        call(host, name, {"key": "k"}, AllowListGate(["read_config:*"]))
    assert 20 < served < 20_000


def test_the_log_budget_holds_for_plugins(host: Host, publish: Publish) -> None:
    line = {"level": "info", "message": "x" * 8000}
    fits = host.config.limits.max_log_bytes // 8000
    name = publish(host, "chatty", caller("ionflux_log", times=fits + 1))
    with pytest.raises(e.ImportBudgetExceeded) as info:
        call(host, name, line, AllowListGate(["emit_log:*"]))
    assert info.value.budget == "max_log_bytes"


def test_concurrent_calls_of_different_plugins_do_not_share_state(
    host: Host, publish: Publish
) -> None:
    # Each call makes exactly its budget of calls: a counter shared with
    # another call would cross it; each must read its own plugin's config.
    plugins = {
        "a": publish(
            host,
            "plugin-a",
            caller("ionflux_config_get", times=40),
            config={"who": "a"},
            limits={"max_import_calls": 40},
        ),
        "b": publish(
            host,
            "plugin-b",
            caller("ionflux_config_get", times=40),
            config={"who": "b"},
            limits={"max_import_calls": 40},
        ),
    }
    gate = AllowListGate(["read_config:who"])
    failures: list[str] = []
    start = threading.Barrier(4)

    def worker(who: str) -> None:
        start.wait()
        for _ in range(15):
            try:
                result = host.invoke(plugins[who], {"key": "who"}, gate=gate)
            except Exception as exc:
                failures.append(f"{who}: {exc!r}")
                continue
            if result.value != {"ok": who} or result.import_calls != 40:
                failures.append(f"{who}: {result.value} after {result.import_calls} calls")

    threads = [threading.Thread(target=worker, args=(w,)) for w in "abab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


# --- what a plugin sends, and what a function raises --------------------------------


@pytest.mark.parametrize(
    ("request_text", "why"),
    [
        ('"just a string"', "JSON object"),
        ('{"key": 5}', "must be a string"),
        # A component cannot send one (the canonical ABI passes valid UTF-8 only);
        # in a scope it would reach the audit log, which writes UTF-8.
        ('{"key": "\\ud800x"}', "lone surrogate"),
    ],
)
def test_a_bad_request_is_invalid(
    host: Host, publish: Publish, request_text: str, why: str
) -> None:
    name = publish(host, "config", caller("ionflux_config_get"))
    out = host.invoke(name, request_text, gate=AllowListGate(["read_config:*"])).value
    assert out["error"]["case"] == "invalid" and why in out["error"]["message"], out


@pytest.mark.parametrize("offset", [0, 1, 12345, 2**40, -1])
def test_a_made_up_block_is_invalid(host: Host, publish: Publish, offset: int) -> None:
    name = publish(host, "raw", raw_caller("ionflux_config_get", offset))
    out = call(host, name, {}, AllowListGate(["read_config:*"]))
    assert out["error"]["case"] == "invalid" and "block" in out["error"]["message"], out


@pytest.mark.parametrize("length", [0x7FFF_FFFF, 4 * 1024 * 1024])
def test_a_forged_block_length_reads_nothing_outside_the_plugin(
    host: Host, publish: Publish, length: int
) -> None:
    # The SDK's own `input_string` would copy `length` bytes from the kernel
    # memory's base: past its end, a fault in the host. 2 GiB is past the call's
    # memory limit; 4 MiB is under it but past the pages the kernel has.
    name = publish(host, "forger", caller("ionflux_config_get", forge_length=length))
    out = call(host, name, {"key": "greeting"}, AllowListGate(["read_config:*"]))
    assert out["error"]["case"] == "invalid" and "forged" in out["error"]["message"], out


def test_a_host_function_that_raises_answers_failed(
    host: Host, publish: Publish, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # A handler that raises stands in for a bug in the host: what the guest
    # gets is an error answer, and nothing reaches cffi's "exception ignored".
    def broken(request: dict[str, Any]) -> Any:
        raise RuntimeError("a bug in the host")

    monkeypatch.setitem(ionflux_extism._HANDLERS, "ionflux_config_get", broken)
    name = publish(host, "config", caller("ionflux_config_get"))
    out = call(host, name, {"key": "greeting"})
    assert out["error"]["case"] == "failed"
    assert "RuntimeError: a bug in the host" in out["error"]["message"]
    assert "Exception ignored" not in capfd.readouterr().err


def test_a_pod_that_fails_is_an_answer_not_a_crash(
    host: Host, publish: Publish, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(path: str) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(host.pod, "resolve", unreachable)  # the pod's disk, failing
    name = publish(host, "get", caller("ionflux_pod_get"))
    out = call(host, name, {"reference": "notes/a.txt"}, AllowListGate(["read_pod_data:**"]))
    assert out["error"]["case"] == "failed" and "No space left" in out["error"]["message"]


def test_large_requests_and_answers_cross_whole(host: Host, publish: Publish) -> None:
    gate = AllowListGate(["write_pod_data:big.txt", "read_pod_data:*"])
    text = "é" * 40_000  # 80 KB of UTF-8 each way
    put = publish(host, "put", caller("ionflux_pod_put"))
    assert call(host, put, {"path": "big.txt", "data": text}, gate)["ok"].startswith("bafk")
    get = publish(host, "get", caller("ionflux_pod_get"))
    assert call(host, get, {"reference": "big.txt"}, gate) == {"ok": text}
    # An answer the plugin's memory cannot hold is refused as too large.
    host.pod.bind("huge.txt", host.pod.put_bytes(b"x" * (1024 * 1024)))
    small = publish(host, "small", caller("ionflux_pod_get"), limits={"memory_bytes": 512 * 1024})
    out = call(host, small, {"reference": "huge.txt"}, gate)
    assert out["error"]["case"] == "too-large" and "does not fit" in out["error"]["message"]
