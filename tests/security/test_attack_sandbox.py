# ruff: noqa: F811  (pytest fixtures imported from serving, taken as parameters)
"""Hostile modules against a serving host: each fails its run with a typed error,
and the host serves a normal call right after.

Modules are published over HTTP (``POST /transforms``), put in a one-node graph
and run over HTTP (``POST /graphs/{name}/runs``), as an attacker with a
publishing token would. Hostile modules are inline WAT: core modules for the
Extism ABI, hand-written components for the canonical-ABI attacks (a lying
``cabi_realloc``, a bad output pointer, invalid UTF-8), and the built test
guests for the rest.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import wasmtime
from conftest import TESTING
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ionflux.http import RunningHost
from ionflux.http.testing import UpProcess
from ionflux.store import cid_for_bytes
from serving import http, nats_server, running, still_serves, token  # noqa: F401

import ionwall

MiB = 1024 * 1024

# --- hostile modules ---------------------------------------------------------

_EXTISM_IMPORTS = """
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
"""
# Writes `{}` as the output and returns 0: what a well-behaved `run` ends with.
_EXTISM_OK = """
  (func $ok (result i32) (local $p i64)
    (local.set $p (call $alloc (i64.const 2)))
    (call $store_u8 (local.get $p) (i32.const 123))
    (call $store_u8 (i64.add (local.get $p) (i64.const 1)) (i32.const 125))
    (call $output_set (local.get $p) (i64.const 2))
    (i32.const 0))
"""
_SPIN = "(func $spin (loop $forever (br $forever)))"


def extism(body: str) -> bytes:
    return bytes(wasmtime.wat2wasm(f"(module {_EXTISM_IMPORTS} {_EXTISM_OK} {body})"))


EXTISM = {
    # Runs at instantiation, before Extism starts the call's timer.
    "looping-start": extism(f'{_SPIN} (start $spin) (func (export "run") (result i32) (call $ok))'),
    # Extism calls `_initialize` after instantiation, also before the timer.
    "looping-initialize": extism(
        f'{_SPIN} (export "_initialize" (func $spin)) (func (export "run") (result i32) (call $ok))'
    ),
    "endless-loop": extism(f'{_SPIN} (func (export "run") (result i32) (call $spin) (call $ok))'),
    "deep-recursion": extism(
        "(func $down (param i32) (call $down (i32.add (local.get 0) (i32.const 1))))"
        '(func (export "run") (result i32) (call $down (i32.const 0)) (call $ok))'
    ),
    "memory-bomb": extism(
        '(memory 1) (func (export "run") (result i32)'
        "  (drop (memory.grow (i32.const 60000))) (call $ok))"
    ),
    "huge-output": extism(
        '(func (export "run") (result i32)'
        f"  (call $output_set (call $alloc (i64.const {48 * MiB})) (i64.const {48 * MiB}))"
        "  (i32.const 0))"
    ),
    "trap": extism('(func (export "run") (result i32) unreachable)'),
}

_ERROR_TYPE = (
    '(variant (case "denied" string) (case "not-found" string) (case "invalid" string)'
    ' (case "too-large" string) (case "unavailable" string) (case "failed" string))'
)
# `run` answers through a return area at 16: discriminant, pointer, length.
_RETURN = (
    "(i32.store (i32.const 16) (i32.const 0)) (i32.store (i32.const 20) (i32.const {ptr}))"
    " (i32.store (i32.const 24) (i32.const {len})) (i32.const 16)"
)
_HONEST_REALLOC = """
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
      (local.set $p (global.get $heap))
      (global.set $heap (i32.add (global.get $heap) (local.get 3)))
      (local.get $p))
"""


def component(run_body: str, *, realloc: str = _HONEST_REALLOC) -> bytes:
    """A component of the world's shape (``run: func(string) -> result<string, error>``)."""
    return bytes(
        wasmtime.wat2wasm(
            f"""(component
  (core module $m
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    {realloc}
    (func (export "run") (param i32 i32) (result i32) {run_body}))
  (core instance $i (instantiate $m))
  (type $error' {_ERROR_TYPE})
  (export $error "error" (type $error'))
  (func $run (param "input" string) (result (result string (error $error)))
    (canon lift (core func $i "run") (memory (core memory $i "memory"))
      (realloc (core func $i "cabi_realloc"))))
  (export "run" (func $run)))"""
        )
    )


