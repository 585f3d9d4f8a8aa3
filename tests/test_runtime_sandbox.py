"""The sandbox against hostile and broken guests: each failure is typed, and the
same host process serves a normal call correctly right after."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import ionflux as e
import pytest
from conftest import TESTING, GuestPublisher, make_config
from ionflux.host import Host
from ionflux.manifest import Manifest, ModuleRef


def still_serves(host: Host) -> None:
    result = host.invoke("uppercase", {"text": "still here"})
    assert result.value == {"text": "STILL HERE"}


def test_standard_transforms_run(host: Host) -> None:
    assert host.invoke("uppercase", '{"text": "héllo wörld"}').value == {"text": "HÉLLO WÖRLD"}
    stats = host.invoke("text-stats", {"text": "one two\nthree"}).value
    assert stats["words"] == 3 and stats["lines"] == 2
    found = host.invoke("json-path", {"data": {"a": [{"b": 1}, {"b": 42}]}, "path": "a[1].b"})
    assert found.value == {"value": 42}


def test_each_call_is_a_fresh_sandbox(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "echo")
    first = host.invoke("echo", {"n": 1})
    second = host.invoke("echo", {"n": 2})
    assert (first.value, second.value) == ({"n": 1}, {"n": 2})
    assert first.fuel_used > 0 and first.fuel_used == second.fuel_used


def test_module_bytes_not_matching_cid_refused(host: Host, built: Path) -> None:
    data = (TESTING / "echo.wasm").read_bytes()
    other = (TESTING / "trap.wasm").read_bytes()
    from ionflux.store import cid_for_bytes

    manifest = Manifest(
        name="liar", version="0.1.0", abi="component", module=ModuleRef(cid=cid_for_bytes(other))
    )
    with pytest.raises(e.CidMismatch) as info:
        host.publish_bytes(manifest, data)
    assert info.value.expected == cid_for_bytes(other)
    assert info.value.actual == cid_for_bytes(data)
    with pytest.raises(e.UnknownTransform):
        host.invoke("liar", {})
    still_serves(host)


def test_not_wasm_refused(host: Host) -> None:
    from ionflux.store import cid_for_bytes

    data = b'{"this": "is json, not wasm"}'
    manifest = Manifest(
        name="notwasm", version="0.1.0", abi="component", module=ModuleRef(cid=cid_for_bytes(data))
    )
    with pytest.raises(e.NotWasm, match="not a WebAssembly binary"):
        host.publish_bytes(manifest, data)
    still_serves(host)


def test_import_outside_world_refused(host: Host, publish_guest: GuestPublisher) -> None:
    with pytest.raises(e.ImportOutsideWorld) as info:
        publish_guest(host, "outside-world")
    assert info.value.imports and all(
        "ionflux:transform/" not in i or "secrets" in i for i in info.value.imports
    )
    with pytest.raises(e.UnknownTransform):
        host.invoke("outside-world", {})
    still_serves(host)


def test_spin_runs_out_of_fuel(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "spin", limits={"fuel": 2_000_000, "timeout_ms": 60_000})
    with pytest.raises(e.FuelExhausted, match="2000000"):
        host.invoke("spin", {})
    still_serves(host)


def test_spin_hits_wall_clock(tmp_path: Path, built: Path, publish_guest: GuestPublisher) -> None:
    # Fuel so large that only the deadline can stop it.
    h = Host(make_config(tmp_path, fuel=10**15, timeout_ms=200, ceiling_factor=1))
    try:
        h.publish(Path(__file__).parents[1] / "manifests" / "uppercase.yaml")
        publish_guest(h, "spin")
        # Only the deadline can end this call: it returns (pytest's timeout guards a
        # hang) with the typed error naming the limit that stopped it.
        with pytest.raises(e.DeadlineExceeded, match="ran past its 200 ms time limit") as info:
            h.invoke("spin", {})
        assert info.value.kind == "deadline_exceeded"
        still_serves(h)
    finally:
        h.close()


def test_guest_code_runs_without_the_gil(
    tmp_path: Path, built: Path, publish_guest: GuestPublisher
) -> None:
    # The short wasmtime calls keep the GIL (runtime/_gil.py); running guest code
    # must not: while a guest spins, Python on another thread goes on, and the
    # epoch ticker (a Python thread) still stops the guest at its deadline.
    import ctypes
    import threading

    from ionflux.runtime._gil import SHORT_CALLS, keep_gil_for_short_calls
    from wasmtime import _bindings

    assert keep_gil_for_short_calls() == list(SHORT_CALLS)
    for name in SHORT_CALLS:
        assert getattr(_bindings, "_" + name)._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]
    for name in ("wasmtime_component_func_call", "wasmtime_component_linker_instantiate"):
        assert not getattr(_bindings, "_" + name)._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]

    h = Host(make_config(tmp_path, fuel=10**15, timeout_ms=1000, ceiling_factor=1))
    try:
        publish_guest(h, "spin")
        errors: list[BaseException] = []

        def spin() -> None:
            try:
                h.invoke("spin", {})
            except BaseException as exc:
                errors.append(exc)

        in_flight = h.runtime._ticker.ticking  # true from just before the guest starts
        worker = threading.Thread(target=spin)
        worker.start()
        wait_until(in_flight)
        # Python on this thread takes turns while the call is in flight: each turn
        # checks the call has not ended. A guest holding the GIL would never give
        # it back (native code does not yield it): this loop and the ticker would
        # stop, and the test would hang to its timeout. The window is the guest's
        # own 1 s deadline; the turns need a few ms of CPU, even on a busy machine.
        counted = 0
        while counted < 10_000 and in_flight():
            counted += 1
        assert counted == 10_000, f"the call ended after {counted} turns of Python"
        worker.join(30)
        assert not worker.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], e.DeadlineExceeded)
    finally:
        h.close()


def test_memory_limit(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "grow-memory", limits={"memory_bytes": 4 * 1024 * 1024})
    with pytest.raises(e.MemoryLimitExceeded, match="4194304"):
        host.invoke("grow-memory", {})
    still_serves(host)


def test_stack_overflow(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "deep-recursion")
    with pytest.raises(e.StackOverflow):
        host.invoke("deep-recursion", {})
    still_serves(host)


def test_trap(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "trap")
    with pytest.raises(e.GuestTrap, match="trapped"):
        host.invoke("trap", {})
    still_serves(host)


def test_output_too_large(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "huge-output", limits={"max_output_bytes": 1000})
    assert len(host.invoke("huge-output", {"bytes": 500}).output) >= 500
    with pytest.raises(e.OutputTooLarge, match="1000-byte limit"):
        host.invoke("huge-output", {"bytes": 5000})
    still_serves(host)


def test_output_not_json(host: Host, publish_guest: GuestPublisher) -> None:
    publish_guest(host, "bad-output")
    with pytest.raises(e.InvalidOutput, match="not JSON"):
        host.invoke("bad-output", {})
    still_serves(host)


def test_input_not_json(host: Host) -> None:
    with pytest.raises(e.InvalidInput, match="not JSON"):
        host.invoke("uppercase", "{not json")
    still_serves(host)


def test_input_violating_manifest_schema(host: Host) -> None:
    with pytest.raises(e.InvalidInput, match="text"):
        host.invoke("uppercase", {"txt": "typo"})
    still_serves(host)


def test_input_too_large(tmp_path: Path, built: Path, publish_guest: GuestPublisher) -> None:
    h = Host(make_config(tmp_path, max_input_bytes=100))
    try:
        publish_guest(h, "echo")
        with pytest.raises(e.InvalidInput, match="100-byte limit"):
            h.invoke("echo", {"x": "y" * 200})
        assert h.invoke("echo", {"x": 1}).value == {"x": 1}
    finally:
        h.close()


def test_guest_error_is_typed(host: Host) -> None:
    with pytest.raises(e.TransformFailed) as info:
        host.invoke("json-path", {"data": {}, "path": "a["})
    assert info.value.case == "invalid"
    still_serves(host)


def test_unknown_transform(host: Host) -> None:
    with pytest.raises(e.UnknownTransform, match="nope"):
        host.invoke("nope", {})


def test_compile_cache_survives_restart(config_dir: Path, built: Path) -> None:
    manifest = Path(__file__).parents[1] / "manifests" / "uppercase.yaml"
    first = Host(make_config(config_dir))
    published = first.publish(manifest)
    first.invoke("uppercase", {"text": "a"})
    first.close()
    cached = list((config_dir / "cache" / "compiled").rglob(f"{published.cid}.cwasm"))
    assert len(cached) == 1
    second = Host(make_config(config_dir))
    try:
        assert not second.runtime.cache.in_memory(published.cid)
        assert second.invoke("uppercase", {"text": "b"}).value == {"text": "B"}
    finally:
        second.close()


def test_damaged_compile_cache_is_recompiled(config_dir: Path, built: Path) -> None:
    manifest = Path(__file__).parents[1] / "manifests" / "uppercase.yaml"
    first = Host(make_config(config_dir))
    published = first.publish(manifest)
    first.invoke("uppercase", {"text": "a"})
    first.close()
    (artifact,) = (config_dir / "cache" / "compiled").rglob(f"{published.cid}.cwasm")
    artifact.write_bytes(b"garbage")
    second = Host(make_config(config_dir))
    try:
        assert second.invoke("uppercase", {"text": "b"}).value == {"text": "B"}
    finally:
        second.close()


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_manifest_missing_field_names_it(tmp_path: Path, host: Host) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 0.1.0\nabi: component\n")
    with pytest.raises(e.ManifestError, match="module: field required"):
        host.publish(bad)
    still_serves(host)


def test_manifest_bad_scope_names_field(tmp_path: Path, host: Host) -> None:
    text = (Path(__file__).parents[1] / "manifests" / "uppercase.yaml").read_text()
    data = __import__("yaml").safe_load(text)
    data["version"] = "9.9.9"
    data["scopes"] = ["no-colon-here"]
    data["module"]["path"] = str(Path(__file__).parents[1] / "build/transforms/uppercase.wasm")
    bad = tmp_path / "scoped.yaml"
    bad.write_text(json.dumps(data))
    with pytest.raises(e.ManifestError, match=r"scopes\.0"):
        host.publish(bad)


def test_a_published_version_keeps_its_manifest(
    config_dir: Path, built: Path, publish_guest: GuestPublisher
) -> None:
    # The same module under the same name@version with other scopes or limits
    # would change what that version means; it is refused, from this process or
    # another one. Publishing the identical manifest again changes nothing.
    first = Host(make_config(config_dir))
    other = Host(make_config(config_dir))  # stands for `ionflux publish` in another process
    try:
        published = publish_guest(first, "echo", scopes=["emit_log:*"])
        again = publish_guest(other, "echo", scopes=["emit_log:*"])
        assert again.published_at == published.published_at
        with pytest.raises(e.ManifestError, match=r"another manifest \(limits, scopes differ\)"):
            publish_guest(other, "echo", scopes=["emit_log:*", "http_fetch:*"], limits={"fuel": 5})
        with pytest.raises(e.ManifestError, match=r"another manifest \(scopes differ\)"):
            publish_guest(first, "echo", scopes=[])
        assert first.registry.get("echo@0.1.0").scopes == ["emit_log:*"]
        assert other.registry.get("echo").scopes == ["emit_log:*"]
        assert publish_guest(first, "echo", scopes=[], version="0.2.0").scopes == []
    finally:
        other.close()
        first.close()


def test_module_tampered_in_store_is_refused_at_load(config_dir: Path, built: Path) -> None:
    manifest = Path(__file__).parents[1] / "manifests" / "uppercase.yaml"
    first = Host(make_config(config_dir))
    published = first.publish(manifest)
    first.close()
    (block,) = [p for p in config_dir.rglob(published.cid) if p.is_file() and "blocks" in p.parts]
    data = bytearray(block.read_bytes())
    data[len(data) // 2] ^= 0xFF
    block.write_bytes(bytes(data))
    # A fresh host has neither the compiled module in memory nor on disk.
    for artifact in (config_dir / "cache").rglob("*.cwasm"):
        artifact.unlink()
    second = Host(make_config(config_dir))
    try:
        with pytest.raises(e.CidMismatch, match=published.cid):
            second.invoke("uppercase", {"text": "x"})
    finally:
        second.close()


def test_a_name_runs_the_version_published_by_another_process(
    config_dir: Path, built: Path, publish_guest: GuestPublisher
) -> None:
    serving = Host(make_config(config_dir))
    other = Host(make_config(config_dir))  # stands for `ionflux publish` in another process
    try:
        publish_guest(serving, "flip", path=TESTING / "echo.wasm", version="0.1.0")
        assert serving.invoke("flip", {"text": "a"}).value == {"text": "a"}
        publish_guest(other, "flip", path=TESTING.parent / "uppercase.wasm", version="0.2.0")
        assert serving.invoke("flip", {"text": "a"}).value == {"text": "A"}
        assert serving.invoke("flip@0.1.0", {"text": "a"}).value == {"text": "a"}
    finally:
        other.close()
        serving.close()


def test_the_epoch_ticks_only_while_a_call_is_in_flight() -> None:
    # A stand-in for the engine counts the ticks (wasmtime does not say which
    # epoch it is at); the deadline tests above use the real one.
    from ionflux.runtime._engine import EpochTicker

    class Engine:
        ticks = 0

        def increment_epoch(self) -> None:
            Engine.ticks += 1

    ticker = EpochTicker(Engine())  # type: ignore[arg-type]
    try:
        ticker.enter()
        wait_until(lambda: Engine.ticks >= 3)  # it ticks while the call runs
        ticker.leave()
        assert not ticker.ticking()
        # Idle: the ticker thread parks in an untimed wait on its condition (no
        # wake-ups), and no tick lands while it is parked. A tick already under
        # way when the call left may still land before it parks.
        wait_until(lambda: _parked_untimed(ticker))
        idle_from = Engine.ticks
        assert _parked_untimed(ticker) and Engine.ticks == idle_from
        # Two overlapping calls: it ticks until the last one leaves.
        ticker.enter()
        ticker.enter()
        ticker.leave()
        busy_from = Engine.ticks
        wait_until(lambda: Engine.ticks > busy_from)
        assert ticker.ticking()
        ticker.leave()
        wait_until(lambda: _parked_untimed(ticker))
    finally:
        ticker.stop()


def _parked_untimed(ticker: object) -> bool:
    """Whether the ticker's thread is in ``Condition.wait()`` without a timeout,
    called straight from its loop (the idle wait; a tick's pause is a timed
    ``Event.wait``). Read from the thread's live frames."""
    thread = getattr(ticker, "_thread", None)
    if thread is None or thread.ident is None:
        return False
    frame = sys._current_frames().get(thread.ident)
    while frame is not None and frame.f_back is not None:
        caller = frame.f_back
        if caller.f_code.co_name == "_run":
            return frame.f_code.co_name == "wait" and frame.f_locals.get("timeout", 0) is None
        frame = caller
    return False


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Polls ``condition`` until it holds; the timeout only guards a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


