"""The example graphs in graphs/ and the seed's master-plan graph, through the real
host, registry, pod and IONWALL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BUILD, MANIFESTS, REPO, make_config
from ionflux import GraphValidationError
from ionflux.config import Config
from ionflux.graph import Engine, IonwallAuthorizer
from ionflux.host import Host
from ionflux.manifest import load_manifest
from ionflux.reactor import Reactor
from ionflux.store import cid_for_bytes

from ionwall import Ionwall

GRAPHS = REPO / "graphs"
SEED = REPO / "tests" / "fixtures" / "graphs" / "ion_reactor_execute_master_plan_fluxgraph.yaml"
EXAMPLE = GRAPHS / "ion_reactor_execute_master_plan.yaml"  # the seed, its inputs adapted
SEED_NAMES = {
    "FetchFromIONPOD_Transform_IONWALL": "pod-fetch",
    "StoreToIONPOD_Transform_IONWALL": "pod-store",
    "IPC_NATS_Publish_Transform": "nats-publish",
    "MasterPlanExecutor_Transform_IONFLUXController": "json-path",
}


class RecordingBus:
    """Stands in for NATS (the triggers' tests run a real nats-server): keeps what
    the bus import publishes."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, subject: str, payload: bytes) -> None:
        self.messages.append((subject, payload))


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    base = make_config(tmp_path_factory.mktemp("graph-examples") / "data")
    graph = base.graph.model_copy(update={"transform_names": SEED_NAMES})
    return base.model_copy(update={"graph": graph})


@pytest.fixture(scope="module")
def bus() -> RecordingBus:
    return RecordingBus()


@pytest.fixture(scope="module")
def wall(config: Config) -> Iterator[Ionwall]:
    with Ionwall(config.data_dir / "ionwall") as w:
        yield w


@pytest.fixture(scope="module")
def host(config: Config, built: Path, bus: RecordingBus) -> Iterator[Host]:
    h = Host(config, bus=bus)
    for name in STANDARD:
        publish_built(h, name)
    yield h
    h.close()


STANDARD = (
    "pod-fetch",
    "pod-store",
    "nats-publish",
    "json-path",
    "template",
    "text-stats",
    "uppercase",
)


def publish_built(host: Host, name: str) -> None:
    """Publishes the standard transform's manifest with the module as built here:
    these tests pin what a graph does with the transforms, not their bytes (the
    runtime's tests check that manifests name the CIDs the build gives)."""
    manifest = load_manifest(MANIFESTS / f"{name}.yaml")
    data = (BUILD / f"{name}.wasm").read_bytes()
    module = manifest.module.model_copy(update={"cid": cid_for_bytes(data)})
    host.publish_bytes(manifest.model_copy(update={"module": module}), data)


@pytest.fixture
def engine(host: Host, wall: Ionwall) -> Iterator[Engine]:
    eng = Engine.for_host(host, authorizer=IonwallAuthorizer(wall))
    reactor = Reactor(eng, wall=wall, local_files=True)  # host-native nodes, one consent
    yield eng
    reactor.close()
    eng.close()


def test_seed_graph_as_written_does_not_fit_the_real_transforms_inputs(engine: Engine) -> None:
    # The seed names conceptual transforms; mapped to the real ones its nodes pass
    # inputs they do not take (`cid` where pod-fetch wants `reference`, …). A run
    # would fail at the first node, so validation says so, node by node.
    with pytest.raises(GraphValidationError) as caught:
        engine.validate(SEED.read_text(), str(SEED))
    found = {(p.node, p.field) for p in caught.value.problems}
    assert found == {
        ("fetch_master_plan_definition", "inputs"),
        ("fetch_plan_parameters_conditional", "inputs"),
        ("execute_workflow_steps", "inputs"),
        ("store_step_results_summary", "inputs"),
        ("publish_plan_completion_event", "inputs"),
    }
    first = caught.value.problems[0]
    assert first.line == 35
    assert "does not match the input_schema of pod-fetch@0.1.0" in first.message
    assert "'reference' is a required property" in first.message


def test_adapted_seed_graph_validates_through_the_registry(engine: Engine) -> None:
    plan = engine.validate(EXAMPLE.read_text(), str(EXAMPLE))
    assert plan.nodes["fetch_master_plan_definition"].target.startswith("pod-fetch@")
    assert plan.nodes["execute_workflow_steps"].target == "master-plan-executor@1.0.0"
    # the seed's completion subject is the host's to publish: the Reactor does
    assert plan.nodes["publish_plan_completion_event"].target.startswith("reactor-plan-completion@")
    mapped = {"pod-fetch", "pod-store"}  # the Reactor's host-native nodes ask no manifest scope
    wanted = {s for n in mapped for s in load_manifest(MANIFESTS / f"{n}.yaml").scopes}
    assert plan.manifest_scopes == sorted(wanted)


async def test_digest_example(engine: Engine, wall: Ionwall) -> None:
    path = str(GRAPHS / "digest.yaml")
    text = "one two three\nfour five"
    result = await engine.run(path, {"title": "weekly notes", "text": text, "tags": ["ops"]})
    assert result.overall_status == "success", result.error_details
    assert result.output == {
        "digest": "WEEKLY NOTES: 5 words in 2 lines",
        "words": 5,
        "lines": 2,
        "first_tag": "ops",
        "run_id": result.execution_id,
    }
    assert result.levels == [["stats", "headline", "first_tag"], ["render"]]
    untagged = await engine.run(path, {"title": "t", "text": "x"})
    assert untagged.output["first_tag"] is None
    assert untagged.step("first_tag").status == "skipped"
    assert not wall.consents()  # pure compute: no scopes, nothing to ask


async def test_reactor_example_asks_consent_then_runs(
    engine: Engine, host: Host, wall: Ionwall, bus: RecordingBus
) -> None:
    path = str(GRAPHS / "ion_reactor_execute_master_plan.yaml")
    digest = str(GRAPHS / "digest.yaml")  # an agent: a graph, here by its file
    step = {"step_id": "s1", "agent_to_call": digest,
            "input_mapping": {"title": "{{trigger.input_data.target_audience_segment}}",
                              "text": "one two"}}  # fmt: skip
    plan = {"name": "daily digest", "steps": [step]}
    plan_cid = host.pod.put_bytes(json.dumps(plan).encode())  # as `ionflux pod put` stores it
    params_cid = host.pod.put_bytes(b'{"target_audience_segment": "subscribers_group_A"}')
    given = {"master_plan_cid": plan_cid, "plan_parameters_cid": params_cid}

    dry = await engine.run(path, given, mode="dry_run_validate_only")
    assert dry.overall_status == "success"
    assert f"execute_master_plan:{plan_cid}" in dry.scopes_to_ask
    assert any(s.startswith("read_pod_data:") for s in dry.requested_scopes)
    assert not wall.consents()  # a dry run asks nothing

    refused = await engine.run(path, given)
    assert refused.overall_status == "awaiting_approval"  # recorded waiting (durable runs)
    [error] = refused.error_details or []
    assert error["kind"] == "consent_required" and "ionflux consent approve" in error["message"]
    [request] = wall.consents()
    assert error["consent_id"] == request.id
    wall.approve(request.id)

    result = await engine.run(path, given)
    assert result.overall_status == "success", result.error_details
    summary_cid = result.output["step_results_summary_cid"]
    assert result.output == {
        "master_plan_cid": plan_cid,
        "execution_id": result.execution_id,
        "overall_status": "success",
        "step_results_summary_cid": summary_cid,
        "error_details": None,
    }
    log = json.loads(host.pod.get_bytes(summary_cid))
    [ran] = log["steps"]
    assert ran["step_id"] == "s1" and ran["status"] == "success"
    child = engine.history.get(ran["run_ids"][0])
    assert child is not None and child.parent_run_id == result.execution_id
    assert child.output["digest"] == "SUBSCRIBERS_GROUP_A: 2 words in 1 lines"
    assert result.step("fetch_plan_parameters_conditional").outputs["plan_parameters_obj"] == {
        "target_audience_segment": "subscribers_group_A"
    }
    published = result.step("publish_plan_completion_event").outputs
    assert published == {  # no NATS here (a RecordingBus): nothing to publish on
        "published": False,
        "topic": "ionflux.reactor.execute_master_plan.completion",
    }

    without_params = await engine.run(path, {"master_plan_cid": plan_cid})
    assert without_params.step("fetch_plan_parameters_conditional").status == "skipped"
    assert without_params.overall_status == "success"  # the plan ran; its step could not
    assert without_params.output["overall_status"] == "failure"
