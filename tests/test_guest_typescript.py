"""guests/ts/ionflux-transform.d.ts against wit/: the world's imports, as
componentize-qjs exposes them, are derived here from `wasm-tools component wit
--json` and checked by `tsc` in both directions (the declared type is exactly
the derived one), so an import added to or changed in the world fails here
until the declarations follow."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

GUESTS = REPO / "guests"
TSC = GUESTS / "node_modules" / ".bin" / "tsc"


def _camel(name: str) -> str:
    head, *rest = name.split("-")
    return head + "".join(p.title() for p in rest)


class _Types:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.types = doc["types"]

    def ts(self, ty: Any) -> str:
        if isinstance(ty, str):
            return {"string": "string", "u16": "number", "u32": "number", "bool": "boolean"}[ty]
        typedef = self.types[ty]
        kind = typedef["kind"]
        if "type" in kind:  # a `use`d alias
            return self.ts(kind["type"])
        if "enum" in kind:
            return " | ".join(json.dumps(c["name"]) for c in kind["enum"]["cases"])
        if "record" in kind:
            fields = "; ".join(
                f"{_camel(f['name'])}: {self.ts(f['type'])}" for f in kind["record"]["fields"]
            )
            return "{ " + fields + " }"
        if "list" in kind:
            return f"Array<{self.ts(kind['list'])}>"
        if "option" in kind:
            return f"{self.ts(kind['option'])} | null"
        if "variant" in kind:
            return " | ".join(
                f"{{ tag: {json.dumps(c['name'])}; val: {self.ts(c['type'])} }}"
                for c in kind["variant"]["cases"]
            )
        raise AssertionError(f"no TypeScript form for {kind}")

    def returns(self, result: Any) -> str:
        """A top-level ``result<T, error>`` returns T (the error is thrown)."""
        if result is None:
            return "void"
        kind = self.types[result]["kind"] if isinstance(result, int) else {}
        if "result" in kind:
            ok = kind["result"]["ok"]
            return "void" if ok is None else self.ts(ok)
        return self.ts(result)


def _derived_checks() -> str:
    doc = json.loads(
        subprocess.run(
            [str(REPO / ".venv" / "bin" / "wasm-tools"), "component", "wit", "wit", "--json"],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    types = _Types(doc)
    package = doc["packages"][0]["name"]  # ionflux:transform@0.1.0
    name, _, version = package.partition("@")
    lines = [
        "type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;",
        "const same = <A, B>(_: Same<A, B>): void => {};",
    ]
    for interface in doc["interfaces"]:
        module = f"{name}/{interface['name']}@{version}"
        alias = _camel(interface["name"]) + "_"
        if interface["name"] == "types":
            error = next(t for t in doc["types"] if t["name"] == "error" and "variant" in t["kind"])
            lines.append(f'import type {{ IonError }} from "{module}";')
            lines.append(f"same<IonError, {types.ts(doc['types'].index(error))}>(true);")
            continue
        lines.append(f'import {alias} from "{module}";')
        for fname, func in interface["functions"].items():
            params = ", ".join(
                f"{_camel(p['name'])}: {types.ts(p['type'])}" for p in func["params"]
            )
            signature = f"({params}) => {types.returns(func.get('result'))}"
            lines.append(f"same<typeof {alias}.{_camel(fname)}, {signature}>(true);")
        declared = ", ".join(json.dumps(_camel(f)) for f in interface["functions"])
        lines.append(
            f"same<keyof typeof {alias}, {' | '.join([declared.replace(', ', ' | ')])}>(true);"
        )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def tsc() -> Path:
    if not TSC.exists():
        pytest.fail(
            "the npm toolchain is not installed: run scripts/bootstrap.sh (npm ci in guests/)"
        )
    return TSC


def test_declarations_match_the_world(tsc: Path, tmp_path: Path) -> None:
    (tmp_path / "check.ts").write_text(_derived_checks())
    (tmp_path / "tsconfig.json").write_text(
        json.dumps(
            {
                "extends": str(GUESTS / "ts" / "tsconfig.base.json"),
                "include": ["check.ts", str(GUESTS / "ts" / "ionflux-transform.d.ts")],
            }
        )
    )
    done = subprocess.run([str(tsc), "-p", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_declaration_fails_the_check(tsc: Path, tmp_path: Path) -> None:
    wrong = (GUESTS / "ts" / "ionflux-transform.d.ts").read_text()
    wrong = wrong.replace("get(key: string): string | null;", "get(key: string): string;")
    (tmp_path / "decl.d.ts").write_text(wrong)
    (tmp_path / "check.ts").write_text(_derived_checks())
    (tmp_path / "tsconfig.json").write_text(
        json.dumps(
            {
                "extends": str(GUESTS / "ts" / "tsconfig.base.json"),
                "include": ["check.ts", "decl.d.ts"],
            }
        )
    )
    done = subprocess.run([str(tsc), "-p", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode != 0 and "check.ts" in done.stdout


def test_the_guest_helpers_typecheck(tsc: Path) -> None:
    done = subprocess.run(
        [str(tsc), "-p", str(GUESTS / "conformance" / "ts")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout
