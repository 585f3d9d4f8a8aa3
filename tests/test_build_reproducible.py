"""The standard transforms rebuild to the exact bytes their manifests pin.

A manifest names its module by CID, so a transform is only really published
if anyone can rebuild it from the sources and get that CID. This test copies
the guest sources to a different path, builds them there with a fresh target
directory (nothing cached from the checkout), and compares each module's CID
with `module.cid` in manifests/<name>.yaml. A failure means either a stale
manifest (run scripts/build_transforms.sh, then scripts/update_manifest_cids.py)
or a build that leaks its environment into the bytes.

From scratch this takes about 30 s on two cores (Rust compile of nine small
crates with LTO), so it stays in the default suite.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "manifests").glob("*.yaml"))
# Everything the build reads, and nothing else: if the build needs a file
# that is not listed here, the copy fails to build, which is the point.
SOURCES = [
    "Cargo.toml",
    "Cargo.lock",
    ".cargo",
    "wit",
    "transforms_src",
    "scripts/build_transforms.sh",
    "scripts/update_manifest_cids.py",
]


def _tool(name: str) -> str:
    venv = Path(sys.executable).parent / name
    found = str(venv) if venv.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: run scripts/bootstrap.sh")
    return found


def _cid_for_bytes() -> Callable[[bytes], str]:
    spec = importlib.util.spec_from_file_location(
        "update_manifest_cids", ROOT / "scripts" / "update_manifest_cids.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cid_for_bytes: Callable[[bytes], str] = module.cid_for_bytes
    return cid_for_bytes


@pytest.mark.timeout(300)
def test_standard_transforms_rebuild_to_manifest_cids(tmp_path: Path) -> None:
    if not Path("/usr/bin/cargo").exists():
        pytest.skip("Debian's cargo (/usr/bin/cargo) is not installed: run scripts/bootstrap.sh")
    assert MANIFESTS, "no manifests/*.yaml"

    # A different absolute path, several levels deep, unlike the checkout's.
    copy = tmp_path / "elsewhere" / "checkout of ionflux"
    for rel in SOURCES:
        src, dst = ROOT / rel, copy / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("target", "__pycache__"))
        else:
            shutil.copy2(src, dst)

    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARGO", "RUST"))}
    env.update(
        CARGO_TARGET_DIR=str(tmp_path / "target"),
        IONFLUX_BUILD_DIR=str(out),
        WASM_TOOLS=_tool("wasm-tools"),
        PYTHON=sys.executable,
    )
    build = subprocess.run(
        ["bash", str(copy / "scripts" / "build_transforms.sh"), "standard"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert build.returncode == 0, f"build failed:\n{build.stdout}\n{build.stderr}"

    cid_for_bytes = _cid_for_bytes()
    mismatches = []
    for manifest_path in MANIFESTS:
        manifest = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
        if manifest["abi"] != "component":
            continue
        module = out / Path(manifest["module"]["path"]).name
        assert module.is_file(), f"{manifest_path.name}: the build produced no {module.name}"
        cid = cid_for_bytes(module.read_bytes())
        if cid != manifest["module"]["cid"]:
            mismatches.append(
                f"{manifest_path.name}: manifest {manifest['module']['cid']}, rebuilt {cid}"
            )
    assert not mismatches, "rebuilt modules differ from their manifests:\n" + "\n".join(mismatches)
