"""Logs follow a run: ``ionflux up --log-format json`` writes one JSON object a
line, and the lines written during a run carry its ``run_id``, ``graph`` and, in
a guest call, the ``node`` (and ``grant_id`` when the run has one); the text
format (the default) shows the same fields after the message."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ionflux
import pytest
from conftest import TESTING, GuestPublisher, make_config
from ionflux import _logging
from ionflux.graph import Engine, GraphRepository, HostInvoker, RunHistory
from ionflux.host import Host
from ionflux.http.testing import UpProcess, consent_to, publish_wasm
from ionflux.manifest import Manifest
from ionflux.store import cid_for_bytes
from ionflux.triggers import EngineRunner

LOGGED = """
name: logged
version: "1.0.0"
triggers:
  - {type: webhook, config: {path: /webhooks/invoke/logged, authentication_method: none}}
input_schema: {type: object}
graph:
  - id: say
    transform: all-imports
    inputs: {call: log, level: info, message: "hello from say"}
"""


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    """``_logging.configure`` as ``ionflux up`` calls it, its stream captured;
    the root logger as it was afterwards."""
    root = logging.getLogger()
    handlers, level, enabled = list(root.handlers), root.level, _logging.enabled
    stream = io.StringIO()
    handler = _logging.configure("json")
    handler.setStream(stream)  # type: ignore[attr-defined]
    yield stream, handler
    root.removeHandler(handler)
    for old in handlers:
        root.addHandler(old)
    root.setLevel(level)
    _logging.enabled = enabled


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_json_lines_of_a_run_carry_its_run_id_graph_and_node(
    host: Host,
    publish_guest: GuestPublisher,
    tmp_path: Path,
    captured: tuple[io.StringIO, logging.Handler],
) -> None:
    stream, handler = captured
    publish_guest(host, "all-imports", scopes=["emit_log:*"])
    with pytest.raises(ionflux.ConsentRequired) as asked:
        host.invoke("all-imports", {"call": "log", "level": "info", "message": "consent"})
    host.ionwall.approve(asked.value.request.id)
    engine = Engine(
        host.config,
        invoker=HostInvoker(host),
        repository=GraphRepository(tmp_path / "graphs.sqlite3", pod=host.pod),
        history=RunHistory(tmp_path / "runs.sqlite3"),
        pod=host.pod,
    )
    graph = tmp_path / "logged.yaml"
    graph.write_text(LOGGED)
    stream.truncate(0)
    try:
        result = await EngineRunner(engine).run(str(graph), {})
        logging.getLogger("ionflux.test").info("after the run")
    finally:
        engine.close()
    assert result.overall_status == "success", result.error_details
    written = lines(stream.getvalue())  # every line parses
    said = [e for e in written if e["message"] == "all-imports: hello from say"]
    assert len(said) == 1, written
    assert said[0]["run_id"] == result.execution_id
    assert said[0]["graph"] == "logged"
    assert said[0]["node"] == "say"
    assert said[0]["logger"] == "ionflux.guest" and said[0]["level"] == "INFO"
    assert "time" in said[0]
    # Outside the run: no run fields.
    after = [e for e in written if e["message"] == "after the run"]
    assert after and "run_id" not in after[0] and "node" not in after[0]

    # The text format shows the same fields after the message.
    handler.setFormatter(_logging.formatter("text"))
    stream.truncate(0)
    stream.seek(0)
    with _logging.run_scope("01RUN", "g"), _logging.bind(node="n1", grant_id="gr1"):
        logging.getLogger("ionflux.test").warning("inside")
    assert (
        stream.getvalue()
        .rstrip()
        .endswith("WARNING ionflux.test: inside run_id=01RUN graph=g node=n1 grant_id=gr1")
    )


def prepare(data_dir: Path) -> None:
    """A data directory with ``all-imports`` (may log) and the graph ``logged``
    deployed behind an open webhook, its consent given."""
    data_dir.mkdir(parents=True, exist_ok=True)
    host = Host(make_config(data_dir))
    data = (TESTING / "all-imports.wasm").read_bytes()
    manifest = Manifest.model_validate(
        {
            "name": "all-imports",
            "version": "0.1.0",
            "abi": "component",
            "module": {"cid": cid_for_bytes(data)},
            "scopes": ["emit_log:*"],
        }
    )
    host.publish_bytes(manifest, data)
    publish_wasm(host, "echo", TESTING / "echo.wasm")
    engine = Engine.for_host(host)
    plan = engine.validate(LOGGED)
    engine.repository.deploy(LOGGED, plan.name, plan.graph.version, "test")
    consent_to(host.ionwall, engine, "logged", ["emit_log:*"])
    engine.close()
    host.close()


def test_ionflux_up_log_format_json_writes_json_lines_that_follow_a_run(
    tmp_path: Path, built: Path
) -> None:
    data = tmp_path / "data"
    prepare(data)
    up = UpProcess(data, extra=["--log-format", "json"]).start()
    try:
        r = httpx.post(f"{up.url}/webhooks/invoke/logged", json={}, timeout=30)
        assert r.status_code == 200, r.text
        run_id = r.json()["execution_id"]
    finally:
        assert up.terminate() == 0
    # stdout (the announce lines) and stderr (the log) share the file.
    text = up.log.read_text()
    logged = [line for line in text.splitlines() if not line.startswith("ionflux up:")]
    entries = [json.loads(line) for line in logged if line.strip()]  # every log line parses
    said = [e for e in entries if e.get("logger") == "ionflux.guest"]
    assert len(said) == 1, text
    assert said[0]["run_id"] == run_id
    assert said[0]["graph"] == "logged"
    assert said[0]["node"] == "say"
    assert said[0]["grant_id"]  # the run's grant
    assert said[0]["message"] == "all-imports: hello from say"
