"""`ionflux new NAME --lang L` makes a project whose transform already works;
`ionflux build` builds it with the project's toolchain and writes its CID into
the manifest; `ionflux publish` and `ionflux invoke` then run it (real CLI,
real toolchains, real host). The Python template's build is the slow one
(componentize-py, then a 15-50 s compile at publish): behind the guest_build
marker; its recipe is the one the conformance suite runs on every test run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO
from ionflux.cli import main

FAST = ["js", "ts", "as", "c", "rust"]


def _cli(data_dir: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--data-dir", str(data_dir), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _new_build_publish_invoke(tmp_path: Path, lang: str) -> None:
    project = tmp_path / f"hello-{lang}"
    data_dir = tmp_path / "data"
    _cli(data_dir, "new", f"hello-{lang}", "--lang", lang, "--dir", str(project))
    manifest = project / "manifest.yaml"
    assert yaml.safe_load(manifest.read_text())["module"]["cid"] == "unbuilt"
    assert (project / "test_transform.py").is_file()

    out = _cli(data_dir, "build", str(project))
    cid = yaml.safe_load(manifest.read_text())["module"]["cid"]
    assert cid in out and (project / "build" / f"hello-{lang}.wasm").is_file()

    assert cid in _cli(data_dir, "publish", str(manifest))
    answer = _cli(data_dir, "invoke", f"hello-{lang}", "--input", '{"text": "hello"}')
    assert json.loads(answer.strip().splitlines()[-1]) == {"text": "HELLO"}


@pytest.mark.parametrize("lang", FAST)
def test_new_project_builds_publishes_and_upper_cases(tmp_path: Path, lang: str) -> None:
    _new_build_publish_invoke(tmp_path, lang)


@pytest.mark.guest_build
def test_new_python_project_builds_publishes_and_upper_cases(tmp_path: Path) -> None:
    _new_build_publish_invoke(tmp_path, "python")


def test_new_refuses_a_bad_name_and_an_existing_folder(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(main, ["new", "Not_A_Name", "--dir", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "not a transform name" in bad.output
    assert not (tmp_path / "x").exists()
    again = runner.invoke(main, ["new", "twice", "--dir", str(tmp_path)])
    assert again.exit_code == 1 and "already exists" in again.output


def test_a_build_error_names_the_step_and_keeps_the_manifest(tmp_path: Path) -> None:
    project = tmp_path / "broken"
    _cli(tmp_path / "data", "new", "broken", "--lang", "c", "--dir", str(project))
    (project / "app.c").write_text("int run(void) { return }\n")
    result = CliRunner().invoke(main, ["build", str(project)])
    assert result.exit_code == 1
    assert "clang failed" in result.output and "app.c" in result.output
    assert yaml.safe_load((project / "manifest.yaml").read_text())["module"]["cid"] == "unbuilt"


def test_every_language_has_a_template() -> None:
    templates = REPO / "guests" / "templates"
    languages = sorted(p.name for p in templates.iterdir() if p.name != "common")
    assert languages == sorted(["python", *FAST])
