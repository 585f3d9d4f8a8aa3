"""The native call path (runtime/_native.py, native/): which engine runs what,
and what only it has to get right. The sandbox and import suites
(test_runtime_sandbox.py, test_runtime_imports.py, tests/security) run on it
too: it is the default engine, they are its contract.

Here: a component of the world runs natively and one importing outside the
world does not; the compile cache keeps native code per CID, keyed by the
engine; calls past the pool's slots wait for one; an exception escaping an
import's Python traps the guest (typed, the slot given back, the host serving
on); a gate that raises denies."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ionflux as e
import pytest
from conftest import GuestPublisher, make_config
from ionflux.config import Config
from ionflux.host import Host
from ionflux.runtime import _native

from ionwall import AllowAllGate, CallContext, Decision

needs_native = pytest.mark.skipif(
    not _native.available(), reason=f"native extension not built: {_native.missing_reason()}"
)


def native_config(data_dir: Path, **limits: Any) -> Config:
    config = make_config(data_dir, **limits)
    return config.model_copy(
        update={"runtime": config.runtime.model_copy(update={"engine": "native"})}
    )


@pytest.fixture
def native_host(tmp_path: Path, built: Path) -> Iterator[Host]:
    h = Host(native_config(tmp_path / "data"))
    yield h
    h.close()


@needs_native
def test_world_components_run_natively_others_on_wasmtime_py(
    tmp_path: Path, native_host: Host, publish_guest: GuestPublisher
) -> None:
    assert native_host.runtime.engine_name == "native"
    publish_guest(native_host, "echo")
    assert native_host.prepare("echo").loaded.run is None  # type: ignore[union-attr]
    assert native_host.invoke("echo", {"a": 1}).value == {"a": 1}
    # Outside the world: refused by the same check as before (wasmtime-py's).
    with pytest.raises(e.ImportOutsideWorld):
        publish_guest(native_host, "outside-world")
    # runtime.engine: wasmtime runs the same component on wasmtime-py.
    config = native_config(tmp_path / "py")
    config = config.model_copy(
        update={"runtime": config.runtime.model_copy(update={"engine": "wasmtime"})}
    )
    py_host = Host(config)
    try:
        publish_guest(py_host, "echo")
        assert py_host.runtime.engine_name == "wasmtime"
        assert py_host.prepare("echo").loaded.run is not None  # type: ignore[union-attr]
        assert py_host.invoke("echo", {"a": 1}).value == {"a": 1}
    finally:
        py_host.close()


@needs_native
def test_compiled_code_is_cached_per_cid_under_the_engines_fingerprint(
    tmp_path: Path, built: Path, publish_guest: GuestPublisher
) -> None:
    data = tmp_path / "data"
    first = Host(native_config(data))
    try:
        cid = publish_guest(first, "echo").cid
    finally:
        first.close()
    fingerprint = _native.fingerprint(
        first.config.limits.max_wasm_stack_bytes,
        first.config.limits.memory_bytes * first.config.limits.ceiling_factor,
    )
    artifact = data / "cache" / "compiled" / fingerprint / f"{cid}.cwasm"
    assert artifact.stat().st_size > 0
    # A damaged artifact is dropped and the module compiled again from its bytes.
    artifact.write_bytes(b"not native code")
    second = Host(native_config(data))
    try:
        assert second.invoke("echo", {"b": 2}).value == {"b": 2}
        assert artifact.read_bytes() != b"not native code"
    finally:
        second.close()


@needs_native
def test_calls_past_the_pools_slots_wait_for_one(
    tmp_path: Path, built: Path, publish_guest: GuestPublisher
) -> None:
    h = Host(native_config(tmp_path / "data", sandboxes=1, fuel=10**13, timeout_ms=500))
    try:
        publish_guest(h, "spin")
        publish_guest(h, "echo")
        outcomes: dict[str, Any] = {}

        def call(name: str, value: Any) -> None:
            try:
                outcomes[name] = h.invoke(name, value).value
            except BaseException as exc:
                outcomes[name] = exc

        spinning = threading.Thread(target=call, args=("spin", {}))
        spinning.start()
        wait_until(h.runtime._ticker.ticking)  # the one slot is taken
        waiting = threading.Thread(target=call, args=("echo", {"c": 3}))
        waiting.start()
        # The second call waits on the slots (it has not failed for want of a slot).
        wait_until(lambda: _waits_on_slots(waiting))
        assert "echo" not in outcomes
        spinning.join(60)
        waiting.join(60)
        assert isinstance(outcomes["spin"], e.DeadlineExceeded)
        assert outcomes["echo"] == {"c": 3}
    finally:
        h.close()


def _waits_on_slots(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "acquire" and "threading" in frame.f_code.co_filename:
            caller = frame.f_back
            return caller is not None and caller.f_code.co_name == "_call_native"
        frame = frame.f_back
    return False


class _Escape(BaseException):
    """Not an ``Exception``: passes through every ``except Exception`` of the
    import path, as a bug or an interrupt would, out of the Python callback."""


class _EscapingGate:
    def check(self, ctx: CallContext, scope: str) -> Decision:
        raise _Escape("escaped the import")


class _RaisingGate:
    def check(self, ctx: CallContext, scope: str) -> Decision:
        raise RuntimeError("the audit disk is gone")


@needs_native
def test_an_exception_escaping_an_import_traps_the_guest(
    tmp_path: Path, built: Path, publish_guest: GuestPublisher
) -> None:
    h = Host(native_config(tmp_path / "data", sandboxes=1))
    try:
        publish_guest(h, "all-imports")
        call = {"call": "log", "level": "info", "message": "hi"}
        with pytest.raises(e.GuestTrap, match="host import raised") as info:
            h.invoke("all-imports", call, gate=_EscapingGate())  # type: ignore[arg-type]
        assert info.value.kind == "trap"
        # The one slot was given back, the thread's call is over: the next call runs.
        assert h.invoke("all-imports", call, gate=AllowAllGate()).value == {"ok": None}
    finally:
        h.close()


@needs_native
def test_a_gate_that_raises_denies(native_host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(native_host, "all-imports")
    call = {"call": "pod-put", "path": "notes/a.txt", "data": "x"}
    out = native_host.invoke("all-imports", call, gate=_RaisingGate()).value  # type: ignore[arg-type]
    assert out["error"]["case"] == "denied"
    assert "gate failed: the audit disk is gone" in out["error"]["message"]
    with pytest.raises(e.NotFound):
        native_host.pod.resolve("notes/a.txt")  # nothing was written


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Polls ``condition`` until it holds; the timeout only guards a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_up_workers_auto_is_one_process_per_core() -> None:
    # Threads do not scale sandbox calls, processes do: `ionflux up --workers auto`.
    import os

    import click
    from ionflux.cli._serve import _WORKERS

    assert _WORKERS.convert("auto", None, None) == min(64, len(os.sched_getaffinity(0)))
    assert _WORKERS.convert("3", None, None) == 3
    for bad in ("0", "65", "many"):
        with pytest.raises(click.BadParameter):
            _WORKERS.convert(bad, None, None)
