"""``ionflux new`` and ``ionflux build``: a transform project from a template, and
its module built with the language's toolchain.

A project is a folder with ``manifest.yaml`` and one source file at its root:
``app.py`` (Python), ``app.js`` (JavaScript), ``app.ts`` (TypeScript with
``abi: component``, AssemblyScript with ``abi: extism``), ``app.c`` (C) or
``Cargo.toml`` (Rust). ``ionflux build`` writes ``build/<name>.wasm`` and the
module's CID into the manifest, so ``ionflux publish manifest.yaml`` follows.

The toolchains are the project's own (``scripts/bootstrap.sh`` installs them,
nothing by hand): componentize-py from the venv, the npm packages pinned in
``guests/package-lock.json`` (componentize-qjs, TypeScript, esbuild,
AssemblyScript and @extism/as-pdk), Debian's clang 14 and rustc 1.63, and
wasm-tools. They are found through the checkout's ``guests/`` folder (or
``IONFLUX_GUESTS_DIR``), which also holds the templates and the guest SDKs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

from .. import GuestBuildError
from ..manifest import load_manifest

LANGUAGES = ("python", "js", "ts", "as", "c", "rust")
_NAMES = {
    "python": "Python",
    "js": "JavaScript",
    "ts": "TypeScript",
    "as": "AssemblyScript",
    "c": "C",
    "rust": "Rust",
}
# componentize-py and componentize-qjs components are 11-14 core instances.
_LIMITS = {"python": "{instances: 16}", "js": "{instances: 16}", "ts": "{instances: 16}"}
_BUILD_TIMEOUT_S = 900
_CID_LINE = re.compile(r"^(\s+cid:\s*)\S+(.*)$", re.M)
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")

_REPO = Path(__file__).resolve().parents[3]


def guests_dir() -> Path:
    """The checkout's ``guests/`` folder: templates, guest SDKs, the npm toolchain."""
    override = os.environ.get("IONFLUX_GUESTS_DIR")
    path = Path(override) if override else _REPO / "guests"
    if not (path / "templates").is_dir():
        raise GuestBuildError(
            f"{path}: no guest templates here; `ionflux new` and `ionflux build` run from an "
            "IONFLUX checkout (or set IONFLUX_GUESTS_DIR to its guests/ folder)"
        )
    return path


def world_dir() -> Path:
    return guests_dir().parent / "wit"


@dataclass(frozen=True, slots=True)
class Built:
    language: str
    module: Path
    cid: str
    size: int


# --- new -----------------------------------------------------------------------


def new_project(directory: Path, name: str, language: str) -> list[Path]:
    """Writes a project for ``language`` into ``directory`` (which must not exist)."""
    if not _NAME.match(name):
        raise GuestBuildError(
            f"{name!r} is not a transform name: lower-case letters, digits and '-', "
            "starting with a letter"
        )
    if language not in LANGUAGES:
        raise GuestBuildError(f"unknown language {language!r}: one of {', '.join(LANGUAGES)}")
    if directory.exists():
        raise GuestBuildError(f"{directory} already exists")
    guests = guests_dir()
    templates = guests / "templates"
    values = {
        "name": name,
        "language": _NAMES[language],
        "abi": "extism" if language in ("as", "c") else "component",
        "limits": _LIMITS.get(language, "{}"),
        "pdk": str(guests.parent / "transforms_src" / "pdk"),
    }
    files: dict[Path, str] = {}
    for source in sorted((templates / language).rglob("*")):
        if source.is_file():
            files[source.relative_to(templates / language)] = source.read_text()
    for common in ("manifest.yaml", "test_transform.py"):
        files[Path(common)] = (templates / "common" / common).read_text()
    if language == "ts":  # the world's declarations and helpers, next to the code
        for sdk in ("ionflux.ts", "ionflux-transform.d.ts"):
            files[Path(sdk)] = (guests / "ts" / sdk).read_text()
    files[Path(".gitignore")] = "build/\ntarget/\n__pycache__/\n"
    written = []
    for relative, text in files.items():
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


# --- build ---------------------------------------------------------------------


