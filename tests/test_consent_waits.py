"""A run whose grant is missing waits, recorded ``awaiting_approval``: it survives
its host, goes on once the owner approves (CLI or HTTP), fails once they deny
(``consent_denied``) or once ``graph.approval_timeout_s`` runs out
(``approval_expired``). Real ``ionflux up`` processes, a real nats-server, the
real CLI; what ran is counted from the guest's own messages. Waiting is on
records and messages, with bounds that only stop a hang."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from conftest import make_config, on_nats
from ionflux.graph import RunHistory
from ionflux.http._hosting import RunningHost, start_host
from ionflux.http.testing import UpProcess
from ionflux.triggers import NatsServer
from nats.aio.client import Client
from test_durable_runs import client, prepare, until  # noqa: F401


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("ionflux")), "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def asking(name: str, subject: str) -> str:
    """One node that publishes: it needs publish_nats_topic, never granted here."""
    return "\n".join(
        [
            f"name: {name}",
            'version: "1.0.0"',
            "triggers:",
            "  - {type: manual}",
            f"  - {{type: webhook, config: {{path: /hooks/{name}, authentication_method: none}}}}",
            "graph:",
            "  - id: send",
            "    transform: nats-publish",
            f'    inputs: {{subject: "{subject}", payload: {{n: 1}}}}',
            "",
        ]
    )


def record(data_dir: Path, run_id: str) -> object:
    runs = RunHistory(data_dir / "runs.sqlite3", recover=False)
    try:
        return runs.get(run_id)
    finally:
        runs.close()


async def test_a_run_waiting_for_consent_survives_its_host_and_completes_after_approval(
    tmp_path: Path,
    nats_server: NatsServer,
    client: Client,  # noqa: F811
    built: Path,
) -> None:
    data = tmp_path / "host"
    subject = f"cw{uuid.uuid4().hex[:8]}.sent"
    prepare(data, nats_server)
    graph_file = tmp_path / "asks.yaml"
    graph_file.write_text(asking("asks", subject))
    deployed = cli(data, "graph", "deploy", str(graph_file))
    assert deployed.returncode == 0, deployed.stderr
    sent = await client.subscribe(subject)
    up = UpProcess(data, nats_url=nats_server.url).start()
    try:
        async with httpx.AsyncClient(base_url=up.url, timeout=30) as http:
            r = await http.post("/hooks/asks", json={}, headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        waiting = await until(
            lambda: (x := record(data, run_id)) and x.status == "awaiting_approval" and x,  # type: ignore[attr-defined]
            "the run to wait for consent",
        )
        consent_id = waiting.consent_id  # type: ignore[attr-defined]
        assert consent_id and waiting.lease_owner is None  # type: ignore[attr-defined]
    finally:
        up.kill()  # SIGKILL: nothing drains
    assert record(data, run_id).status == "awaiting_approval"  # type: ignore[union-attr,attr-defined]
    approved = cli(data, "consent", "approve", consent_id)
    assert approved.returncode == 0, approved.stderr
    up = UpProcess(data, nats_url=nats_server.url).start()
    try:
        await until(
            lambda: record(data, run_id).status == "success",  # type: ignore[union-attr,attr-defined]
            "the approved run to end",
        )
        msg = await sent.next_msg(timeout=30)
        assert msg.data == b'{"n":1}'
        await client.flush()
        assert sent.pending_msgs == 0  # it ran once
    finally:
        up.terminate()


@pytest.fixture
async def serving(
    tmp_path: Path,
    nats_server: NatsServer,
    built: Path,
) -> AsyncIterator[tuple[RunningHost, httpx.AsyncClient]]:
    data = tmp_path / "host"
    prepare(data, nats_server)
    config = make_config(data)
    config = on_nats(config, nats_server, graph={"resume_interval_s": 0.2})
    running = await start_host(config, require_token=False)
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as http:
        yield running, http
    await running.aclose()


def deploy(running: RunningHost, text: str) -> None:
    """Deploys without approving anything: its runs need consent."""
    plan = running.engine.validate(text)
    running.engine.repository.deploy(text, plan.name, plan.graph.version, "test")


async def test_the_status_url_shows_the_wait_and_denying_fails_the_run(
    serving: tuple[RunningHost, httpx.AsyncClient],
) -> None:
    running, http = serving
    deploy(running, asking("denied", f"cw{uuid.uuid4().hex[:8]}.x"))
    r = await http.post("/graphs/denied/runs", json={}, headers={"Prefer": "respond-async"})
    assert r.status_code == 202
    url = r.json()["status_url"]

    async def status() -> dict:  # type: ignore[type-arg]
        return (await http.get(url)).json()  # type: ignore[no-any-return]

    shown = await status()
    history = running.engine.history
    run_id = r.json()["run_id"]
    await until(lambda: history.get(run_id).status == "awaiting_approval", "the wait")  # type: ignore[union-attr]
    shown = await status()
    assert shown["status"] == "awaiting_approval" and shown["consent_id"]
    denied = await http.post(f"/ionwall/consents/{shown['consent_id']}/deny")
    assert denied.status_code == 200, denied.text
    ended = await until(
        lambda: (x := history.get(run_id)) and x.status == "failure" and x, "the denied run to fail"
    )
    assert [e["kind"] for e in ended.error_details or []] == ["consent_denied"]


async def test_a_wait_past_approval_timeout_fails_approval_expired(
    serving: tuple[RunningHost, httpx.AsyncClient],
) -> None:
    running, http = serving
    running.engine.config = running.engine.config.model_copy(
        update={"graph": running.engine.config.graph.model_copy(update={"approval_timeout_s": 0.5})}
    )
    deploy(running, asking("late", f"cw{uuid.uuid4().hex[:8]}.x"))
    r = await http.post("/graphs/late/runs", json={})
    assert r.json()["overall_status"] == "awaiting_approval"
    run_id = r.json()["execution_id"]
    history = running.engine.history
    ended = await until(
        lambda: (x := history.get(run_id)) and x.status == "failure" and x, "the wait to expire"
    )
    assert [e["kind"] for e in ended.error_details or []] == ["approval_expired"]


async def test_the_cli_prints_the_prompt_exits_non_zero_and_resumes_the_run_here(
    tmp_path: Path,
    nats_server: NatsServer,
    built: Path,
) -> None:
    """``ionflux graph run`` keeps printing the prompt and exiting non-zero; its run
    stays recorded waiting, and ``ionflux runs resume --drive`` ends it here."""
    data = tmp_path / "host"
    prepare(data, nats_server)
    graph_file = tmp_path / "here.yaml"
    graph_file.write_text(
        "\n".join(
            [
                "name: here",
                'version: "1.0.0"',
                "graph:",
                "  - id: say",
                "    transform: echo",
                "    inputs: {text: hi}",
                '    ionwall_approval_scope: "read_pod_data:reports/*"',
                "",
            ]
        )
    )
    assert cli(data, "graph", "deploy", str(graph_file)).returncode == 0
    asked = cli(data, "graph", "run", "here")
    assert asked.returncode != 0
    assert "ionflux consent approve" in asked.stdout and "awaiting_approval" in asked.stdout
    run_id = asked.stdout.split("run: ")[1].split()[0]
    waiting = record(data, run_id)
    assert waiting.status == "awaiting_approval"  # type: ignore[attr-defined]
    consent_id = waiting.consent_id  # type: ignore[attr-defined]
    assert cli(data, "consent", "approve", consent_id).returncode == 0
    resumed = cli(data, "runs", "resume", run_id, "--drive")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert record(data, run_id).status == "success"  # type: ignore[attr-defined]
    assert "status: success" in resumed.stdout


async def test_a_run_resumed_after_approval_announces_its_end(
    serving: tuple[RunningHost, httpx.AsyncClient], nats_server: NatsServer
) -> None:
    """Whoever waits on a graph's completion events sees the end of a run that
    waited for consent, as of any other run."""
    import json

    import nats

    running, http = serving
    deploy(running, asking("approved", f"cw{uuid.uuid4().hex[:8]}.x"))
    nc = await nats.connect(nats_server.url, **nats_server.connect_options())
    try:
        events = await nc.subscribe("ionflux.graph.approved.completion")
        await nc.flush()
        r = await http.post("/graphs/approved/runs", json={})
        assert r.json()["overall_status"] == "awaiting_approval"
        run_id = r.json()["execution_id"]
        consent = running.engine.history.get(run_id).consent_id  # type: ignore[union-attr]
        approved = await http.post(f"/ionwall/consents/{consent}/approve", json={})
        assert approved.status_code == 200, approved.text
        while True:  # the first run's own event (awaiting_approval) may come first
            event = json.loads((await events.next_msg(timeout=60)).data)
            if event["overall_status"] != "awaiting_approval":
                break
        assert (event["execution_id"], event["overall_status"]) == (run_id, "success")
        assert event["trigger"] == "resume"
    finally:
        await nc.close()