# --- Extism plugins: initialisers, fuel and what each failure is called --------------

_EXTISM_IMPORTS = """
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "error_set" (func $error_set (param i64)))
"""
# `$say` puts the bytes of its i64 argument (little-endian, up to 8, stopping at a
# zero) in a fresh Extism block and returns the block's offset and length.
_EXTISM_HELPERS = """
  (func $say (param $text i64) (result i64 i64) (local $p i64) (local $n i64)
    (local.set $p (call $alloc (i64.const 8)))
    (block $done (loop $next
      (br_if $done (i64.eqz (local.get $text)))
      (call $store_u8 (i64.add (local.get $p) (local.get $n)) (i32.wrap_i64 (local.get $text)))
      (local.set $text (i64.shr_u (local.get $text) (i64.const 8)))
      (local.set $n (i64.add (local.get $n) (i64.const 1)))
      (br $next)))
    (local.get $p) (local.get $n))
  (func $ok (result i32)
    (call $output_set (call $say (i64.const 0x7d7b)))  ;; "{}"
    (i32.const 0))
"""


def _extism(body: str) -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(f"(module {_EXTISM_IMPORTS} {_EXTISM_HELPERS} {body})"))


def _publish_plugin(
    host: Host, name: str, data: bytes, limits: dict[str, int] | None = None
) -> None:
    from ionflux.store import cid_for_bytes

    manifest = Manifest.model_validate(
        {
            "name": name,
            "version": "0.1.0",
            "abi": "extism",
            "module": {"cid": cid_for_bytes(data)},
            "limits": limits or {},
        }
    )
    host.publish_bytes(manifest, data)


