"""``ionflux graph`` and ``ionflux runs`` end to end, on a real host data dir."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import BUILD, MANIFESTS, REPO, TESTING, make_config
from ionflux.cli import main
from ionflux.host import Host
from ionflux.manifest import Manifest, load_manifest
from ionflux.store import cid_for_bytes

DIGEST = str(REPO / "graphs" / "digest.yaml")
FIXTURES = REPO / "tests" / "fixtures" / "graphs"
INPUT = '{"title": "weekly notes", "text": "one two three", "tags": ["ops"]}'


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, built: Path) -> Path:
    data = tmp_path_factory.mktemp("graph-cli") / "data"
    host = Host(make_config(data))
    try:
        for name in ("text-stats", "uppercase", "json-path", "template"):
            manifest = load_manifest(MANIFESTS / f"{name}.yaml")
            wasm = (BUILD / f"{name}.wasm").read_bytes()
            module = manifest.module.model_copy(update={"cid": cid_for_bytes(wasm)})
            host.publish_bytes(manifest.model_copy(update={"module": module}), wasm)
        echo = (TESTING / "echo.wasm").read_bytes()
        host.publish_bytes(
            Manifest.model_validate(
                {
                    "name": "echo",
                    "version": "0.1.0",
                    "abi": "component",
                    "module": {"cid": cid_for_bytes(echo)},
                }
            ),
            echo,
        )
    finally:
        host.close()
    return data


def cli(data_dir: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args], input=input)


def test_validate_prints_the_plan(data_dir: Path) -> None:
    done = cli(data_dir, "graph", "validate", DIGEST)
    assert done.exit_code == 0, done.output
    assert "ok: digest 0.1.0 (4 nodes)" in done.output
    assert re.search(r"level 1: stats \[text-stats@0\.1\.0\], headline \[uppercase@", done.output)
    assert "level 2: render [template@" in done.output


def test_validate_prints_every_problem(data_dir: Path) -> None:
    bad = str(FIXTURES / "many_problems.yaml")
    done = cli(data_dir, "graph", "validate", bad)
    assert done.exit_code == 1
    assert "invalid graph (7 problems)" in done.stderr
    assert f"{bad}:2: field 'colour': unknown top-level key 'colour'" in done.stderr
    assert f"{bad}:17: node 'sneaky' field 'dependencies.0': depends on unknown node" in (
        done.stderr
    )


def test_deploy_versions_run_and_runs(data_dir: Path) -> None:
    deployed = cli(data_dir, "graph", "deploy", DIGEST, "-m", "first digest")
    assert deployed.exit_code == 0, deployed.output
    assert deployed.output.startswith("deployed: digest 0.1.0 bafk")
    again = cli(data_dir, "graph", "deploy", DIGEST, "-m", "no change")
    assert "unchanged" in again.output
    versions = cli(data_dir, "graph", "versions", "digest")
    assert versions.exit_code == 0
    assert "first digest" in versions.output and "no change" not in versions.output

    ran = cli(data_dir, "graph", "run", "digest", "--input", INPUT)
    assert ran.exit_code == 0, ran.output + ran.stderr
    lines = ran.output.splitlines()
    assert lines[0].split() == ["NODE", "STATUS", "DURATION", "TRIES", "OUTPUT", "/", "ERROR"]
    assert any(line.startswith("render") and "success" in line for line in lines)
    assert '"digest": "WEEKLY NOTES: 3 words in 1 lines"' in ran.output
    run_id = re.search(r"run: (\w+)", ran.output).group(1)  # type: ignore[union-attr]

    listed = cli(data_dir, "runs", "list", "--graph", "digest")
    assert run_id in listed.output and "success" in listed.output
    shown = cli(data_dir, "runs", "show", run_id[:12])
    assert shown.exit_code == 0, shown.output
    assert f"run       {run_id}" in shown.output
    assert re.search(r"^render\s+success\s+\d\d:\d\d:\d\d\.\d{3}", shown.output, re.M)
    as_json = json.loads(cli(data_dir, "runs", "show", run_id, "--json").output)
    assert [s["node_id"] for s in as_json["steps"]][-1] == "render"
    assert as_json["step_results_summary_cid"].startswith("bafk")


def test_run_failure_is_listed_by_status(data_dir: Path) -> None:
    failed = cli(data_dir, "graph", "run", DIGEST, "--input", '{"title": ""}')
    assert failed.exit_code == 1
    assert "input violates the graph's input_schema" in failed.output
    listed = cli(data_dir, "runs", "list", "--status", "failure")
    assert "digest@0.1.0" in listed.output and "failure" in listed.output


def test_dry_run(data_dir: Path) -> None:
    done = cli(
        data_dir, "graph", "run", DIGEST, "--input", INPUT, "--mode", "dry_run_validate_only"
    )
    assert done.exit_code == 0, done.output
    assert re.search(r"^render\s+planned", done.output, re.M)
    assert "scopes requested: -" in done.output


def test_step_through_debug_prompts(data_dir: Path, tmp_path: Path) -> None:
    graph = tmp_path / "steps.yaml"
    graph.write_text(
        "name: steps\ngraph:\n"
        "  - {id: one, transform: echo, inputs: {n: 1}}\n"
        "  - {id: two, transform: echo, inputs: {n: '{{ nodes.one.outputs.n + 1 }}'}}\n"
        "  - {id: three, transform: echo, dependencies: [two]}\n"
    )
    done = cli(
        data_dir, "graph", "run", str(graph), "--mode", "step_through_debug", input="c\ns\na\n"
    )
    assert "-- next: one [echo@0.1.0]" in done.output
    assert '"n": 2' in done.output  # two's inputs, rendered from one's outputs
    assert re.search(r"^two\s+skipped", done.output, re.M)
    assert re.search(r"^three\s+cancelled", done.output, re.M)
    assert "status: cancelled" in done.output
    assert done.exit_code == 1
