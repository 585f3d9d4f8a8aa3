"""One public error surface: every error class of IONFLUX and IONWALL is drawn in
its tree (at the top of ``_errors.py``) under its real parent, and exported from
its package's front."""

from __future__ import annotations

import errno
import importlib
import os
import pkgutil
import re
from types import ModuleType

import ionflux
import pytest
from conftest import GuestPublisher
from ionflux.host import Host

import ionwall

_NAME = re.compile(r"^(?P<indent>[ │├└─]*?)(?P<name>[A-Z]\w+)(?:\s|$)")


def _import_everything(package: ModuleType) -> None:
    """Errors defined in any module count, so every module is imported."""
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def _subclasses(root: type, package: str) -> set[type]:
    found: set[type] = set()
    todo = [root]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.split(".")[0] == package and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def _drawing(doc: str) -> dict[str, str | None]:
    """name -> the name of its parent in the tree drawn in ``doc``."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        if not line.startswith("    ") or not line.strip():
            continue
        match = _NAME.match(line[4:])
        if match is None:
            continue
        column = len(match.group("indent"))
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[match.group("name")] = stack[-1][1] if stack else None
        stack.append((column, match.group("name")))
    return parents


CASES = [
    pytest.param(ionflux, ionflux.IonfluxError, "ionflux._errors", id="ionflux"),
    pytest.param(ionwall, ionwall.IonwallError, "ionwall._errors", id="ionwall"),
]


@pytest.mark.parametrize(("package", "root", "drawn_in"), CASES)
def test_every_error_is_drawn_under_its_parent(
    package: ModuleType, root: type, drawn_in: str
) -> None:
    _import_everything(package)
    drawing = _drawing(importlib.import_module(drawn_in).__doc__ or "")
    assert drawing[root.__name__] is None
    classes = _subclasses(root, package.__name__)
    assert {cls.__name__ for cls in classes} == set(drawing) - {root.__name__}
    for cls in classes:
        bases = {base.__name__ for base in cls.__bases__}
        assert drawing[cls.__name__] in bases, f"{cls.__name__} is drawn under the wrong parent"


@pytest.mark.parametrize(("package", "root", "drawn_in"), CASES)
def test_every_error_is_exported(package: ModuleType, root: type, drawn_in: str) -> None:
    _import_everything(package)
    for cls in {root, *_subclasses(root, package.__name__)}:
        assert cls.__name__ in package.__all__, f"{cls.__name__} is not in {package.__name__}"
        assert getattr(package, cls.__name__) is cls
        assert isinstance(cls.kind, str)  # type: ignore[attr-defined]


def test_ionwall_errors_that_reach_ionflux_callers_are_also_ionflux_errors() -> None:
    assert issubclass(ionflux.PermissionDenied, ionwall.PermissionDenied)
    assert issubclass(ionflux.ConsentRequired, ionwall.ConsentRequired)


def test_an_audit_log_that_cannot_be_written_reaches_invoke_callers_as_ours(
    host: Host, publish_guest: GuestPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ionwall.AuditError`` is translated at ``Host.invoke``: a caller catching
    ``IonfluxError`` (or ``DataDirError``) sees it; one catching IONWALL's still does."""
    publish_guest(host, "all-imports", scopes=["emit_log:*"])
    log_call = {"call": "log", "level": "info", "message": "hello"}
    with pytest.raises(ionflux.ConsentRequired) as info:
        host.invoke("all-imports", log_call)
    host.ionwall.approve(info.value.request.id)
    real_write = os.write
    audit_fd = host.ionwall.audit._log_fd

    # Stands in for a failing disk under the audit log (tests/test_full_disk.py
    # fills a real one): only the audit log's writes fail.
    def broken(fd: int, data: bytes) -> int:
        if fd == audit_fd:
            raise OSError(errno.EIO, "Input/output error")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", broken)
    with pytest.raises(ionflux.AuditNotWritten, match="Input/output error") as failed:
        host.invoke("all-imports", log_call)
    assert isinstance(failed.value, ionflux.DataDirError)
    assert isinstance(failed.value, ionwall.AuditError)
    assert failed.value.to_dict()["kind"] == "audit_not_written"
    monkeypatch.undo()
    assert host.invoke("all-imports", log_call).value == {"ok": None}