_SPIN = "(func $spin (loop $forever (br $forever)))"


@pytest.mark.parametrize(
    "body",
    [
        f'{_SPIN} (start $spin) (func (export "run") (result i32) (call $ok))',
        f'{_SPIN} (export "_initialize" (func $spin)) '
        '(func (export "run") (result i32) (call $ok))',
        f'{_SPIN} (export "__wasm_call_ctors" (func $spin)) '
        '(func (export "run") (result i32) (call $ok))',
    ],
    ids=["start", "_initialize", "__wasm_call_ctors"],
)
def test_extism_initialiser_runs_under_the_call_deadline(
    tmp_path: Path, built: Path, body: str
) -> None:
    # Fuel so large that only the deadline can stop it: Extism's own timer
    # starts after instantiation, so the initialisers are moved into `run`.
    h = Host(make_config(tmp_path, fuel=10**15, timeout_ms=300, ceiling_factor=1))
    try:
        h.publish(Path(__file__).parents[1] / "manifests" / "uppercase.yaml")
        _publish_plugin(h, "looper", _extism(body))
        with pytest.raises(e.DeadlineExceeded, match="300 ms"):
            h.invoke("looper", {})
        still_serves(h)
    finally:
        h.close()


def test_extism_initialisers_still_run_once_before_run(host: Host) -> None:
    # The start function, then `_initialize`, then `run`, as Extism ran them.
    plugin = _extism(
        "(global $step (mut i32) (i32.const 0))"
        "(func $start (if (i32.ne (global.get $step) (i32.const 0)) (then unreachable))"
        "  (global.set $step (i32.const 1)))"
        "(start $start)"
        '(func (export "_initialize") (if (i32.ne (global.get $step) (i32.const 1))'
        "  (then unreachable)) (global.set $step (i32.const 2)))"
        '(func (export "run") (result i32)'
        "  (if (i32.ne (global.get $step) (i32.const 2)) (then unreachable)) (call $ok))"
    )
    _publish_plugin(host, "ordered", plugin)
    assert host.invoke("ordered", {}).value == {}
    assert host.invoke("ordered", {}).value == {}  # a fresh instance each call


