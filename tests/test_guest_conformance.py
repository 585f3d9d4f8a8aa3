"""The guest conformance suite: one scenario (guests/conformance/README.md) in
Python, TypeScript, AssemblyScript, C and Rust, each built from source by the
project's own recipe (scripts/build_guests.sh, `ionflux build`; Rust by
scripts/build_transforms.sh), published by CID and run through a real host,
IONWALL gate, wasmtime and Extism: JSON in and out, every import allowed and
denied, a trap, a limit. Then what the WASI layer lets a Python guest see.

The builds are cached outside the clone by source hash, so only a changed
guest is rebuilt; the Python component's compiled code is cached the same way
(its first compile takes 15-50 s).
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ionflux as e
import pytest
from conftest import REPO, TESTING, make_config
from ionflux.config import EgressSettings
from ionflux.host import Host
from ionflux.manifest import Manifest
from ionflux.store import cid_for_bytes

from ionwall import AllowListGate

# The first test of a fresh machine builds the guests (componentize-py: 15-50 s)
# and compiles the Python component (15-50 s) in its fixture's setup.
pytestmark = pytest.mark.timeout(600)

LANGUAGES = ["python", "ts", "as", "c", "rust"]
EXTISM = {"as", "c"}
CONFIG = {"greeting": "hello"}
IMPORT_CALLS = ["log", "config", "pod-get", "pod-put", "bus", "http"]


@dataclass(frozen=True)
class Guests:
    host: Host
    port: int  # the loopback HTTP server the http import reaches

    def request(self, call: str) -> tuple[dict[str, Any], str]:
        """The input for ``call`` and the scope it resolves to."""
        return {
            "log": ({"level": "info", "message": "from the guest"}, "emit_log:info"),
            "config": ({"key": "greeting"}, "read_config:greeting"),
            "pod-get": (
                {"reference": "notes/conformance.txt"},
                "read_pod_data:notes/conformance.txt",
            ),
            "pod-put": (
                {"path": "notes/conformance.txt", "data": "written by a guest"},
                "write_pod_data:notes/conformance.txt",
            ),
            "bus": (
                {"subject": "ionflux.t.guests", "payload": "{}"},
                "publish_nats_topic:ionflux.t.guests",
            ),
            "http": (
                {"url": f"http://127.0.0.1:{self.port}/hello"},
                f"http_fetch:127.0.0.1:{self.port}",
            ),
        }[call]


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from loopback"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def built_guests() -> Path:
    """The conformance guests' cache folder (builds what is missing)."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "build_guests.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return Path(done.stdout.strip().splitlines()[-1])