_GROW_UNTIL_REFUSED = (
    "(block $full (loop $more"
    "  (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1))) (br $more)))"
)
COMPONENTS = {
    "bad-pointer": component(_RETURN.format(ptr=0x7FFFFFF0, len=100)),
    "invalid-utf8": component(
        "(i32.store (i32.const 900) (i32.const 0xfcfdfeff))" + _RETURN.format(ptr=900, len=4)
    ),
    "lying-realloc": component(
        _RETURN.format(ptr=900, len=2),
        realloc='(func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)'
        " (i32.const 0x7ffffff0))",
    ),
    # Grows a page at a time until refused, then writes just past its end.
    "grow-then-trap": component(
        _GROW_UNTIL_REFUSED
        + "(i32.store (i32.mul (memory.size) (i32.const 65536)) (i32.const 1)) (i32.const 16)"
    ),
}


# --- publishing and running over HTTP ----------------------------------------


def manage(running: RunningHost) -> dict[str, str]:
    return token(running, "manage_agent_lifecycle:*")


async def publish(
    running: RunningHost,
    http: httpx.AsyncClient,
    name: str,
    data: bytes,
    *,
    abi: str = "component",
    limits: dict[str, int] | None = None,
    publisher: dict[str, str] | None = None,
) -> httpx.Response:
    manifest: dict[str, Any] = {
        "name": name,
        "version": "0.1.0",
        "abi": abi,
        "module": {"cid": cid_for_bytes(data)},
        "limits": limits or {},
    }
    if publisher is not None:
        manifest["publisher"] = publisher
    body = {"manifest": manifest, "module_base64": base64.b64encode(data).decode()}
    return await http.post("/transforms", json=body, headers=manage(running))


async def run_alone(
    running: RunningHost,
    http: httpx.AsyncClient,
    transform: str,
    inputs: str = "{}",
    *,
    within: float = 30,
) -> dict[str, Any]:
    """Deploys a one-node graph around ``transform`` and runs it; the reply's JSON.
    ``within`` bounds the wait: a guest that never returns fails the test."""
    graph = f"attack-{transform}"
    text = (
        f'name: {graph}\nversion: "1.0.0"\ntriggers: [{{type: manual}}]\n'
        f"graph:\n  - id: only\n    transform: {transform}\n    inputs: {inputs}\n"
    )
    r = await http.post("/graphs", json={"graph": text}, headers=manage(running))
    assert r.status_code == 201, r.text
    r = await asyncio.wait_for(
        http.post(
            f"/graphs/{graph}/runs",
            json={"input": {}},
            headers=token(running, f"execute_graph:{graph}"),
        ),
        within,
    )
    return dict(r.json())


def error_kind(reply: dict[str, Any]) -> str:
    """The typed error's kind of a failed run's reply."""
    text = json.dumps(reply)
    assert reply.get("status") != "succeeded", text
    steps = reply.get("steps") or []
    for step in steps:
        error = step.get("error")
        if isinstance(error, dict) and error.get("kind"):
            return str(error["kind"])
    error = reply.get("error")
    if isinstance(error, dict):
        return str(error.get("kind"))
    raise AssertionError(f"no typed error in {text}")


def error_text(reply: dict[str, Any]) -> str:
    return json.dumps(reply)


# --- no thread left spinning -------------------------------------------------


def _thread_cpu_ticks() -> dict[str, int]:
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[task.name] = int(fields[11]) + int(fields[12])  # utime + stime
    return out


def no_thread_spins(within: float = 20.0, window: float = 0.5) -> bool:
    """Whether, within ``within`` seconds, a ``window`` passes in which no thread
    of this process used more than half of it on a CPU (a spinning guest uses all
    of it, forever)."""
    hz = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = _thread_cpu_ticks()
        time.sleep(window)  # the measuring window, not a synchronisation
        after = _thread_cpu_ticks()
        busiest = max((after[t] - before.get(t, 0) for t in after), default=0)
        if busiest / hz < window / 2:
            return True
    return False