def project_language(project: Path, abi: str) -> str:
    if (project / "app.py").is_file():
        return "python"
    if (project / "app.js").is_file():
        return "js"
    if (project / "app.ts").is_file():
        return "as" if abi == "extism" else "ts"
    if (project / "app.c").is_file():
        return "c"
    if (project / "Cargo.toml").is_file():
        return "rust"
    raise GuestBuildError(
        f"{project}: no app.py, app.js, app.ts, app.c or Cargo.toml: not a transform project"
    )


def build_project(project: Path, out: Path | None = None, *, update_manifest: bool = True) -> Built:
    """Builds the project's module to ``out`` (default ``build/<name>.wasm``) and,
    unless told not to, writes its CID into ``manifest.yaml``."""
    from ..store import cid_for_bytes

    project = project.resolve()
    manifest_path = project / "manifest.yaml"
    if not manifest_path.is_file():
        raise GuestBuildError(f"{project}: no manifest.yaml (make a project with `ionflux new`)")
    manifest = load_manifest(manifest_path)
    language = project_language(project, manifest.abi)
    out = (out or project / "build" / f"{manifest.name}.wasm").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ionflux-build-") as work:
        _BUILDERS[language](project, Path(work), out)
    data = out.read_bytes()
    cid = cid_for_bytes(data)
    if update_manifest:
        text = manifest_path.read_text()
        updated, count = _CID_LINE.subn(lambda m: f"{m[1]}{cid}{m[2]}", text, count=1)
        if count != 1:
            raise GuestBuildError(f"{manifest_path}: no `module: cid:` line to update")
        if updated != text:
            manifest_path.write_text(updated)
    return Built(language, out, cid, len(data))


def _run(step: str, argv: list[str], cwd: Path) -> None:
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        raise GuestBuildError(
            f"{step}: {argv[0]} not found (run scripts/bootstrap.sh to install the toolchains)"
        ) from None
    except subprocess.TimeoutExpired:
        raise GuestBuildError(f"{step}: still running after {_BUILD_TIMEOUT_S} s") from None
    if done.returncode != 0:
        output = (done.stderr.strip() or done.stdout.strip())[-4000:]
        raise GuestBuildError(f"{step} failed (exit {done.returncode}):\n{output}")


def _tool(name: str, *candidates: Path) -> str:
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise GuestBuildError(f"{name} not found (run scripts/bootstrap.sh to install it)")
    return found


def _venv_tool(name: str) -> str:
    return _tool(name, Path(sys.executable).parent / name)


def _npm_tool(name: str) -> str:
    bin_dir = guests_dir() / "node_modules" / ".bin"
    if not (bin_dir / name).exists():
        raise GuestBuildError(
            f"{bin_dir / name} missing: the npm toolchain is not installed "
            "(run scripts/bootstrap.sh, which runs `npm ci` in guests/)"
        )
    return str(bin_dir / name)


def _build_python(project: Path, work: Path, out: Path) -> None:
    sdk = guests_dir() / "python"
    argv = [_venv_tool("componentize-py"), "-d", str(world_dir()), "-w", "transform"]
    argv += ["componentize", "-p", str(project), "-p", str(sdk), "app", "-o", str(out)]
    _run("componentize-py", argv, work)


def _componentize_js(entry: Path, work: Path, out: Path) -> None:
    bundle = work / "bundle.js"
    _run(
        "esbuild",
        [
            _npm_tool("esbuild"),
            str(entry),
            "--bundle",
            "--format=esm",
            "--platform=neutral",
            "--external:ionflux:transform/*",
            f"--outfile={bundle}",
            "--log-level=warning",
        ],
        work,
    )
    # Relative: the entry's name is kept in the snapshot, a temporary path would
    # make every build's bytes (and CID) differ.
    argv = [_npm_tool("componentize-qjs"), "--wit", str(world_dir()), "--js", bundle.name]
    argv += ["--world", "transform", "--sync", "--stub-wasi", "-o", str(out)]
    _run("componentize-qjs", argv, work)


def _build_js(project: Path, work: Path, out: Path) -> None:
    _componentize_js(project / "app.js", work, out)


def _build_ts(project: Path, work: Path, out: Path) -> None:
    if (project / "tsconfig.json").is_file():
        _run("tsc", [_npm_tool("tsc"), "-p", str(project)], project)
    _componentize_js(project / "app.ts", work, out)


