"""Step results by content: a `cache: content` node whose transform is pure reuses an
earlier step's output for the same module, real input, grant and limits, without a
guest call; anything else runs the guest as before."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTING, make_config
from ionflux import GraphValidationError, ManifestError
from ionflux.config import Config
from ionflux.graph import Engine, GraphRepository, HostInvoker, Invoked, RunHistory
from ionflux.graph._seams import Authorization, NoAuthorizer
from ionflux.host import Host
from ionflux.manifest import Manifest, parse_manifest
from ionflux.store import cid_for_bytes

from ionwall import CallContext, Gate

GRAPH = """
name: cached
graph:
  - id: a
    transform: {transform}
    cache: content
    inputs:
      text: "{{{{ trigger.input_data.text }}}}"
      password: "{{{{ trigger.input_data.password }}}}"
  - id: b
    transform: echo
    inputs: {{again: "{{{{ nodes.a.outputs.text }}}}"}}
"""


class Counting(HostInvoker):
    """The real host's invoker, counting the calls that reach the host (each one a
    guest call in a fresh sandbox), per transform."""

    def __init__(self, host: Host):
        super().__init__(host)
        self.calls: dict[str, int] = {}

    def invoke(self, transform: Any, input: Any, *, ctx: CallContext, gate: Gate | None) -> Invoked:
        self.calls[transform.name] = self.calls.get(transform.name, 0) + 1
        return super().invoke(transform, input, ctx=ctx, gate=gate)


class FixedGrant(NoAuthorizer):
    """Stands in for IONWALL's graph-level check (a real grant needs a consent
    flow): every run is under ``grant_id``. The echo guest makes no import call, so
    no gate is asked either way."""

    def __init__(self, grant_id: str | None):
        self.grant_id = grant_id

    def authorize(self, **_: Any) -> Authorization:
        return Authorization(grant_id=self.grant_id)


def _publish(
    host: Host,
    name: str,
    *,
    pure: bool,
    limits: dict[str, int] | None = None,
    version: str = "0.1.0",
) -> None:
    data = (TESTING / "echo.wasm").read_bytes()
    manifest = Manifest.model_validate(
        {
            "name": name,
            "version": version,
            "abi": "component",
            "module": {"cid": cid_for_bytes(data)},
            "pure": pure,
            "limits": limits or {},
        }
    )
    host.publish_bytes(manifest, data)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path / "data")


@pytest.fixture
def host(config: Config, built: Path) -> Iterator[Host]:
    h = Host(config)
    _publish(h, "echo", pure=True)
    _publish(h, "echo-impure", pure=False)
    yield h
    h.close()


def _engine(host: Host, where: Path, grant: str | None = None) -> tuple[Engine, Counting]:
    invoker = Counting(host)
    engine = Engine(
        host.config,
        invoker=invoker,
        repository=GraphRepository(where / "graphs.sqlite3", pod=host.pod),
        history=RunHistory(where / "runs.sqlite3"),
        pod=host.pod,
        authorizer=FixedGrant(grant),
    )
    return engine, invoker


def _graph(tmp_path: Path, transform: str = "echo") -> str:
    path = tmp_path / "cached.yaml"
    path.write_text(GRAPH.format(transform=transform))
    return str(path)


async def test_a_pure_step_with_the_same_input_and_grant_calls_the_guest_once(
    host: Host, tmp_path: Path
) -> None:
    graph = _graph(tmp_path)
    engine, calls = _engine(host, tmp_path, grant="grant-1")
    try:
        first = await engine.run(graph, {"text": "hello", "password": "s3cret"})
        second = await engine.run(graph, {"text": "hello", "password": "s3cret"})
    finally:
        engine.close()
    assert first.ok and second.ok, (first.error_details, second.error_details)
    # `a` (cached) called once; `b` (not cached) on every run.
    assert calls.calls == {"echo": 3}
    assert not first.step("a").cached and first.step("a").fuel_used > 0
    hit = second.step("a")
    assert hit.cached and hit.fuel_used == 0
    assert hit.outputs == first.step("a").outputs == {"text": "hello", "password": "s3cret"}
    assert not second.step("b").cached
    assert second.step("b").outputs == {"again": "hello"}
    # Recorded: the run history says so (what `ionflux runs show --json` and the
    # HTTP run status print), and the cached step's outputs are there to resume from.
    history = RunHistory(tmp_path / "runs.sqlite3")
    try:
        rows = {s.node_id: s for s in history.steps(second.execution_id)}
    finally:
        history.close()
    assert rows["a"].cached and not rows["b"].cached
    from click.testing import CliRunner
    from ionflux.cli import main

    shown = CliRunner().invoke(
        main, ["--data-dir", str(tmp_path), "runs", "show", second.execution_id]
    )
    assert shown.exit_code == 0, shown.output
    lines = {line.split()[0]: line for line in shown.output.splitlines() if line.strip()}
    assert "success (cached)" in lines["a"] and "cached" not in lines["b"]
    assert rows["a"].fuel_used == 0


async def test_the_cache_outlives_the_engine_and_misses_on_another_input_grant_or_secret(
    host: Host, tmp_path: Path
) -> None:
    graph = _graph(tmp_path)
    engine, calls = _engine(host, tmp_path, grant="grant-1")
    try:
        await engine.run(graph, {"text": "hello", "password": "one"})
        assert calls.calls == {"echo": 2}
        other = await engine.run(graph, {"text": "bye", "password": "one"})
        assert calls.calls == {"echo": 4}  # another input: called again
        assert not other.step("a").cached
        # Two secrets the run records mask alike are two inputs: called again.
        secret = await engine.run(graph, {"text": "hello", "password": "two"})
        assert calls.calls == {"echo": 6}
        assert not secret.step("a").cached
    finally:
        engine.close()
    history = RunHistory(tmp_path / "runs.sqlite3")
    try:
        first_rows = history.steps(secret.execution_id)
    finally:
        history.close()
    assert "two" not in (first_rows[0].inputs_preview or "")  # masked in the record
    # Another engine over the same history (a restart): still a hit.
    engine, calls = _engine(host, tmp_path, grant="grant-1")
    try:
        again = await engine.run(graph, {"text": "hello", "password": "one"})
        assert again.step("a").cached
        assert calls.calls == {"echo": 1}  # b only
    finally:
        engine.close()
    # Another grant: called again.
    engine, calls = _engine(host, tmp_path, grant="grant-2")
    try:
        regranted = await engine.run(graph, {"text": "hello", "password": "one"})
        assert not regranted.step("a").cached
        assert calls.calls == {"echo": 2}
    finally:
        engine.close()


async def test_nodes_without_cache_and_impure_lookalikes_always_call(
    host: Host, tmp_path: Path
) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(
        "name: plain\ngraph:\n  - id: a\n    transform: echo\n"
        "    inputs: {text: '{{ trigger.input_data.text }}'}\n"
    )
    engine, calls = _engine(host, tmp_path, grant="grant-1")
    try:
        for _ in range(3):
            result = await engine.run(str(path), {"text": "same"})
            assert result.ok and not result.step("a").cached
    finally:
        engine.close()
    assert calls.calls == {"echo": 3}


def test_cache_content_on_a_transform_that_is_not_pure_is_refused(
    host: Host, tmp_path: Path
) -> None:
    engine, _ = _engine(host, tmp_path)
    try:
        with pytest.raises(GraphValidationError) as caught:
            engine.validate(GRAPH.format(transform="echo-impure"), "g.yaml")
    finally:
        engine.close()
    (problem,) = caught.value.problems
    assert (problem.node, problem.field) == ("a", "cache")
    assert "'echo-impure' is not declared pure" in problem.message


def test_pure_with_a_scope_that_is_not_a_read_is_refused_at_publish(
    host: Host, tmp_path: Path
) -> None:
    data = (TESTING / "echo.wasm").read_bytes()
    (tmp_path / "echo.wasm").write_bytes(data)
    manifest = tmp_path / "writer.yaml"
    manifest.write_text(
        "name: writer\nversion: 0.1.0\nabi: component\n"
        f"module: {{cid: {cid_for_bytes(data)}, path: echo.wasm}}\n"
        "pure: true\nscopes: ['read_pod_data:notes/*', 'write_pod_data:notes/*']\n"
    )
    with pytest.raises(ManifestError) as caught:
        host.publish(manifest)
    assert caught.value.field == "pure"
    assert "'write_pod_data:notes/*' is not one" in str(caught.value)
    # Read scopes only: accepted.
    ok = parse_manifest(
        {
            "name": "reader",
            "version": "0.1.0",
            "abi": "component",
            "module": {"cid": cid_for_bytes(data)},
            "pure": True,
            "scopes": ["read_pod_data:notes/*", "read_config:*", "emit_log:info"],
        }
    )
    assert ok.pure


async def test_a_limit_change_is_another_entry(host: Host, tmp_path: Path) -> None:
    graph = _graph(tmp_path)
    engine, calls = _engine(host, tmp_path, grant="grant-1")
    try:
        await engine.run(graph, {"text": "hello", "password": "x"})
    finally:
        engine.close()
    # The same module under a new version with another fuel limit (a version is
    # immutable): the name runs the new version, under other limits.
    _publish(host, "echo", pure=True, limits={"fuel": 10**8}, version="0.2.0")
    engine, calls = _engine(host, tmp_path, grant="grant-1")
    try:
        again = await engine.run(graph, {"text": "hello", "password": "x"})
    finally:
        engine.close()
    assert again.step("a").target == "echo@0.2.0"
    assert not again.step("a").cached
    assert calls.calls == {"echo": 2}


def test_an_older_run_history_gains_the_cache_when_opened(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "runs.sqlite3")
    db.executescript(
        "CREATE TABLE run_steps (step_run_id TEXT PRIMARY KEY, run_id TEXT NOT NULL,"
        " node_id TEXT NOT NULL, target TEXT NOT NULL, status TEXT NOT NULL,"
        " start_time REAL, end_time REAL, attempts INTEGER NOT NULL DEFAULT 0,"
        " inputs_preview TEXT, inputs_cid TEXT, outputs_preview TEXT, outputs_cid TEXT,"
        " error_message TEXT, error_json TEXT, fuel_used INTEGER NOT NULL DEFAULT 0,"
        " child_run_id TEXT);"
        "INSERT INTO run_steps (step_run_id, run_id, node_id, target, status)"
        " VALUES ('r.a', 'r', 'a', 'echo@0.1.0', 'success');"
    )
    db.commit()
    db.close()
    history = RunHistory(tmp_path / "runs.sqlite3")
    try:
        (old,) = history.steps("r")
        assert not old.cached and old.cache_key is None
        assert history.cached_outputs("nothing") is None
    finally:
        history.close()


async def test_past_the_entry_cap_the_oldest_entry_goes(host: Host, tmp_path: Path) -> None:
    graph = _graph(tmp_path)
    settings = host.config.graph.model_copy(update={"content_cache_entries": 1})
    config = host.config.model_copy(update={"graph": settings})
    invoker = Counting(host)
    engine = Engine(
        config,
        invoker=invoker,
        repository=GraphRepository(tmp_path / "graphs.sqlite3", pod=host.pod),
        history=RunHistory(tmp_path / "runs.sqlite3"),
        pod=host.pod,
        authorizer=FixedGrant("grant-1"),
    )
    try:
        await engine.run(graph, {"text": "first", "password": "x"})
        await engine.run(graph, {"text": "second", "password": "x"})  # evicts "first"
        assert (await engine.run(graph, {"text": "second", "password": "x"})).step("a").cached
        assert not (await engine.run(graph, {"text": "first", "password": "x"})).step("a").cached
    finally:
        engine.close()
    assert invoker.calls == {"echo": 4 + 3}  # a: first, second, first again; b: every run


async def test_a_hit_under_a_real_grant_asks_no_gate(host: Host, tmp_path: Path) -> None:
    # The real IONWALL: the first run waits for consent, the owner approves, the
    # second run's read is gated (an audit entry), the third is a hit: no call, no
    # gate, no audit entry, under the same grant.
    from ionflux.graph import IonwallAuthorizer

    data = (TESTING / "all-imports.wasm").read_bytes()
    host.publish_bytes(
        Manifest.model_validate(
            {
                "name": "reader",
                "version": "0.1.0",
                "abi": "component",
                "module": {"cid": cid_for_bytes(data)},
                "pure": True,
                "scopes": ["read_config:greeting"],
                "config": {"greeting": "hi"},
            }
        ),
        data,
    )
    path = tmp_path / "reader.yaml"
    path.write_text(
        "name: reader_graph\ngraph:\n  - id: a\n    transform: reader\n    cache: content\n"
        "    inputs: {call: config, key: greeting}\n"
    )
    wall = host.ionwall
    invoker = Counting(host)
    engine = Engine(
        host.config,
        invoker=invoker,
        repository=GraphRepository(tmp_path / "graphs.sqlite3", pod=host.pod),
        history=RunHistory(tmp_path / "runs.sqlite3"),
        pod=host.pod,
        authorizer=IonwallAuthorizer(wall),
    )

    def reads() -> list[Any]:
        entries = wall.audit_tail(1000)
        return [e for e in entries if e.scope == "read_config:greeting" and e.node_id == "a"]

    try:
        waiting = await engine.run(str(path), {})
        assert waiting.overall_status == "awaiting_approval"
        [request] = wall.consents()
        wall.approve(request.id)
        called = await engine.run(str(path), {})
        assert called.ok, called.error_details
        assert called.step("a").outputs == {"ok": "hi"} and not called.step("a").cached
        wall.flush()
        gated = reads()
        assert [e.decision for e in gated] == ["allow"]
        hit = await engine.run(str(path), {})
        wall.flush()
    finally:
        engine.close()
    assert hit.ok and hit.step("a").cached and hit.step("a").outputs == {"ok": "hi"}
    assert invoker.calls == {"reader": 1}
    assert reads() == gated  # the gate was not asked again
