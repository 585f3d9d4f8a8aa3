"""The layer rules: the import-linter contracts in pyproject.toml (run by `just lint`),
the rule import-linter cannot state (no package imports another's private modules),
and what `import ionflux.store` loads."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
HEAVY = ("wasmtime", "extism", "jwt", "cryptography")


def _lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env={"PYTHONPATH": str(pythonpath), "PATH": str(LINT_IMPORTS.parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_tree(tmp_path: Path) -> Path:
    """The two packages and the contracts, in a directory of their own."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "host" / "ionflux", src / "ionflux", ignore=ignore)
    shutil.copytree(ROOT / "ionwall", src / "ionwall", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", src / "pyproject.toml")
    return src


def test_the_contracts_hold() -> None:
    done = _lint_imports(ROOT, ROOT / "host")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("ionwall/_bad.py", "import ionflux.store\n", "ionwall is below everything"),
        ("ionflux/store/_bad.py", "from ionflux.graph import Engine\n", "store knows no graphs"),
        ("ionflux/runtime/_bad.py", "import ionflux.triggers\n", "runtime knows no graph"),
        ("ionflux/graph/_bad.py", "from ionflux import bus\n", "graph knows no transport"),
        ("ionflux/store/_bad.py", "import wasmtime\n", "load neither wasmtime"),
    ],
)
def test_a_forbidden_import_breaks_the_lint(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    src = _copy_tree(tmp_path)
    (src / module).write_text(line)
    done = _lint_imports(src, src)
    assert done.returncode != 0, done.stdout
    broken = [row for row in done.stdout.splitlines() if " BROKEN" in row]
    assert any(contract in row for row in broken), done.stdout


def _private(module: str) -> bool:
    return any(part.startswith("_") and part != "__init__" for part in module.split(".")[1:])


def _package(module: str) -> str:
    """``ionflux.graph._history`` -> ``ionflux.graph``; the root's own modules
    (``ionflux._errors``, ``ionflux.config``) are the package ``ionflux``."""
    parts = module.split(".")
    if parts[0] == "ionflux" and len(parts) > 2:
        return ".".join(parts[:2])
    if parts[0] == "ionflux" and len(parts) == 2 and not parts[1].startswith("_"):
        # a root module such as ``config`` or ``host`` belongs to the root, a
        # sub-package such as ``graph`` to itself: grimp tells them apart by children
        return module if _is_package(module) else "ionflux"
    return parts[0]


@functools.cache
def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("ionflux", "ionwall")


def _is_package(module: str) -> bool:
    return bool(_graph().find_children(module))


def test_no_package_imports_another_packages_private_modules() -> None:
    """``ionflux.cli._workers`` may import ``ionflux.cli._app`` or ``ionflux._errors``
    (the root's floor), not ``ionflux.triggers._nats_server``; ``ionflux`` imports
    ``ionwall``'s public front only. What another package needs, it exports."""
    allowed = {
        # Config builds two values of upper layers from its settings, each by a lazy
        # import inside one method: importing the package fronts there would load the
        # graph engine or wasmtime to read a configuration file.
        "ionflux.config -> ionflux.graph._template",
        "ionflux.config -> ionflux.runtime._egress",
    }
    leaks = sorted(
        f"{importer} -> {imported}"
        for importer in _graph().modules
        for imported in _graph().find_modules_directly_imported_by(importer)
        if _private(imported)
        and _package(imported) != "ionflux"
        and _package(importer) != _package(imported)
        and not _package(importer).startswith(_package(imported) + ".")
    )
    assert [leak for leak in leaks if leak not in allowed] == []


def test_importing_the_store_loads_neither_wasmtime_nor_the_gate() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import ionflux.store"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = {
        row.rsplit("|", 1)[1].strip() for row in done.stderr.splitlines() if row.count("|") == 2
    }
    assert "ionflux.store" in loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert heavy == []
    assert not {"ionwall._gate", "ionwall._token", "ionwall._ionwall", "ionflux.host"} & loaded