def _build_as(project: Path, work: Path, out: Path) -> None:
    argv = [_npm_tool("asc"), str(project / "app.ts"), "--outFile", str(out)]
    argv += ["--path", str(guests_dir() / "node_modules"), "--use", "abort=app/abort", "-O3z"]
    _run("asc", argv, project)


def _build_c(project: Path, work: Path, out: Path) -> None:
    clang = _tool("clang-14", Path("/usr/bin/clang-14"), Path("/usr/bin/clang"))
    linker = _tool("wasm-ld-14", Path("/usr/bin/wasm-ld-14"), Path("/usr/bin/wasm-ld"))
    argv = [clang, "--target=wasm32", "-nostdlib", "-fno-builtin", "-O2", f"-fuse-ld={linker}"]
    argv += ["-Wl,--no-entry", "-Wl,--strip-all", "-o", str(out), str(project / "app.c")]
    _run("clang", argv, project)


def _build_rust(project: Path, work: Path, out: Path) -> None:
    cargo, rustc = Path("/usr/bin/cargo"), Path("/usr/bin/rustc")
    if not cargo.exists() or not rustc.exists():
        raise GuestBuildError(
            "Debian's cargo and rustc 1.63 are missing (run scripts/bootstrap.sh: apt "
            "rustc cargo libstd-rust-dev-wasm32)"
        )
    target = work / "target"
    env = {
        **os.environ,
        "RUSTC": str(rustc),
        "CARGO_HOME": str(work / "cargo-home"),
        "CARGO_TARGET_DIR": str(target),
    }
    env.pop("RUSTFLAGS", None)
    argv = [str(cargo), "build", "--release", "--target", "wasm32-unknown-unknown", "--offline"]
    try:
        done = subprocess.run(
            argv, cwd=project, env=env, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise GuestBuildError(f"cargo: still running after {_BUILD_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise GuestBuildError(f"cargo build failed:\n{done.stderr.strip()[-4000:]}")
    cores = list((target / "wasm32-unknown-unknown" / "release").glob("*.wasm"))
    if len(cores) != 1:
        raise GuestBuildError(f"cargo built {len(cores)} wasm modules, expected one cdylib")
    tools = _venv_tool("wasm-tools")
    embedded = work / "embedded.wasm"
    embed = [tools, "component", "embed", str(world_dir()), "--world", "transform"]
    _run("wasm-tools component embed", [*embed, str(cores[0]), "-o", str(embedded)], work)
    new = [tools, "component", "new", str(embedded), "-o", str(out)]
    _run("wasm-tools component new", new, work)


_BUILDERS = {
    "python": _build_python,
    "js": _build_js,
    "ts": _build_ts,
    "as": _build_as,
    "c": _build_c,
    "rust": _build_rust,
}


# --- commands ------------------------------------------------------------------


@click.command("new")
@click.argument("name")
@click.option(
    "--lang",
    "language",
    type=click.Choice(LANGUAGES),
    default="python",
    show_default=True,
    help="The guest language.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to make the project (default: ./NAME).",
)
def new(name: str, language: str, directory: Path | None) -> None:
    """Make a transform project NAME: source, manifest and a test.

    Its transform already works: it upper-cases {"text": ...}. Then:
    ionflux build NAME && ionflux publish NAME/manifest.yaml
    """
    target = directory or Path(name)
    written = new_project(target, name, language)
    click.echo(f"made {_NAMES[language]} transform {name} in {target}/ ({len(written)} files)")
    click.echo(f"next: ionflux build {target} && ionflux publish {target}/manifest.yaml")


@click.command("build")
@click.argument(
    "project", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the module here (default: PROJECT/build/NAME.wasm).",
)
@click.option(
    "--no-manifest", is_flag=True, help="Do not write the module's CID into manifest.yaml."
)
def build(project: Path, out: Path | None, no_manifest: bool) -> None:
    """Build the transform project PROJECT with its language's toolchain."""
    built = build_project(project, out, update_manifest=not no_manifest)
    click.echo(f"built {built.module} ({built.language}, {built.size} bytes) {built.cid}")


commands = [new, build]
