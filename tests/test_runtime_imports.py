"""Every import of the WIT world, called by a real guest (`all-imports`),
through the real host and IONWALL: denied without a grant, allowed exactly
as granted, audited, and safe from many threads at once."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import ionflux as e
import pytest
from conftest import REPO, GuestPublisher, make_config
from ionflux.host import Host
from ionflux.runtime._imports import MAX_LOG_LINE_BYTES

from ionwall import AllowListGate

WIT = REPO / "wit" / "transform.wit"

# One call per import function of the world, with the scope it resolves to.
CALLS: dict[str, tuple[dict[str, Any], str]] = {
    "log": ({"call": "log", "level": "info", "message": "hi"}, "emit_log:info"),
    "config": ({"call": "config", "key": "greeting"}, "read_config:greeting"),
    "pod-get": ({"call": "pod-get", "reference": "notes/a.txt"}, "read_pod_data:notes/a.txt"),
    "pod-put": (
        {"call": "pod-put", "path": "notes/a.txt", "data": "x"},
        "write_pod_data:notes/a.txt",
    ),
    "bus": (
        {"call": "bus", "subject": "ionflux.t.x", "payload": "{}"},
        "publish_nats_topic:ionflux.t.x",
    ),
    "http": ({"call": "http", "url": "http://127.0.0.1:9/"}, "http_fetch:127.0.0.1:9"),
}


def test_calls_cover_every_import_function_of_the_world() -> None:
    text = WIT.read_text()
    funcs = set()
    for interface, body in re.findall(r"interface (\w+) \{(.*?)\n\}", text, re.S):
        for name in re.findall(r"^\s*([\w-]+): func", body, re.M):
            funcs.add(f"{interface}.{name}")
    assert funcs == {"log.write", "config.get", "pod.get", "pod.put", "bus.publish", "http.fetch"}
    assert len(CALLS) == len(funcs)


def test_every_import_denied_without_a_grant(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "all-imports")  # requests no scopes: nothing can be granted
    for name, (call, scope) in CALLS.items():
        out = host.invoke("all-imports", call).value
        assert out["error"]["case"] == "denied", name
        assert scope in out["error"]["message"], name
    denials = [entry for entry in host.ionwall.audit_tail(20) if entry.decision == "deny"]
    assert {entry.scope for entry in denials} >= {scope for _, scope in CALLS.values()}
    assert host.ionwall.audit_verify().ok


def test_allowed_imports_reach_their_capability(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "all-imports", config={"greeting": "hello"})
    gate = AllowListGate([scope for _, scope in CALLS.values()])
    result = host.invoke("all-imports", CALLS["log"][0], gate=gate)
    assert result.value == {"ok": None}
    assert [(line.level, line.message) for line in result.logs] == [("info", "hi")]
    assert host.invoke("all-imports", CALLS["config"][0], gate=gate).value == {"ok": "hello"}
    missing = {"call": "config", "key": "unset"}
    gate2 = AllowListGate(["read_config:unset"])
    assert host.invoke("all-imports", missing, gate=gate2).value == {"ok": None}
    put = host.invoke("all-imports", CALLS["pod-put"][0], gate=gate).value
    cid = put["ok"]
    assert cid.startswith("bafk") and host.pod.resolve("notes/a.txt") == cid
    assert host.invoke("all-imports", CALLS["pod-get"][0], gate=gate).value == {"ok": "x"}
    by_cid = AllowListGate([f"read_pod_data:{cid}"])
    got = host.invoke("all-imports", {"call": "pod-get", "reference": cid}, gate=by_cid)
    assert got.value == {"ok": "x"}
    # No bus is connected to a bare host: allowed by the gate, then unavailable.
    bus = host.invoke("all-imports", CALLS["bus"][0], gate=gate).value
    assert bus["error"]["case"] == "unavailable"


def test_config_import_error_reaches_the_guest(host: Host, publish_guest: GuestPublisher) -> None:
    # result<option<string>, error>: the case wasmtime-py 50 could not lower unpatched.
    publish_guest(host, "all-imports")
    out = host.invoke("all-imports", {"call": "config", "key": "k"}).value
    assert out["error"]["case"] == "denied"


def test_pod_paths_cannot_escape(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "all-imports")
    gate = AllowListGate(["write_pod_data:**", "read_pod_data:**"])
    for bad in ["../etc/passwd", "/abs", "a//b", "a/./b", ""]:
        out = host.invoke("all-imports", {"call": "pod-put", "path": bad, "data": "x"}, gate=gate)
        assert out.value["error"]["case"] == "invalid", bad


def test_bad_subject_is_invalid_not_asked(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "all-imports")
    gate = AllowListGate(["publish_nats_topic:**"])
    for bad in ["a.*", "a.>", "with space", "a..b", ""]:
        out = host.invoke("all-imports", {"call": "bus", "subject": bad, "payload": "1"}, gate=gate)
        assert out.value["error"]["case"] == "invalid", bad


def test_imports_from_many_threads(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "all-imports", config={"greeting": "hello"})
    allow = AllowListGate(["read_config:greeting"])
    failures: list[str] = []

    def worker(i: int) -> None:
        for j in range(40):
            allowed = (i + j) % 2 == 0
            out = host.invoke(
                "all-imports", CALLS["config"][0], gate=allow if allowed else None
            ).value
            expected = {"ok": "hello"} if allowed else "denied"
            got = out if allowed else out.get("error", {}).get("case")
            if got != expected:
                failures.append(f"{i}/{j}: {out}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_consent_flow_end_to_end(host: Host) -> None:
    with pytest.raises(e.ConsentRequired) as info:
        host.invoke("pod-store", {"path": "reports/1.json", "data": {"n": 1}})
    request = info.value.request
    assert request.scopes == ("write_pod_data:**",)
    # Asking again does not pile up prompts.
    with pytest.raises(e.ConsentRequired) as again:
        host.invoke("pod-store", {"path": "reports/1.json", "data": {"n": 1}})
    assert again.value.request.id == request.id
    grant = host.ionwall.approve(request.id, only=["write_pod_data:reports/*"])
    stored = host.invoke("pod-store", {"path": "reports/1.json", "data": {"n": 1}}).value
    assert json.loads(host.pod.get_bytes(stored["cid"])) == {"n": 1}
    with pytest.raises(e.TransformFailed) as denied:
        host.invoke("pod-store", {"path": "secrets/1.json", "data": {"n": 1}})
    assert denied.value.case == "denied"
    host.ionwall.revoke(grant.id)
    with pytest.raises(e.ConsentRequired):
        host.invoke("pod-store", {"path": "reports/2.json", "data": {"n": 2}})


def test_extism_plugin_runs_and_is_confined(host: Host, publish_guest: GuestPublisher) -> None:
    build = REPO / "build" / "transforms"
    publish_guest(host, "extism-echo", path=build / "extism-echo.wasm", abi="extism")
    assert host.invoke("extism-echo", {"a": [1, 2]}).value == {"a": [1, 2]}
    with pytest.raises(e.ImportOutsideWorld, match="fd_write"):
        publish_guest(
            host, "wasi-plugin", path=build / "testing" / "outside-world-extism.wasm", abi="extism"
        )
    with pytest.raises(e.ModuleError, match="core module"):
        publish_guest(host, "wrong-abi", path=build / "testing" / "echo.wasm", abi="extism")


# --- per-call budgets ---------------------------------------------------------


def _config_loop(repeat: int, key: str = "greeting") -> dict[str, Any]:
    return {"call": "config", "key": key, "repeat": repeat}


def test_import_calls_are_bounded_per_call(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "all-imports", config={"greeting": "hello"})
    gate = AllowListGate(["read_config:greeting"])
    limit = host.config.limits.max_import_calls
    assert host.invoke("all-imports", _config_loop(limit), gate=gate).value == {"ok": "hello"}
    with pytest.raises(e.ImportBudgetExceeded) as info:
        host.invoke("all-imports", _config_loop(100_000), gate=gate)
    assert info.value.budget == "max_import_calls" and info.value.limit == limit
    assert f"limits.max_import_calls = {limit}" in str(info.value)
    assert info.value.to_dict()["kind"] == "import_budget_exceeded"
    # The counter is the call's own: the next call starts from zero.
    assert host.invoke("all-imports", _config_loop(limit), gate=gate).value == {"ok": "hello"}


def test_the_guest_sees_too_large_and_the_call_still_fails(
    host: Host, publish_guest: GuestPublisher
) -> None:
    # all-imports stops at the first error and returns it as data (a success of
    # `run`): the host fails the call anyway, the guest cannot launder the budget.
    publish_guest(host, "all-imports", limits={"max_import_calls": 5})
    gate = AllowListGate(["read_config:*"])
    with pytest.raises(e.ImportBudgetExceeded, match="more than 5 import calls"):
        host.invoke("all-imports", _config_loop(6), gate=gate)
    assert host.invoke("all-imports", _config_loop(5), gate=gate).value == {"ok": None}


def test_a_manifest_raises_a_budget_only_up_to_the_ceiling(
    tmp_path: Path, built: Path, publish_guest: GuestPublisher
) -> None:
    h = Host(make_config(tmp_path, max_import_calls=10, ceiling_factor=3))
    try:
        publish_guest(h, "all-imports", limits={"max_import_calls": 1_000_000})
        gate = AllowListGate(["read_config:*"])
        assert h.invoke("all-imports", _config_loop(30), gate=gate).value == {"ok": None}
        with pytest.raises(e.ImportBudgetExceeded) as info:
            h.invoke("all-imports", _config_loop(31), gate=gate)
        assert info.value.limit == 30
    finally:
        h.close()


def test_concurrent_calls_do_not_share_a_budget(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "all-imports", limits={"max_import_calls": 300})
    gate = AllowListGate(["read_config:*"])
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                host.invoke("all-imports", _config_loop(300), gate=gate)
        except BaseException as exc:  # a shared counter would pass 300 here
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_audit_bytes_are_bounded_per_call(
    tmp_path: Path, built: Path, publish_guest: GuestPublisher
) -> None:
    budget = 16 * 1024
    h = Host(make_config(tmp_path, max_audit_bytes=budget, max_import_calls=100_000))
    try:
        publish_guest(h, "all-imports", scopes=["read_config:*"])
        log = h.config.data_dir / "ionwall" / "audit.jsonl"
        with pytest.raises(e.ConsentRequired) as consent:
            h.invoke("all-imports", _config_loop(1))
        h.ionwall.approve(consent.value.request.id)  # the real gate, audit and all
        before = log.stat().st_size
        key = "k" * 200  # long scopes: each entry ~ 0.8 KB
        with pytest.raises(e.ImportBudgetExceeded) as info:
            h.invoke("all-imports", _config_loop(100_000, key))
        assert info.value.budget == "max_audit_bytes"
        written = log.stat().st_size - before
        assert 0 < written <= budget
        assert h.ionwall.audit_verify().ok
    finally:
        h.close()


def test_log_bytes_are_bounded_per_call(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "all-imports")
    gate = AllowListGate(["emit_log:*"])
    line = {"call": "log", "level": "info", "message": "x" * 8000}
    fits = host.config.limits.max_log_bytes // 8000
    out = host.invoke("all-imports", {**line, "repeat": fits}, gate=gate)
    assert sum(len(x.message) for x in out.logs) == fits * 8000
    with pytest.raises(e.ImportBudgetExceeded) as info:
        host.invoke("all-imports", {**line, "repeat": fits + 1}, gate=gate)
    assert info.value.budget == "max_log_bytes"
    # A line longer than MAX_LOG_LINE_BYTES is cut, and what is kept is what counts.
    huge = host.invoke("all-imports", {**line, "message": "y" * 100_000}, gate=gate)
    assert len(huge.logs[0].message) == MAX_LOG_LINE_BYTES + 1


# --- the bus import and the host's subjects -----------------------------------


class RecordingBus:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, subject: str, payload: bytes) -> None:
        self.sent.append((subject, payload))


@pytest.mark.parametrize(
    "subject",
    [
        "ionflux.digest.requested.completion",
        "orders.completion",
        "completion",
        "ionflux.graph.digest.completion",
        "ionflux.graph.digest.anything",
        "ionflux.schedule.missed",
        "_INBOX.abc.def",
        "$JS.API.STREAM.DELETE.runs",
        "$SYS.REQ.SERVER.PING",
        "$KV.ionflux.x",
    ],
)
def test_host_subjects_are_never_publishable(
    tmp_path: Path, built: Path, publish_guest: GuestPublisher, subject: str
) -> None:
    bus = RecordingBus()
    h = Host(make_config(tmp_path), bus=bus)
    try:
        publish_guest(h, "all-imports")
        gate = AllowListGate(["publish_nats_topic:**"])  # whatever the grant says
        out = h.invoke(
            "all-imports", {"call": "bus", "subject": subject, "payload": "{}"}, gate=gate
        )
        assert out.value["error"]["case"] == "denied"
        assert f"publish_nats_topic:{subject}" in out.value["error"]["message"]
        assert subject in out.value["error"]["message"].partition(": ")[2]
        assert bus.sent == []
        entry = h.ionwall.audit_tail(1)[0]
        assert entry.decision == "deny" and entry.scope == f"publish_nats_topic:{subject}"
        ok = {"call": "bus", "subject": "ionflux.digest.requested", "payload": "{}"}
        assert h.invoke("all-imports", ok, gate=gate).value == {"ok": None}
        assert bus.sent == [("ionflux.digest.requested", b"{}")]
    finally:
        h.close()


async def test_a_deployments_completion_topics_are_reserved_on_the_bus() -> None:
    import asyncio

    from ionflux.bus import NatsBus
    from nats.aio.client import Client

    bus = NatsBus(Client(), asyncio.get_running_loop())  # never connected: nothing is sent
    assert bus.reserved("reports.done") is None
    bus.reserve(["reports.done"])
    assert "completion topic" in (bus.reserved("reports.done") or "")
    assert "completion subject" in (bus.reserved("a.completion") or "")
    with pytest.raises(e.SubjectReserved) as info:
        bus.publish("reports.done", b"{}")
    assert info.value.scope == "publish_nats_topic:reports.done"
