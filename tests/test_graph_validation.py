"""Validation and planning: every problem at once, each with file, line, node and field.

Planning is pure: the transform registry comes in through the planner's
``TransformCatalog`` seam, here a table of names (the engine tests run the
real registry)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ionflux._errors import GraphValidationError
from ionflux.graph import GraphRepository, Planner, TransformInfo, parse_yaml

FIXTURES = Path(__file__).parent / "fixtures" / "graphs"
SEED = FIXTURES / "ion_reactor_execute_master_plan_fluxgraph.yaml"
SEED_NAMES = {
    "FetchFromIONPOD_Transform_IONWALL": "pod-fetch",
    "StoreToIONPOD_Transform_IONWALL": "pod-store",
    "IPC_NATS_Publish_Transform": "nats-publish",
    "MasterPlanExecutor_Transform_IONFLUXController": "template",
}


class Catalog:
    def __init__(self, *names: str, scopes: tuple[str, ...] = ()):
        self.known = {n: TransformInfo(n, "0.1.0", f"bafk-{n}", scopes) for n in names}

    def lookup_transform(self, name: str) -> TransformInfo | None:
        return self.known.get(name)


STANDARD = Catalog("echo", "template", "pod-fetch", "pod-store", "nats-publish", "json-path")


def problems_of(text: str, file: str = "g.yaml", **kwargs: object) -> list[str]:
    planner = Planner(STANDARD, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(GraphValidationError) as caught:
        planner.load(text, file)
    return [str(p) for p in caught.value.problems]


def test_seed_master_plan_validates_as_written_with_mapped_names() -> None:
    plan = Planner(STANDARD, transform_names=SEED_NAMES).load(SEED.read_text(), str(SEED))
    assert plan.name == "ion_reactor_execute_master_plan_fluxgraph"
    assert [list(level) for level in plan.levels] == [
        ["fetch_master_plan_definition", "fetch_plan_parameters_conditional"],
        ["execute_workflow_steps"],
        ["store_step_results_summary"],
        ["publish_plan_completion_event"],
    ]
    assert plan.nodes["execute_workflow_steps"].target == "template@0.1.0"
    # dependencies inferred from templates, plus the explicit one
    assert plan.nodes["publish_plan_completion_event"].deps == {
        "execute_workflow_steps",
        "store_step_results_summary",
    }


def test_seed_without_the_name_table_names_each_unknown_transform() -> None:
    found = problems_of(SEED.read_text(), str(SEED))
    assert len(found) == 5
    assert "unknown transform 'FetchFromIONPOD_Transform_IONWALL'" in found[0]
    assert f"{SEED}:33: node 'fetch_master_plan_definition' field 'transform'" in found[0]


def test_seed_section_2_reports_the_output_it_never_declares() -> None:
    text = (FIXTURES / "ion_reactor_section2_conceptual.yaml").read_text()
    found = problems_of(text, "s2.yaml", transform_names=SEED_NAMES)
    assert len(found) == 1
    assert "node 'publish_plan_completion_event' field 'inputs.message.execution_id'" in found[0]
    assert "node 'execute_workflow_steps' has no output 'execution_id'" in found[0]


def test_malformed_yaml_names_the_line() -> None:
    with pytest.raises(GraphValidationError) as caught:
        parse_yaml((FIXTURES / "malformed.yaml").read_text(), "malformed.yaml")
    problem = caught.value.problems[0]
    assert problem.file == "malformed.yaml"
    assert problem.line == 6
    assert "malformed YAML" in problem.message


def test_unknown_top_level_key() -> None:
    found = problems_of("name: g\ncolour: blue\ngraph:\n  - {id: a, transform: echo}\n")
    assert found == [
        "g.yaml:2: field 'colour': unknown top-level key 'colour' (allowed: description, graph,"
        " input_schema, name, output, output_schema, triggers, version)"
    ]


def test_duplicate_yaml_keys_are_refused_not_overwritten() -> None:
    found = problems_of("name: g\ngraph:\n  - {id: a, transform: echo}\nname: h\n")
    assert found == ["g.yaml:4: field 'name': duplicate key 'name'"]


def test_every_problem_at_once_with_file_line_node_field() -> None:
    with pytest.raises(GraphValidationError) as caught:
        Planner(STANDARD).load((FIXTURES / "many_problems.yaml").read_text(), "many.yaml")
    got = [(p.line, p.node, p.field) for p in caught.value.problems]
    assert got == [
        (2, None, "colour"),
        (7, "fetch", "inputs.a"),
        (8, "fetch", "id"),
        (11, "shape", "transform"),
        (12, "shape", "inputz"),
        (16, "sneaky", "inputs.cls"),
        (17, "sneaky", "dependencies.0"),
    ]
    messages = [p.message for p in caught.value.problems]
    assert "reference to unknown node 'nowhere'" in messages[1]
    assert "duplicate node id 'fetch'" in messages[2]
    assert "unknown transform 'no-such-transform'" in messages[3]
    assert "names starting with '_' are not readable" in messages[5]
    assert "depends on unknown node 'ghost'" in messages[6]
    assert all(p.file == "many.yaml" for p in caught.value.problems)


def test_duplicate_node_ids() -> None:
    found = problems_of(
        "name: g\ngraph:\n  - {id: a, transform: echo}\n  - {id: a, transform: echo}\n"
    )
    assert found == ["g.yaml:4: node 'a' field 'id': duplicate node id 'a' (first used by node #1)"]


def test_cycle_is_named() -> None:
    found = problems_of((FIXTURES / "cycle.yaml").read_text(), "cycle.yaml")
    assert len(found) == 1
    assert "dependency cycle: a -> c -> b -> a" in found[0]
    assert found[0].startswith("cycle.yaml:5: node 'a'")


def test_reference_to_missing_node_and_self() -> None:
    text = (
        "name: g\ngraph:\n"
        "  - id: a\n    transform: echo\n    inputs: {x: '{{ nodes.b.outputs.y }}'}\n"
        "  - id: c\n    transform: echo\n    if: '{{ nodes.c.status == \"success\" }}'\n"
    )
    found = problems_of(text)
    assert "g.yaml:5: node 'a' field 'inputs.x'" in found[0]
    assert "reference to unknown node 'b'" in found[0]
    assert "g.yaml:8: node 'c' field 'if'" in found[1]
    assert "a node cannot read its own outputs" in found[1]


def test_template_reaching_python_internals_is_refused_at_validation() -> None:
    for template in (
        "{{ ''.__class__ }}",
        "{{ trigger.__class__.__mro__ }}",
        "{{ trigger['__globals__'] }}",
        "{{ cycler.__init__.__globals__ }}",
    ):
        found = problems_of(
            f'name: g\ngraph:\n  - id: a\n    transform: echo\n    inputs: {{x: "{template}"}}\n'
        )
        assert len(found) == 1, template
        assert "field 'inputs.x'" in found[0]


def test_unknown_names_in_templates() -> None:
    found = problems_of(
        "name: g\ngraph:\n  - id: a\n    transform: echo\n"
        "    inputs: {x: '{{ config.secret }}', y: '{{ system.hostname }}', "
        "z: '{{ trigger.input }}'}\n"
    )
    assert len(found) == 3
    assert "unknown name 'config'" in found[0]
    assert "system has attempt, graph_name" in found[1]
    assert "trigger has details, input_data, type" in found[2]


def test_bad_policies_and_node_shape() -> None:
    found = problems_of(
        "name: g\ngraph:\n"
        "  - {id: a, transform: echo, subgraph: other}\n"
        "  - {id: b, transform: echo, timeout: soon, on_error: shrug}\n"
        "  - {id: 'bad-id', transform: echo}\n"
    )
    assert any("exactly one of 'transform' or 'subgraph'" in p for p in found)
    assert any("field 'timeout'" in p and "duration" in p for p in found)
    assert any("field 'on_error'" in p for p in found)
    assert any("node 'bad-id' field 'id'" in p for p in found)


def test_invalid_json_schema_is_reported() -> None:
    found = problems_of(
        "name: g\ninput_schema: {type: objekt}\ngraph:\n  - {id: a, transform: echo}\n"
    )
    assert len(found) == 1
    assert "g.yaml:2: field 'input_schema.type': not a valid JSON Schema" in found[0]


def test_a_thousand_node_graph_validates() -> None:
    # How fast is a figure for `just bench` (the graph section), not an assertion:
    # this checks that a large graph validates and is planned as the tree it is.
    lines = ["name: big", "graph:", "  - {id: n0, transform: echo, inputs: {v: 0}}"]
    for i in range(1, 1000):
        dep = (i - 1) // 2  # a binary tree: 10 levels
        lines.append(
            f"  - {{id: n{i}, transform: echo, "
            f"inputs: {{v: '{{{{ nodes.n{dep}.outputs.v }}}}', i: {i}}}}}"
        )
    text = "\n".join(lines) + "\n"
    plan = Planner(STANDARD).load(text, "big.yaml")
    assert len(plan.nodes) == 1000
    assert len(plan.levels) == 10


def _deploy(repo: GraphRepository, name: str, child: str | None) -> None:
    node = f"subgraph: {child}" if child else "transform: echo"
    repo.deploy(f"name: {name}\ngraph:\n  - id: a\n    {node}\n", name, "0.0.0", "test")


def test_subgraph_recursion_past_the_limit_and_cycles(tmp_path: Path) -> None:
    repo = GraphRepository(tmp_path / "graphs.sqlite3")
    try:
        _deploy(repo, "g4", None)
        _deploy(repo, "g3", "g4")
        _deploy(repo, "g2", "g3")
        _deploy(repo, "g1", "g2")
        planner = Planner(STANDARD, graphs=repo, max_subgraph_depth=3)
        ok = planner.load("name: top\ngraph:\n  - {id: a, subgraph: g2}\n")  # top>g2>g3>g4
        assert ok.nodes["a"].target == "graph:g2"
        with pytest.raises(GraphValidationError) as caught:
            planner.load("name: top\ngraph:\n  - {id: a, subgraph: g1}\n", "top.yaml")
        assert "deeper than graph.max_subgraph_depth (3): top -> g1 -> g2 -> g3 -> g4" in str(
            caught.value
        )
        _deploy(repo, "loop_b", "loop_a")
        with pytest.raises(GraphValidationError) as caught:
            planner.load("name: loop_a\ngraph:\n  - {id: a, subgraph: loop_b}\n", "a.yaml")
        assert "sub-graph cycle refused: loop_a -> loop_b -> loop_a" in str(caught.value)
        with pytest.raises(GraphValidationError) as caught:
            planner.load("name: x\ngraph:\n  - {id: a, subgraph: {name: g4, version: 9.9.9}}\n")
        assert "unknown graph 'g4' version '9.9.9'" in str(caught.value)
    finally:
        repo.close()


def test_plan_levels_and_scopes() -> None:
    planner = Planner(Catalog("echo", scopes=("emit_log:info",)))
    plan = planner.load(
        "name: g\ngraph:\n"
        "  - {id: a, transform: echo}\n"
        "  - {id: b, transform: echo}\n"
        "  - {id: c, transform: echo, inputs: {x: '{{ nodes.a.outputs }}'}, dependencies: [b]}\n"
        "  - {id: d, transform: echo, if: '{{ nodes.a.outputs.ok }}'}\n"
    )
    assert [list(level) for level in plan.levels] == [["a", "b"], ["c", "d"]]
    assert plan.terminal_nodes == ["c", "d"]
    assert plan.manifest_scopes == ["emit_log:info"]
