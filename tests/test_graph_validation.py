"""Validation and planning: every problem at once, each with file, line, node and field.

Planning is pure: the transform registry comes in through the planner's
``TransformCatalog`` seam, here a table of names (the engine tests run the
real registry)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ionflux import GraphValidationError, GraphVersionExists, TemplateBudgetExceeded
from ionflux.graph import GraphRepository, Planner, TransformInfo, parse_yaml

from ionwall import DocumentLimits, DocumentTooLarge

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
        "g.yaml:2: field 'colour': unknown top-level key 'colour' (allowed: budget, description,"
        " graph, input_schema, name, output, output_schema, triggers, version)"
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
    # How fast is a figure for `just bench`, not an assertion: this one only
    # checks that a large graph is within the default document budgets.
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


# -- document budgets ------------------------------------------------------------


def laughs(levels: int = 9, width: int = 9) -> str:
    """The classic billion laughs: each level is ``width`` aliases of the one before."""
    lines = ["name: lol", "lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    lines.append("graph:\n  - {id: a, transform: echo}")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_graph_is_refused_naming_the_budget_and_line() -> None:
    with pytest.raises(GraphValidationError) as caught:
        Planner(STANDARD).load(laughs(), "lol.yaml")
    reason = caught.value.reason
    assert isinstance(reason, DocumentTooLarge)
    assert reason.limit == "max_alias_expansion" and reason.document == "lol.yaml"
    problem = caught.value.problems[0]
    assert problem.file == "lol.yaml" and problem.line is not None and problem.line <= 11
    assert "max_alias_expansion = 100000" in problem.message
    assert caught.value.to_dict()["limit"] == "max_alias_expansion"


def test_a_graph_past_the_planner_s_document_limits_is_refused_before_parsing() -> None:
    planner = Planner(STANDARD, document_limits=DocumentLimits(max_bytes=1000))
    text = "name: g\ngraph:\n  - {id: a, transform: echo}\n" + "#" * 1000 + "\n"
    with pytest.raises(GraphValidationError) as caught:
        planner.load(text, "big.yaml")
    assert isinstance(caught.value.reason, DocumentTooLarge)
    assert caught.value.reason.limit == "max_bytes"
    deep = "name: g\nx: " + "[" * 70 + "]" * 70 + "\ngraph:\n  - {id: a, transform: echo}\n"
    with pytest.raises(GraphValidationError, match="max_depth = 64"):
        Planner(STANDARD).load(deep, "deep.yaml")


def test_small_aliases_still_work() -> None:
    plan = Planner(STANDARD).load(
        "name: g\n"
        "graph:\n"
        "  - {id: a, transform: echo, retry: &r {count: 2, backoff: 1s}}\n"
        "  - {id: b, transform: echo, retry: *r}\n",
        "g.yaml",
    )
    assert plan.nodes["b"].node.retry.count == 2


# -- inputs against the transform's input_schema ------------------------------------

TEXT_IN = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "times": {"type": "integer", "minimum": 1}},
    "required": ["text"],
    "additionalProperties": False,
}


class SchemaCatalog:
    def __init__(self) -> None:
        self.known = {
            "shout": TransformInfo("shout", "1.0.0", "bafk-shout", (), TEXT_IN),
            "echo": TransformInfo("echo", "0.1.0", "bafk-echo"),
        }

    def lookup_transform(self, name: str) -> TransformInfo | None:
        return self.known.get(name)


def input_problems(inputs: str, extra: str = "") -> list[str]:
    text = (
        "name: g\ngraph:\n  - {id: first, transform: echo}\n"
        f"  - id: n\n    transform: shout\n    inputs: {inputs}\n{extra}"
    )
    try:
        Planner(SchemaCatalog()).load(text, "g.yaml")
    except GraphValidationError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_literal_inputs_are_checked_against_the_transform_s_input_schema() -> None:
    assert input_problems("{text: 5}") == [
        "g.yaml:6: node 'n' field 'inputs.text': does not match the input_schema of "
        "shout@1.0.0: 5 is not of type 'string'"
    ]
    assert sorted(input_problems("{txt: hello}")) == [
        "g.yaml:6: node 'n' field 'inputs': does not match the input_schema of shout@1.0.0: "
        "'text' is a required property",
        "g.yaml:6: node 'n' field 'inputs': does not match the input_schema of shout@1.0.0: "
        "Additional properties are not allowed ('txt' was unexpected)",
    ]
    assert input_problems("{text: hi, times: 0}") == [
        "g.yaml:6: node 'n' field 'inputs.times': does not match the input_schema of "
        "shout@1.0.0: 0 is less than the minimum of 1"
    ]
    # no inputs at all: the run sends {}, which lacks `text`
    assert "'text' is a required property" in input_problems("null")[0]


def test_template_inputs_are_checked_as_far_as_they_are_known() -> None:
    # values read at run time are unknown: nothing to say about them...
    assert (
        input_problems("{text: '{{ nodes.first.outputs.x }}', times: '{{ trigger.input_data.n }}'}")
        == []
    )
    assert input_problems("'{{ nodes.first.outputs }}'") == []
    # ...but a mixed template always renders text, and keys are known
    assert input_problems("{text: hi, times: 'x{{ trigger.input_data.n }}'}") == [
        "g.yaml:6: node 'n' field 'inputs.times': does not match the input_schema of "
        "shout@1.0.0: '' is not of type 'integer'"
    ]
    assert (
        "'text' is a required property"
        in input_problems("{times: '{{ trigger.input_data.n }}'}")[0]
    )
    # a node that never runs (`if: false`) is not checked
    assert input_problems("{text: 5}\n    if: false") == []


def test_subgraph_inputs_are_checked_against_the_child_graph_s_input_schema(
    tmp_path: Path,
) -> None:
    repo = GraphRepository(tmp_path / "graphs.sqlite3")
    try:
        child = (
            "name: child\ninput_schema:\n  type: object\n"
            "  properties: {n: {type: integer}, mode: {type: string, default: fast}}\n"
            "  required: [n]\ngraph:\n  - {id: a, transform: echo}\n"
        )
        repo.deploy(child, "child", "0.0.0", "test")
        planner = Planner(STANDARD, graphs=repo)
        planner.load("name: top\ngraph:\n  - {id: a, subgraph: child, inputs: {n: 1}}\n")
        with pytest.raises(GraphValidationError) as caught:
            planner.load("name: top\ngraph:\n  - {id: a, subgraph: child, inputs: {n: x}}\n")
        assert "field 'inputs.n': does not match the input_schema of graph child" in str(
            caught.value
        )
    finally:
        repo.close()


# -- deployed versions are immutable ---------------------------------------------------


def test_a_deployed_name_at_version_cannot_change(tmp_path: Path) -> None:
    repo = GraphRepository(tmp_path / "graphs.sqlite3")
    text = "name: g\nversion: 1.0.0\ngraph:\n  - {id: a, transform: echo, inputs: {v: 1}}\n"
    try:
        first, created = repo.deploy(text, "g", "1.0.0", "one")
        assert created
        again, created = repo.deploy(text, "g", "1.0.0", "same text")
        assert (again, created) == (first, False)
        changed = text.replace("v: 1", "v: 2")
        with pytest.raises(GraphVersionExists) as caught:
            repo.deploy(changed, "g", "1.0.0", "changed")
        assert "g@1.0.0 is already deployed with other text" in str(caught.value)
        assert "new version" in str(caught.value)
        assert caught.value.problems[0].field == "version"
        assert caught.value.kind == "graph_validation"  # answered 422, as other refusals
        # nothing of the refused text was kept
        from ionflux.store import cid_for_bytes

        assert repo.text(cid_for_bytes(changed.encode())) is None
        assert [v.cid for v in repo.versions("g")] == [first.cid]
        bumped, created = repo.deploy(changed.replace("1.0.0", "1.0.1"), "g", "1.0.1", "two")
        assert created and repo.find("g") is not None and repo.find("g").cid == bumped.cid  # type: ignore[union-attr]
    finally:
        repo.close()


def test_template_budget_errors_name_the_node_and_field() -> None:
    plan = Planner(STANDARD).load(
        "name: g\ngraph:\n  - {id: a, transform: echo, inputs: {x: '{{ 9 ** (9 ** 9) }}'}}\n"
    )
    with pytest.raises(TemplateBudgetExceeded) as caught:
        plan.nodes["a"].inputs.render({"trigger": {}, "nodes": {}, "system": {}, "null": None})
    assert caught.value.node == "a" and caught.value.field == "inputs.x"
    assert caught.value.limit == "graph.template_max_int_bits"


def test_a_dependency_on_a_node_that_does_not_validate_is_a_problem_not_a_crash() -> None:
    # found by the loader's property test: planning raised KeyError('a')
    found = problems_of(
        "name: g\ngraph:\n  - {id: a, transform: echo, colour: red}\n"
        "  - {id: b, transform: echo, dependencies: [a]}\n"
    )
    assert found == [
        "g.yaml:3: node 'a' field 'colour': unknown key 'colour' (allowed: cache, delay, "
        "dependencies, description, id, idempotent, if, inputs, ionwall_approval_scope, "
        "on_error, outputs, retry, subgraph, timeout, transform, until)"
    ]


def test_a_graph_file_is_read_no_further_than_the_document_budget(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("name: g\ngraph:\n  - {id: a, transform: echo}\n" + "#" * 5000 + "\n")
    repo = GraphRepository(tmp_path / "graphs.sqlite3", document_limits=DocumentLimits(4096))
    try:
        with pytest.raises(GraphValidationError) as caught:
            repo.resolve(str(big))
        assert isinstance(caught.value.reason, DocumentTooLarge)
        assert caught.value.problems[0].file == str(big)
    finally:
        repo.close()
