"""Every import of the WIT world, called by a real guest (`all-imports`),
through the real host and IONWALL: denied without a grant, allowed exactly
as granted, audited, and safe from many threads at once."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import pytest
from conftest import REPO, GuestPublisher
from ionflux import _errors as e
from ionflux.host import Host

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