# --- the attacks ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["looping-start", "looping-initialize"])
async def test_extism_initialiser_that_loops_is_stopped(
    running: RunningHost, http: httpx.AsyncClient, name: str
) -> None:
    # Fuel at its ceiling, a short deadline: whichever ends first, the call ends.
    r = await publish(running, http, name, EXTISM[name], abi="extism", limits={"timeout_ms": 200})
    assert r.status_code == 201, r.text
    reply = await run_alone(running, http, name)
    assert error_kind(reply) in {"deadline_exceeded", "fuel_exhausted"}, error_text(reply)
    assert await asyncio.to_thread(no_thread_spins)
    await still_serves(running, http)


@pytest.mark.parametrize(
    ("name", "limits", "kind", "says"),
    [
        ("endless-loop", {"fuel": 1_000_000, "timeout_ms": 60_000}, "fuel_exhausted", "1000000"),
        ("deep-recursion", {}, "stack_overflow", "recursing in"),
        ("memory-bomb", {"memory_bytes": 4 * MiB}, "memory_limit", "4194304-byte limit"),
        ("huge-output", {"max_output_bytes": 1000}, "output_too_large", "1000-byte limit"),
        ("trap", {}, "trap", "trapped in"),
    ],
)
async def test_extism_attacks_are_typed(
    running: RunningHost,
    http: httpx.AsyncClient,
    name: str,
    limits: dict[str, int],
    kind: str,
    says: str,
) -> None:
    r = await publish(running, http, f"x-{name}", EXTISM[name], abi="extism", limits=limits)
    assert r.status_code == 201, r.text
    reply = await run_alone(running, http, f"x-{name}")
    assert error_kind(reply) == kind, error_text(reply)
    assert says in error_text(reply)
    await still_serves(running, http)


@pytest.mark.parametrize(
    ("name", "path", "limits", "kind"),
    [
        ("spin", "spin", {"fuel": 2_000_000, "timeout_ms": 60_000}, "fuel_exhausted"),
        ("grow-memory", "grow-memory", {"memory_bytes": 4 * MiB}, "memory_limit"),
        ("deep-recursion", "deep-recursion", {}, "stack_overflow"),
        ("trap", "trap", {}, "trap"),
        ("huge-output", "huge-output", {"max_output_bytes": 1000}, "output_too_large"),
        ("bad-pointer", None, {}, "trap"),
        ("invalid-utf8", None, {}, "trap"),
        ("lying-realloc", None, {}, "trap"),
        ("grow-then-trap", None, {"memory_bytes": 4 * MiB}, "memory_limit"),
    ],
)
async def test_component_attacks_stay_contained(
    running: RunningHost,
    http: httpx.AsyncClient,
    name: str,
    path: str | None,
    limits: dict[str, int],
    kind: str,
) -> None:
    data = (TESTING / f"{path}.wasm").read_bytes() if path else COMPONENTS[name]
    r = await publish(running, http, f"c-{name}", data, limits=limits)
    assert r.status_code == 201, r.text
    inputs = "{bytes: 5000}" if name == "huge-output" else "{}"
    reply = await run_alone(running, http, f"c-{name}", inputs)
    assert error_kind(reply) == kind, error_text(reply)
    if kind == "memory_limit":
        assert "4194304-byte limit" in error_text(reply)
    await still_serves(running, http)


