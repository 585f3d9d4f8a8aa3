"""Which wasi:* imports a component may have (runtime/_world.WASI_ALLOWED): the
WASI 0.2 interfaces componentize-py's CPython needs, at any 0.2.x version, and
nothing else. What a guest can do with the allowed ones is in
tests/test_guest_conformance.py (no files, environment, sockets or sleeping)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import ionflux as e
import pytest
from conftest import REPO, GuestPublisher
from ionflux.host import Host
from ionflux.runtime import WASI_ALLOWED, wasi_allowed

WASM_TOOLS = REPO / ".venv" / "bin" / "wasm-tools"
MODULE = REPO / "tests" / "fixtures" / "outside-world" / "module.wat"


@pytest.mark.parametrize(
    "name",
    [
        "wasi:io/streams@0.2.0",
        "wasi:cli/environment@0.2.9",
        "wasi:clocks/monotonic-clock@0.2.3",
        "wasi:sockets/tcp@0.2.9",
    ],
)
def test_allowed(name: str) -> None:
    assert wasi_allowed(name)


@pytest.mark.parametrize(
    "name",
    [
        "wasi:http/outgoing-handler@0.2.0",  # outbound HTTP only through the gated import
        "wasi:keyvalue/store@0.2.0",
        "wasi:cli/environment@0.3.0",  # another major version: other semantics
        "wasi:cli/environment",  # no version
        "wasi:cli/environment@0.2",
        "wasi:filesystem/types@0.2.0-rc-2023-11-10",
    ],
)
def test_refused(name: str) -> None:
    assert not wasi_allowed(name)


def test_the_allow_list_is_wasi_0_2_only() -> None:
    assert all(n.startswith("wasi:") and "@" not in n for n in WASI_ALLOWED)
    assert not any(n.startswith(("wasi:http/", "wasi:keyvalue/")) for n in WASI_ALLOWED)


def _component(tmp_path: Path, package: str, interface: str) -> Path:
    """A component whose `run` returns `<package>/<interface>.get(input)`."""
    wit = tmp_path / "wit"
    wit.mkdir()
    (wit / "w.wit").write_text(
        f"""package {package};
interface types {{
  variant error {{ denied(string), not-found(string), invalid(string),
                  too-large(string), unavailable(string), failed(string) }}
}}
interface {interface} {{
  use types.{{error}};
  get: func(name: string) -> result<string, error>;
}}
world w {{
  use types.{{error}};
  import {interface};
  export run: func(input: string) -> result<string, error>;
}}
"""
    )
    name, _, version = package.partition("@")
    wat = MODULE.read_text().replace(
        '"ionflux:transform/secrets@0.1.0"', f'"{name}/{interface}@{version}"'
    )
    (tmp_path / "m.wat").write_text(wat)
    run = lambda *argv: subprocess.run([str(WASM_TOOLS), *argv], check=True, cwd=tmp_path)  # noqa: E731
    run("parse", "m.wat", "-o", "m.wasm")
    run("component", "embed", "wit", "--world", "w", "m.wasm", "-o", "e.wasm")
    run("component", "new", "e.wasm", "-o", "c.wasm")
    return tmp_path / "c.wasm"


@pytest.mark.parametrize(
    ("package", "interface"),
    [("wasi:keyvalue@0.2.0", "store"), ("wasi:cli@0.3.0", "environment")],
)
def test_a_wasi_import_off_the_list_is_refused_at_publish(
    host: Host, publish_guest: GuestPublisher, tmp_path: Path, package: str, interface: str
) -> None:
    path = _component(tmp_path, package, interface)
    name, _, version = package.partition("@")
    with pytest.raises(e.ImportOutsideWorld) as refused:
        publish_guest(host, "wasi-outside", path=path)
    assert f"{name}/{interface}@{version}" in refused.value.imports
    with pytest.raises(e.UnknownTransform):
        host.invoke("wasi-outside", "{}")


SOCKETS = REPO / "tests" / "fixtures" / "wasi-sockets"


def _socket_component(tmp_path: Path) -> Path:
    run = lambda *argv: subprocess.run([str(WASM_TOOLS), *argv], check=True, cwd=tmp_path)  # noqa: E731
    run("parse", str(SOCKETS / "module.wat"), "-o", "m.wasm")
    run("component", "embed", str(SOCKETS / "wit"), "--world", "w", "m.wasm", "-o", "e.wasm")
    run("component", "new", "e.wasm", "-o", "c.wasm")
    return tmp_path / "c.wasm"


def test_wasmtimes_default_wasi_already_refuses_a_socket(tmp_path: Path) -> None:
    """What wasmtime gives with an empty WasiConfig: create-tcp-socket answers an
    error (no network). The host refuses it harder (next test)."""
    import wasmtime
    from wasmtime.component import Component, Linker

    engine = wasmtime.Engine(wasmtime.Config())
    component = Component(engine, _socket_component(tmp_path).read_bytes())
    linker = Linker(engine)
    linker.add_wasip2()
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    run = linker.instantiate(store, component).get_func(store, "run")
    assert run is not None
    assert run(store, "") == "refused"


def test_a_guest_asking_for_a_socket_traps(
    host: Host, publish_guest: GuestPublisher, tmp_path: Path
) -> None:
    publish_guest(host, "wants-a-socket", path=_socket_component(tmp_path))
    with pytest.raises(e.WasiRefused, match="socket"):
        host.invoke("wants-a-socket", "{}")
    assert host.invoke("uppercase", {"text": "still serving"}).value == {"text": "STILL SERVING"}