def _publish(host: Host, name: str, path: Path, abi: str, **limits: int) -> None:
    data = path.read_bytes()
    manifest = Manifest.model_validate(
        {
            "name": name,
            "version": "0.1.0",
            "abi": abi,
            "module": {"cid": cid_for_bytes(data)},
            "config": CONFIG,
            "limits": {"instances": 16, **limits},
        }
    )
    host.publish_bytes(manifest, data)


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory, built: Path) -> Iterator[Guests]:
    cache = built_guests()
    data_dir = tmp_path_factory.mktemp("guests") / "data"
    # The Python component's compiled code (40 MB, 15-50 s to compile) is kept
    # with the built guests; the compile cache is keyed by CID and engine.
    compiled = cache / "compiled"
    compiled.mkdir(mode=0o700, exist_ok=True)
    (data_dir / "cache").mkdir(parents=True)
    (data_dir / "cache" / "compiled").symlink_to(compiled)
    config = make_config(data_dir, fuel=50_000_000)
    host = Host(config.model_copy(update={"egress": EgressSettings(allow_addresses=["127.0.0.1"])}))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        for lang in ("python", "ts"):
            _publish(host, f"conf-{lang}", cache / f"{lang}.wasm", "component")
        for lang in ("as", "c"):
            _publish(host, f"conf-{lang}", cache / f"{lang}.wasm", "extism")
        # Rust: the scenario is spread over the existing test guests.
        for name, path in {
            "conf-rust": TESTING / "all-imports.wasm",
            "conf-rust-upper": built / "uppercase.wasm",
            "conf-rust-trap": TESTING / "trap.wasm",
            "conf-rust-spin": TESTING / "spin.wasm",
        }.items():
            _publish(host, name, path, "component")
        yield Guests(host, httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()
        host.close()


def invoke(guests: Guests, lang: str, call: str, gate: Any = None, **fields: Any) -> Any:
    name = f"conf-{lang}"
    if lang == "rust" and call in ("upper", "trap", "spin"):
        name = f"conf-rust-{call}"
    result = guests.host.invoke(name, json.dumps({"call": call, **fields}), gate=gate)
    return result


@pytest.mark.parametrize("lang", LANGUAGES)
def test_json_in_json_out(guests: Guests, lang: str) -> None:
    result = invoke(guests, lang, "upper", text="hello, world")
    assert result.value == {"text": "HELLO, WORLD"}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_import_is_denied_without_a_grant(guests: Guests, lang: str) -> None:
    for call in IMPORT_CALLS:
        request, scope = guests.request(call)
        out = invoke(guests, lang, call, **request).value
        assert out["error"]["case"] == "denied", (call, out)
        assert scope in out["error"]["message"], (call, out)
        if lang in ("python", "ts"):  # the SDKs tell a denial apart (ion.Denied, isDenied)
            assert out["error"]["denied"] is True


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_import_answers_once_granted(guests: Guests, lang: str) -> None:
    gate = AllowListGate([guests.request(call)[1] for call in IMPORT_CALLS])

    def call(name: str) -> Any:
        return invoke(guests, lang, name, gate, **guests.request(name)[0])

    logged = call("log")
    assert logged.value == {"ok": None}
    assert [(x.level, x.message) for x in logged.logs] == [("info", "from the guest")]
    assert call("config").value == {"ok": "hello"}
    cid = call("pod-put").value["ok"]
    assert cid == guests.host.pod.resolve("notes/conformance.txt")
    assert call("pod-get").value == {"ok": "written by a guest"}
    # Allowed by the gate; this host has no bus, so the import answers unavailable.
    assert call("bus").value["error"]["case"] == "unavailable"
    fetched = call("http").value["ok"]
    assert (fetched["status"], fetched["body"]) == (200, "hello from loopback")


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_trap_is_a_guest_trap(guests: Guests, lang: str) -> None:
    with pytest.raises(e.GuestTrap):
        invoke(guests, lang, "trap")
    assert invoke(guests, lang, "upper", text="after").value == {"text": "AFTER"}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_spinning_guest_stops_at_its_fuel(guests: Guests, lang: str) -> None:
    with pytest.raises(e.FuelExhausted):
        invoke(guests, lang, "spin")


# --- what the WASI layer lets a Python guest see -------------------------------


def test_a_python_guest_reads_no_file_no_environment_and_opens_no_socket(
    guests: Guests,
) -> None:
    seen = invoke(guests, "python", "probe").value
    assert seen["environ"] == {} and seen["HOME"] is None
    for path in ("/etc/passwd", "/proc/self/environ", "app.py", "/"):
        assert seen[path].startswith(("FileNotFoundError", "PermissionError", "OSError")), seen
    assert seen["cwd_listing"].startswith("FileNotFoundError")
    # CPython under componentize-py has no socket module; WASI sockets are refused below.
    assert seen["socket"].startswith(("ModuleNotFoundError", "OSError", "PermissionError"))
    assert "root:" not in json.dumps(seen)


def test_a_python_guest_may_not_sleep_past_its_deadline(guests: Guests) -> None:
    with pytest.raises(e.WasiRefused, match="timer"):
        invoke(guests, "python", "sleep", seconds=3600)


def test_python_print_goes_to_the_log_import_under_its_scope(guests: Guests) -> None:
    # stdout is emit_log:info: without a grant the line is dropped, the denial audited.
    result = invoke(guests, "python", "print", text="not kept")
    assert result.value == {"ok": None} and result.logs == []
    last = guests.host.ionwall.audit_tail(1)[0]
    assert (last.decision, last.scope) == ("deny", "emit_log:info")
    granted = AllowListGate(["emit_log:info", "emit_log:warn"])
    result = invoke(guests, "python", "print", granted, text="to stdout")
    assert [(x.level, x.message) for x in result.logs] == [("info", "to stdout")]


def test_python_output_past_the_log_budget_fails_the_call(guests: Guests) -> None:
    granted = AllowListGate(["emit_log:info"])
    with pytest.raises(e.ImportBudgetExceeded, match="max_log_bytes"):
        invoke(guests, "python", "print", granted, text="x" * 4_000, repeat=20)  # 80 KB
    assert invoke(guests, "python", "upper", text="ok").value == {"text": "OK"}
