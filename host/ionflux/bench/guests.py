"""Issue 16's table: the conformance guest in each language (guests/conformance/,
built by scripts/build_guests.sh; Rust is the standard ``uppercase``), one
``{"call": "upper"}`` call through the host.

- size: the module's bytes;
- compile: ``publish`` on a host with an empty compile cache (compiles and checks it);
- first call: the first call after that publish (one fresh instance);
- restart: the first call on a new host over the same data directory (the
  compiled code read back from the disk cache, then one call);
- cached call: the median call once warm (a fresh instance per call, as always);
- fuel: what one call burnt (Extism reports none: 0).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from ..config import load_config
from ..host import Host
from ..manifest import Manifest
from ..store import cid_for_bytes
from ._timing import Row, once, per_call

LANGUAGES = {
    "python": ("component", "Python (componentize-py)"),
    "ts": ("component", "TypeScript (componentize-qjs)"),
    "as": ("extism", "AssemblyScript (Extism)"),
    "c": ("extism", "C (Extism)"),
    "rust": ("component", "Rust (ionflux-pdk)"),
}
UPPER = json.dumps({"call": "upper", "text": "hello"})


def _modules(repo: Path) -> dict[str, Path]:
    done = subprocess.run(
        ["bash", str(repo / "scripts" / "build_guests.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    cache = Path(done.stdout.strip().splitlines()[-1])
    modules = {lang: cache / f"{lang}.wasm" for lang in LANGUAGES if lang != "rust"}
    modules["rust"] = repo / "build" / "transforms" / "uppercase.wasm"
    return modules


def _manifest(name: str, abi: str, data: bytes) -> Manifest:
    return Manifest.model_validate(
        {
            "name": name,
            "version": "0.1.0",
            "abi": abi,
            "module": {"cid": cid_for_bytes(data)},
            "limits": {"instances": 16},
        }
    )


def _measure(lang: str, path: Path, workdir: Path) -> dict[str, Any]:
    abi = LANGUAGES[lang][0]
    data = path.read_bytes()
    config = load_config(data_dir=workdir / lang)
    host = Host(config)
    try:
        compile_s = once(lambda: host.publish_bytes(_manifest(lang, abi, data), data))
        first_s = once(lambda: host.invoke(lang, UPPER))
    finally:
        host.close()
    host = Host(config)
    try:
        restart_s = once(lambda: host.invoke(lang, UPPER))
        result = host.invoke(lang, UPPER)
        if result.value != {"text": "HELLO"}:
            raise AssertionError(f"{lang}: {result.output}")
        n = 50 if lang == "python" else 200
        cached_s = per_call(lambda: host.invoke(lang, UPPER), n=n, repeats=5, warmup=10)
    finally:
        host.close()
    return {
        "size": len(data),
        "compile": compile_s,
        "first": first_s,
        "restart": restart_s,
        "cached": cached_s,
        "fuel": result.fuel_used,
    }


def run(*, repo: Path, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    table = [
        "| language | size | compile (publish) | first call | first call after restart "
        "| cached call | fuel |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for lang, path in _modules(repo).items():
        title = LANGUAGES[lang][1]
        try:
            m = _measure(lang, path, workdir)
        except Exception as exc:  # one language failing must not hide the others
            table.append(f"| {title} | failed: {type(exc).__name__}: {str(exc)[:80]} |")
            rows.append(Row(f"{lang} failed", 1, ""))
            continue
        table.append(
            f"| {title} | {m['size'] / 1024:,.0f} KB | {m['compile'] * 1000:,.0f} ms "
            f"| {m['first'] * 1000:.2f} ms | {m['restart'] * 1000:.1f} ms "
            f"| {m['cached'] * 1000:.3f} ms | {m['fuel']:,} |"
        )
        rows += [
            Row(f"{lang} module size", m["size"] / 1024, "KB"),
            Row(f"{lang} compile at publish", m["compile"] * 1000, "ms"),
            Row(f"{lang} first call", m["first"] * 1000, "ms"),
            Row(f"{lang} first call after restart", m["restart"] * 1000, "ms"),
            Row(f"{lang} cached call", m["cached"] * 1000, "ms"),
            Row(f"{lang} fuel per call", m["fuel"], "units"),
        ]
    print("\n".join(table))
    return rows