def test_extism_fuel_limit(host: Host) -> None:
    _publish_plugin(
        host,
        "burner",
        _extism(f'{_SPIN} (func (export "run") (result i32) (call $spin) (call $ok))'),
        {"fuel": 1_000_000, "timeout_ms": 60_000},
    )
    with pytest.raises(e.FuelExhausted, match="1000000 units"):
        host.invoke("burner", {})
    still_serves(host)


@pytest.mark.parametrize(
    ("body", "error", "says"),
    [
        (
            "(func $down (param i32) (call $down (i32.add (local.get 0) (i32.const 1))))"
            '(func (export "run") (result i32) (call $down (i32.const 0)) (call $ok))',
            e.StackOverflow,
            "call stack.*recursing in `down`",
        ),
        (
            '(func $boom unreachable) (func (export "run") (result i32) (call $boom) (call $ok))',
            e.GuestTrap,
            "trapped in `boom`",
        ),
        (
            '(memory 1) (func (export "run") (result i32)'
            " (drop (memory.grow (i32.const 60000))) (call $ok))",
            e.MemoryLimitExceeded,
            "67108864-byte limit.*memory.grow refused",
        ),
        (
            # error_set("pon") (the block's offset; its length dropped), then return 1
            '(func (export "run") (result i32)'
            " (call $say (i64.const 0x6e6f70)) drop call $error_set (i32.const 1))",
            e.TransformFailed,
            "failed: pon",
        ),
    ],
    ids=["stack-overflow", "trap", "memory", "plugin-error"],
)
def test_extism_failures_are_named(
    host: Host, body: str, error: type[Exception], says: str
) -> None:
    _publish_plugin(host, "failing", _extism(body))
    with pytest.raises(error, match=says) as info:
        host.invoke("failing", {})
    assert not str(info.value).rstrip().endswith(":")  # never an empty tail
    still_serves(host)


