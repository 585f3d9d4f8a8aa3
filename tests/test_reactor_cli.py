"""``ionflux plan`` and ``ionflux agent`` as a person types them (real processes):
the README's session, on the shipped example plan and agent definitions."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import REPO, make_config
from ionflux.host import Host
from test_consent_waits import cli
from test_graph_examples import STANDARD, publish_built

PLANS = REPO / "graphs" / "plans"


def test_the_readme_session(tmp_path: Path, built: Path) -> None:
    data = tmp_path / "host"
    host = Host(make_config(data))
    for name in STANDARD:
        publish_built(host, name)
    host.close()
    assert cli(data, "graph", "deploy", str(REPO / "graphs" / "digest.yaml")).returncode == 0
    deployed = cli(data, "agent", "deploy", str(PLANS / "headline_agent.yaml"))
    assert deployed.returncode == 0, deployed.stderr
    assert "headline_agent: active" in deployed.stdout

    params = json.dumps({"title": "notes", "text": "one two"})
    asked = cli(data, "plan", "run", str(PLANS / "daily_digest.yaml"), "--params", params)
    assert asked.returncode == 1 and "awaiting_approval" in asked.stdout
    assert "ION Reactor Agent wants to execute Master Plan: 'daily_digest'" in asked.stdout
    assert "orchestrate 2 agents: digest, headline_agent" in asked.stdout
    consent_id = re.search(r"ionflux consent approve (c-[0-9a-f]+)", asked.stdout)
    assert consent_id is not None
    assert cli(data, "consent", "approve", consent_id.group(1)).returncode == 0
    ran = cli(data, "plan", "run", "daily_digest", "--params", params, "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    result = json.loads(ran.stdout)
    assert result["output"]["overall_status"] == "success"
    runs = cli(data, "runs", "list").stdout
    assert runs.count("subgraph") == 3  # a child run per step: digest twice, the headline

    updated = cli(data, "agent", "update", "headline_agent", str(PLANS / "headline_agent_v2.yaml"))
    assert updated.returncode == 0 and "headline_agent: updating, serving 1.0.0" in updated.stdout
    waiting = re.search(r"ionflux consent approve (c-[0-9a-f]+)", updated.stdout)
    assert waiting is not None
    assert cli(data, "consent", "approve", waiting.group(1)).returncode == 0
    assert "active, serving 2.0.0" in cli(data, "agent", "show", "headline_agent").stdout
    assert "active, serving 1.0.0" in cli(data, "agent", "rollback", "headline_agent").stdout
    retired = cli(data, "agent", "retire", "headline_agent")
    assert "headline_agent: retired" in retired.stdout
    refused = cli(data, "plan", "run", "daily_digest", "--params", params)
    assert refused.returncode == 1 and "agent 'headline_agent' is retired" in refused.stdout
