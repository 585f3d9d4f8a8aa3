"""A bounded fuzz run of the host's own OpenAPI (schemathesis), against a real
``ionflux up`` (uvicorn, its own nats-server): a few hundred generated
requests, valid and invalid for the schema (schemathesis' positive and
negative modes), with an owner's token and without one. None may
be answered 5xx, and the host still runs a normal call afterwards.

The cases are derandomized (the same ones on every run), so a failure found
here is found again; ``FUZZ_CASES`` is the whole budget, shared among the
operations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from conftest import TESTING, make_config
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from ionflux.graph import Engine
from ionflux.host import Host
from ionflux.http.testing import UpProcess, chain_graph, publish_wasm
from schemathesis import GenerationMode

from ionwall import Ionwall

FUZZ_CASES = 400
HOOK = "/webhooks/invoke/digest"
#: An owner's token: every area of the API, so the cases reach the routes' logic.
OWNER = ["read_host:*", "execute_graph:*", "manage_agent_lifecycle:*", "manage_ionwall:*"]


def prepare(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    host = Host(make_config(data))
    publish_wasm(host, "echo", TESTING / "echo.wasm")
    engine = Engine.for_host(host)
    text = chain_graph(
        "digest",
        triggers=[
            "{type: manual}",
            f"{{type: webhook, config: {{path: {HOOK}, method: POST}}}}",
        ],
    )
    plan = engine.validate(text)
    engine.repository.deploy(text, plan.name, plan.graph.version, "fuzz")
    engine.close()
    host.close()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, built: Path) -> Any:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    prepare(data)
    with UpProcess(data) as process:
        yield process


def test_the_openapi_fuzzed_gets_no_5xx_and_the_host_still_serves(up: UpProcess) -> None:
    with Ionwall(up.data_dir / "ionwall") as wall:
        owner = {"Authorization": f"Bearer {wall.issue_token(OWNER).token}"}
        runner = {"Authorization": f"Bearer {wall.issue_token(['execute_graph:digest']).token}"}
    spec = httpx.get(f"{up.url}/openapi.json", headers=owner, timeout=30).json()
    assert HOOK in spec["paths"]  # the deployed webhook is fuzzed too
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    per_operation = max(5, FUZZ_CASES // len(operations))
    failures: list[str] = []
    calls: list[int] = []

    for operation in operations:
        cases = operation.as_strategy() | operation.as_strategy(GenerationMode.NEGATIVE)

        @given(case=cases, anonymous=st.booleans())
        @settings(
            max_examples=per_operation,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any, anonymous: bool) -> None:
            headers = {} if anonymous else owner
            response = case.call(base_url=up.url, headers=headers, timeout=30)
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}"
                )
            assert "Traceback" not in response.text

        fuzz()
    print(f"\n[figures] OpenAPI fuzz: {len(calls)} cases over {len(operations)} operations")
    assert not failures, "\n".join(failures)
    assert len(calls) >= 200
    # The host still serves a normal call (the timeout bounds a frozen host).
    r = httpx.post(f"{up.url}{HOOK}", json={"text": "after"}, headers=runner, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["output"] == {"text": "after"}
    assert httpx.get(f"{up.url}/healthz", timeout=10).json()["status"] == "ok"