def test_extism_table_growth_is_capped(host: Host) -> None:
    # Extism bounds memories but not tables without a declared maximum; the
    # host declares one (limits.table_elements). Growing past it returns -1.
    plugin = _extism(
        '(table 1 funcref) (func (export "run") (result i32)'
        " (if (i32.ne (table.grow (ref.null func) (i32.const 200000000)) (i32.const -1))"
        "  (then unreachable)) (call $ok))"
    )
    _publish_plugin(host, "table-bomb", plugin)
    assert host.invoke("table-bomb", {}).value == {}


def test_extism_haskell_initialiser_is_refused_at_publish(host: Host) -> None:
    plugin = _extism('(func (export "hs_init")) (func (export "run") (result i32) (call $ok))')
    with pytest.raises(e.ModuleError, match="hs_init"):
        _publish_plugin(host, "haskell", plugin)


def test_bad_publisher_signature_is_refused_at_publish(host: Host) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from ionflux.store import cid_for_bytes

    import ionwall

    data = (TESTING / "echo.wasm").read_bytes()
    cid = cid_for_bytes(data)
    key = Ed25519PrivateKey.generate()
    public = ionwall.encode_public_key(key.public_key())

    def manifest(signature: str) -> Manifest:
        return Manifest.model_validate(
            {
                "name": "signed-echo",
                "version": "0.1.0",
                "abi": "component",
                "module": {"cid": cid},
                "publisher": {"key": public, "signature": signature},
            }
        )

    with pytest.raises(e.InvalidPublisherSignature, match=public) as info:
        host.publish_bytes(manifest(ionwall.sign_cid(key, "bafkrei-something-else")), data)
    assert info.value.to_dict()["publisher"] == public
    with pytest.raises(e.UnknownTransform):
        host.invoke("signed-echo", {})
    host.publish_bytes(manifest(ionwall.sign_cid(key, cid)), data)
    assert host.invoke("signed-echo", {"ok": 1}).value == {"ok": 1}


def test_closing_the_runtime_mid_call_still_ends_the_call_by_its_deadline(
    tmp_path: Path, built: Path, publish_guest: GuestPublisher
) -> None:
    """A host stopping at once closes its runtime while a guest may still spin on
    a worker thread: the epoch must go on advancing for that call, or nothing but
    fuel (here, hours of it) would ever stop it and the process could not exit."""
    import threading

    h = Host(make_config(tmp_path / "data", fuel=10**13, timeout_ms=300))
    try:
        publish_guest(h, "spin")
        failed: list[BaseException] = []

        def spin() -> None:
            try:
                h.invoke("spin", {})
            except BaseException as exc:
                failed.append(exc)

        caller = threading.Thread(target=spin)
        caller.start()
        deadline = time.monotonic() + 60
        while not h.runtime._ticker.ticking():  # the call is in flight
            assert time.monotonic() < deadline, "the call never started"
            time.sleep(0.001)
        h.runtime.close()
        caller.join(60)
        assert not caller.is_alive(), "the call went on after the runtime closed"
        assert [type(exc) for exc in failed] == [e.DeadlineExceeded]
    finally:
        h.close()
