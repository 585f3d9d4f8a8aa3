# ruff: noqa: F811  (pytest fixtures imported from serving, taken as parameters)
"""Attacks through the documents the host parses and the templates graphs carry
(issue 11, classes 2 and 4; the input_schema and graph redeploy bugs).

- YAML expansion: a billion-laughs manifest, through ``ionflux publish`` and
  through ``POST /transforms``; alias bombs in graphs (``POST /graphs`` with a
  token), the configuration file and the IONWALL policy file. Each is refused
  with a typed error naming the document and the budget; nothing is stored,
  and listings stay small. A row stored before the bounds is listed from its
  columns, never parsed.
- Size: a graph past ``documents.max_bytes`` (but within the HTTP body limit)
  is refused before it is parsed.
- Templates: ``**``, ``*`` and nested-loop bombs in a deployed graph run over
  the webhook fail the run with ``template_budget`` (node, field, limit), and
  the host answers the next call.
- A node's inputs are checked against its transform's ``input_schema`` when
  the graph is validated and in a dry run (which said success before).
- A deployed ``name@version`` cannot change text.

Figures (RSS of the in-process host, the time to refuse the worst document)
are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import MANIFESTS, REPO, TESTING
from ionflux import ConfigError
from ionflux.config import load_config
from ionflux.http import RunningHost
from ionflux.http.testing import deploy
from ionflux.manifest import Manifest
from ionflux.store import cid_for_bytes
from serving import HOOK, http, nats_server, peak_rss_mb, running, still_serves, token  # noqa: F401

from ionwall import DocumentTooLarge, PolicyError, load_policy

IONFLUX = [sys.executable, "-m", "ionflux.cli"]
ADMIN = ("manage_agent_lifecycle:*", "read_host:*")


def laughs(levels: int, width: int = 10, indent: str = "") -> list[str]:
    """Anchors ``l0`` … ``l<levels>``, each ``width`` aliases of the one before:
    ``*l<levels>`` stands for ``width ** (levels + 1)`` strings."""
    lines = [f"{indent}l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels + 1):
        lines.append(f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return lines


def bomb_manifest(levels: int, module: Path) -> str:
    """A manifest whose input_schema holds the bomb (as in the issue: 638 bytes,
    ~140 MB stored once expanded)."""
    data = module.read_bytes()
    return "\n".join(
        [
            "name: lol",
            "version: 1.0.0",
            "abi: component",
            f"module: {{cid: {cid_for_bytes(data)}, path: {module}}}",
            "input_schema:",
            "  type: object",
            "  x-lol:",  # an unknown keyword: a valid schema, which today's check passes
            *laughs(levels, indent="    "),
        ]
    )


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IONFLUX, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def admin(running: RunningHost) -> dict[str, str]:
    return token(running, *ADMIN)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- YAML expansion -----------------------------------------------------------------------


def test_billion_laughs_manifest_is_refused_by_ionflux_publish(tmp_path: Path, built: Path) -> None:
    manifest = tmp_path / "lol.yaml"
    # 10**6 strings once expanded: today's loader stores it (and serves it on every listing)
    manifest.write_text(bomb_manifest(5, built / "testing" / "echo.wasm"))
    out = cli(tmp_path / "data", "publish", str(manifest))
    assert out.returncode == 1, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr  # the one-line error every command gives
    assert lines[0].startswith(f"error: {manifest}")
    assert "max_alias_expansion = 100000" in lines[0]
    assert "raise documents.<limit>" in lines[0]
    listed = cli(tmp_path / "data", "transforms", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    # and a normal manifest still publishes
    assert cli(tmp_path / "data", "publish", str(MANIFESTS / "uppercase.yaml")).returncode == 0


async def test_billion_laughs_manifest_is_refused_by_the_host(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    module = TESTING / "echo.wasm"
    before = rss_mb()
    started = time.perf_counter()
    r = await http.post(
        "/transforms",
        json={
            "manifest": bomb_manifest(9, module),  # 10**10 strings once expanded
            "module_base64": base64.b64encode(module.read_bytes()).decode(),
        },
        headers=admin(running),
    )
    took = time.perf_counter() - started
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["kind"] == "manifest"
    # refused by the document's alias budget, or (the HTTP route still reading the
    # text with yaml.safe_load) by the manifest's bound on input_schema
    assert "max_alias_expansion" in detail["message"] or "input_schema" in detail["message"]
    listed = await http.get("/transforms", headers=admin(running))
    assert [t["name"] for t in listed.json()] == ["echo"]
    print(
        f"\nbillion-laughs manifest over HTTP: refused in {took * 1000:.1f} ms, "
        f"RSS {before:.0f} -> {rss_mb():.0f} MB (peak {peak_rss_mb():.0f} MB)"
    )
    await still_serves(running, http)


async def test_a_manifest_stored_before_the_bounds_is_never_parsed_again(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    # What today's host stored for the 638-byte manifest: its expansion, as JSON.
    huge_schema = {"type": "object", "$defs": {"l": [["lol"] * 1000] * 2000}}
    row = {
        "name": "old",
        "version": "1.0.0",
        "abi": "component",
        "module": {"cid": "bafkreiold", "path": None},
        "input_schema": huge_schema,
    }
    text = json.dumps(row)
    assert len(text) > 8 * 1024 * 1024
    db = sqlite3.connect(running.host.config.data_dir / "registry.sqlite3")
    with db:
        db.execute(
            "INSERT INTO transforms VALUES (?,?,?,?,?,?,?)",
            ("old", "1.0.0", "bafkreiold", "component", 1, text, time.time()),
        )
    db.close()
    listed = await http.get("/transforms", headers=admin(running))
    assert listed.status_code == 200
    assert sorted(t["name"] for t in listed.json()) == ["echo", "old"]
    assert len(listed.content) < 4096  # the summary, not the 8 MB
    from ionflux import ManifestError

    with pytest.raises(ManifestError, match="publish it again under a new version"):
        running.host.registry.get("old@1.0.0")
    await still_serves(running, http)


async def test_an_alias_bomb_graph_with_a_token_is_refused(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    graph = "\n".join(["name: lol", *laughs(9), "graph:", "  - {id: a, transform: echo}"])
    before = rss_mb()
    started = time.perf_counter()
    r = await http.post("/graphs", json={"graph": graph}, headers=admin(running))
    took = time.perf_counter() - started
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["kind"] == "graph_validation" and detail["limit"] == "max_alias_expansion"
    assert detail["problems"][0]["file"] == "<http>"
    assert "lol" not in running.engine.repository.names()
    print(
        f"\nbillion-laughs graph over HTTP: refused in {took * 1000:.1f} ms, "
        f"RSS {before:.0f} -> {rss_mb():.0f} MB"
    )
    await still_serves(running, http)


async def test_a_graph_past_the_document_size_is_refused_before_parsing(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    # 2 MiB: within the HTTP body limit (4 MiB), past documents.max_bytes (1 MiB)
    graph = (
        "name: big\ndescription: " + "x" * (2 * 1024 * 1024) + "\ngraph:\n"
        "  - {id: a, transform: echo}\n"
    )
    r = await http.post("/graphs", json={"graph": graph}, headers=admin(running))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["limit"] == "max_bytes" and detail["value"] == 1024 * 1024
    assert "big" not in running.engine.repository.names()
    await still_serves(running, http)


async def test_the_costliest_document_is_refused_while_the_host_answers(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    # Within max_bytes, every byte pair a node: the budget that takes longest to
    # reach (max_nodes, counted as the events arrive; parsed off the event loop).
    items = (1024 * 1024 - 64) // 2
    graph = "name: wide\nx: [" + "1," * items + "1]\ngraph:\n  - {id: a, transform: echo}\n"
    before = rss_mb()
    polls: list[float] = []

    async def poll() -> None:
        while True:
            started = time.perf_counter()
            r = await http.get("/healthz")
            assert r.status_code == 200
            polls.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    poller = asyncio.create_task(poll())
    started = time.perf_counter()
    r = await http.post("/graphs", json={"graph": graph}, headers=admin(running))
    took = time.perf_counter() - started
    poller.cancel()
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["limit"] == "max_nodes"
    print(
        f"\n1 MiB of nodes over HTTP: refused in {took * 1000:.0f} ms, RSS {before:.0f} -> "
        f"{rss_mb():.0f} MB, /healthz worst {max(polls, default=0) * 1000:.0f} ms "
        f"over {len(polls)} polls"
    )
    await still_serves(running, http)


def test_an_alias_bomb_in_the_configuration_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "ionflux.yaml"
    config.write_text("\n".join(["x-bomb:", *laughs(6, indent="  ")]) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert isinstance(caught.value.reason, DocumentTooLarge)
    assert caught.value.reason.limit == "max_alias_expansion"
    assert str(config) in str(caught.value)
    # and through a command, the one-line error
    data = tmp_path / "data"
    data.mkdir()
    (data / "ionflux.yaml").write_text(config.read_text())
    out = cli(data, "transforms")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "max_alias_expansion" in out.stderr


def test_an_alias_bomb_in_the_policy_file_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("\n".join([*laughs(6), "always_deny: *l6"]) + "\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(policy)
    assert isinstance(caught.value.__cause__, DocumentTooLarge)
    assert "max_alias_expansion = 100000" in str(caught.value)
    assert str(policy) in str(caught.value)


# -- templates ----------------------------------------------------------------------------

BOMBS = {
    "power": (
        "{{ trigger.input_data.n ** (trigger.input_data.n ** trigger.input_data.n) }}",
        "int_bits",
    ),
    "multiply": ("{{ trigger.input_data.text * 400000000 }}", "value_bytes"),
    "loops": (
        "{% for a in trigger.input_data.xs %}{% for b in trigger.input_data.xs %}"
        "{% for c in trigger.input_data.xs %}{{ c }}{% endfor %}{% endfor %}{% endfor %}",
        "steps",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BOMBS))
async def test_template_bombs_fail_the_run_and_the_host_serves_on(
    running: RunningHost, http: httpx.AsyncClient, case: str
) -> None:
    template, limit = BOMBS[case]
    graph = "\n".join(
        [
            f"name: bomb-{case}",
            "version: 1.0.0",
            "triggers:",
            f"  - {{type: webhook, config: {{path: /webhooks/invoke/bomb-{case}, method: POST,"
            " authentication_method: ionwall_jwt}}",
            "graph:",
            "  - id: boom",
            "    transform: echo",
            "    inputs:",
            f"      text: {json.dumps(template)}",
        ]
    )
    await deploy(running, graph)
    before = rss_mb()
    r = await http.post(
        f"/webhooks/invoke/bomb-{case}",
        json={"n": 9, "text": "lol", "xs": list(range(100))},
        headers=token(running, f"execute_graph:bomb-{case}"),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["overall_status"] == "failure"
    (error,) = body["error_details"]
    assert error["kind"] == "template_budget"
    assert error["node_id"] == "boom" and error["field"] == "inputs.text"
    assert error["limit"] == f"graph.template_max_{limit}"
    record = running.engine.history.find(body["execution_id"])
    assert record is not None and record.status == "failure"
    assert record.error_details and record.error_details[0]["kind"] == "template_budget"
    latency = await still_serves(running, http)
    print(
        f"\ntemplate {case}: RSS {before:.0f} -> {rss_mb():.0f} MB, "
        f"next call {latency * 1000:.0f} ms"
    )


# -- inputs against the transform's input_schema ----------------------------------------------

SHOUT_IN = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": False,
}


def publish_shout(running: RunningHost) -> None:
    data = (TESTING / "echo.wasm").read_bytes()
    manifest = Manifest.model_validate(
        {
            "name": "shout",
            "version": "1.0.0",
            "abi": "component",
            "module": {"cid": cid_for_bytes(data)},
            "input_schema": SHOUT_IN,
        }
    )
    running.host.publish_bytes(manifest, data)


async def test_node_inputs_are_checked_against_the_input_schema_at_deploy(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    publish_shout(running)
    graph = "name: literal\ngraph:\n  - {id: n, transform: shout, inputs: {text: 5}}\n"
    r = await http.post("/graphs", json={"graph": graph}, headers=admin(running))
    assert r.status_code == 422, r.text
    (problem,) = r.json()["detail"]["problems"]
    assert problem["node"] == "n" and problem["field"] == "inputs.text" and problem["line"] == 3
    assert "input_schema of shout@1.0.0: 5 is not of type 'string'" in problem["message"]
    await still_serves(running, http)


async def test_a_dry_run_checks_rendered_inputs_as_the_real_run_does(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    publish_shout(running)
    graph = (
        "name: dry\nversion: 1.0.0\ngraph:\n"
        "  - {id: n, transform: shout, inputs: {text: '{{ trigger.input_data.value }}'}}\n"
    )
    await deploy(running, graph)
    headers = token(running, "execute_graph:dry")
    dry = await http.post(
        "/graphs/dry/runs",
        json={"input": {"value": 5}, "mode": "dry_run_validate_only"},
        headers=headers,
    )
    assert dry.status_code == 200, dry.text
    result = dry.json()
    assert result["overall_status"] == "failure"  # it said "success" before
    (step,) = result["steps"]
    assert step["status"] == "failure" and step["error"]["kind"] == "invalid_input"
    assert step["error"]["field"] == "inputs.text"
    assert "5 is not of type 'string'" in step["error"]["message"]
    real = await http.post("/graphs/dry/runs", json={"input": {"value": 5}}, headers=headers)
    assert real.json()["overall_status"] == "failure"  # as the dry run said
    fine = await http.post(
        "/graphs/dry/runs",
        json={"input": {"value": "ok"}, "mode": "dry_run_validate_only"},
        headers=headers,
    )
    assert fine.json()["overall_status"] == "success"
    await still_serves(running, http)


# -- graph versions are immutable ---------------------------------------------------------------


async def test_a_deployed_graph_version_cannot_be_changed(
    running: RunningHost, http: httpx.AsyncClient
) -> None:
    text = "name: fixed\nversion: 2.0.0\ngraph:\n  - {id: a, transform: echo, inputs: {text: a}}\n"
    first = await http.post("/graphs", json={"graph": text}, headers=admin(running))
    assert first.status_code == 201 and first.json()["created"] is True
    again = await http.post("/graphs", json={"graph": text}, headers=admin(running))
    assert again.status_code == 201 and again.json()["created"] is False
    changed = text.replace("text: a", "text: b")
    refused = await http.post("/graphs", json={"graph": changed}, headers=admin(running))
    assert refused.status_code == 422, refused.text
    message = refused.json()["detail"]["problems"][0]["message"]
    assert "fixed@2.0.0 is already deployed with other text" in message
    assert "new version" in message
    bumped = await http.post(
        "/graphs", json={"graph": changed.replace("2.0.0", "2.0.1")}, headers=admin(running)
    )
    assert bumped.status_code == 201 and bumped.json()["created"] is True
    await still_serves(running, http)