async def test_bad_publisher_signature_is_refused(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    data = (TESTING / "echo.wasm").read_bytes()
    cid = cid_for_bytes(data)
    key = Ed25519PrivateKey.generate()
    publisher = ionwall.encode_public_key(key.public_key())
    forged = {"key": publisher, "signature": ionwall.sign_cid(key, cid + "x")}
    r = await publish(running, http, "forged", data, publisher=forged)
    assert r.status_code == 400, r.text
    assert r.json()["detail"]["kind"] == "invalid_publisher_signature", r.text
    assert r.json()["detail"]["publisher"] == publisher
    garbage = {"key": publisher, "signature": "!!not-base64"}
    r = await publish(running, http, "forged", data, publisher=garbage)
    assert r.json()["detail"]["kind"] == "invalid_publisher_signature", r.text
    assert "forged" not in {t.name for t in running.host.registry.list()}
    # Signed correctly it publishes; unsigned it publishes too.
    signed = {"key": publisher, "signature": ionwall.sign_cid(key, cid)}
    assert (await publish(running, http, "signed", data, publisher=signed)).status_code == 201
    assert (await publish(running, http, "unsigned", data)).status_code == 201
    await still_serves(running, http)


# --- peak memory of a refused huge output (in a child process: a clean RSS) ----

_RSS_CHILD = """
import sys, tempfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from conftest import make_config
from ionflux import OutputTooLarge
from ionflux.host import Host
from ionflux.manifest import Manifest
from ionflux.store import cid_for_bytes

def status(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) * 1024

data = Path(sys.argv[2]).read_bytes()
host = Host(make_config(Path(tempfile.mkdtemp())))
manifest = Manifest.model_validate({"name": "big", "version": "0.1.0", "abi": sys.argv[3],
    "module": {"cid": cid_for_bytes(data)}, "limits": {"memory_bytes": 128 * 2**20}})
host.publish_bytes(manifest, data)
for _ in range(2):  # the second call finds everything compiled and warm
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current RSS
    before = status("VmRSS")
    try:
        host.invoke("big", {})
        print("no error")
    except OutputTooLarge:
        pass
print(status("VmHWM") - before)
"""


@pytest.mark.parametrize("abi", ["component", "extism"])
def test_a_refused_huge_output_is_not_copied_whole(tmp_path: Path, abi: str) -> None:
    """48 MiB of output past a 4 MiB limit: the size is checked before the
    output is copied into Python (bytes, then str, then its UTF-8 encoding)."""
    if abi == "extism":
        data = EXTISM["huge-output"]
    else:
        # Returns 48 MiB of untouched (zero) pages: the guest's own memory costs
        # no RSS, so what grows is the host's copies.
        data = component(
            "(drop (memory.grow (i32.const 800)))" + _RETURN.format(ptr=65536, len=48 * MiB)
        )
    module = tmp_path / "big.wasm"
    module.write_bytes(data)
    tests = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(tests), str(module), abi],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.strip()
    grown = int(out.splitlines()[-1])
    # Components: wasmtime's own lift still makes two copies (a Rust String,
    # then the C API's byte vector; its C API cannot refuse a string before
    # lifting it), the three Python copies are gone (144 MiB before, 96 after).
    # Extism: the output is not copied at all (48 MiB before).
    limit = {"component": 120 * MiB, "extism": 24 * MiB}[abi]
    assert grown < limit, f"peak RSS grew {grown / MiB:.0f} MiB"


# --- `ionflux up`: a looping start function, then SIGTERM ------------------------


async def test_up_stops_on_sigterm_after_a_looping_extism_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    drain_s = 10
    up = UpProcess(data_dir, extra=["--drain-timeout", str(drain_s)]).start()
    try:
        with ionwall.Ionwall(data_dir / "ionwall") as wall:
            bearer = wall.issue_token(["manage_agent_lifecycle:*", "execute_graph:*"]).token
        auth = {"Authorization": f"Bearer {bearer}"}
        async with httpx.AsyncClient(base_url=up.url, timeout=60) as client:
            plugin = EXTISM["looping-start"]
            manifest = {
                "name": "looping-start",
                "version": "0.1.0",
                "abi": "extism",
                "module": {"cid": cid_for_bytes(plugin)},
                "limits": {"timeout_ms": 300},
            }
            r = await client.post(
                "/transforms",
                json={"manifest": manifest, "module_base64": base64.b64encode(plugin).decode()},
                headers=auth,
            )
            assert r.status_code == 201, r.text
            graph = (
                'name: looper\nversion: "1.0.0"\ntriggers: [{type: manual}]\n'
                "graph:\n  - id: only\n    transform: looping-start\n    inputs: {}\n"
            )
            r = await client.post("/graphs", json={"graph": graph}, headers=auth)
            assert r.status_code == 201, r.text
            reply = (await client.post("/graphs/looper/runs", json={}, headers=auth)).json()
            assert error_kind(reply) in {"deadline_exceeded", "fuel_exhausted"}, reply
            # One more in flight when the signal comes: the drain waits for it.
            r = await client.post(
                "/graphs/looper/runs", json={}, headers={**auth, "Prefer": "respond-async"}
            )
            assert r.status_code == 202, r.text
        assert up.proc is not None
        up.proc.send_signal(signal.SIGTERM)
        try:
            code = up.proc.wait(drain_s + 20)
        except subprocess.TimeoutExpired:
            pytest.fail("ionflux up did not stop on SIGTERM")
        assert code == 0, up.log.read_text()[-2000:]
    finally:
        up.kill()
