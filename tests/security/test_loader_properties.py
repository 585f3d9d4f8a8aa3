"""Properties of the bounded YAML loader and of the graph and manifest loaders on top.

Whatever the text, ``ionwall.load_yaml`` raises nothing but ``DocumentError``
(``DocumentTooLarge`` past a budget) and what it returns is within its
budgets, aliases counted as copies; data dumped as YAML or JSON reads back
equal. The graph and manifest loaders raise only their own typed errors on
mutated documents. Small budgets, so random documents reach them; a few
hundred examples each (a few seconds in the default suite).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ionflux import GraphValidationError, ManifestError
from ionflux.graph import Planner, TransformInfo
from ionflux.manifest import parse_manifest_text

from ionwall import DocumentError, DocumentLimits, DocumentTooLarge, load_yaml

# What the host read with before: libyaml's safe loader (the pure-Python one
# differs from libyaml on a few escapes).
REFERENCE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SMALL = DocumentLimits(max_bytes=4096, max_depth=12, max_nodes=400, max_alias_expansion=150)
CHECKS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,  # the default suite stays reproducible; `just fuzz` may drop this
)

# Printable text: JSON passes C0/C1 controls and lone surrogates through, YAML
# refuses them, so JSON text is YAML only without them.
printable = st.text(st.characters(whitelist_categories=("L", "N", "P", "S", "Zs")), max_size=20)
scalars = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63) | printable
json_data = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(printable, inner, max_size=5),
    max_leaves=30,
)
# YAML 1.1 reads some floats JSON writes as strings (1e-06): only compared with PyYAML.
with_floats = st.recursive(
    scalars | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(printable, inner, max_size=5),
    max_leaves=30,
)


# Pieces that steer a mutation towards YAML's sharp edges: anchors, aliases,
# flow collections, tags, document markers, merge keys, deep nesting.
TOKENS = st.sampled_from(
    [
        "&a ", "*a", "&b [*a, *a, *a]", "*b", "[", "]", "{", "}", ": ", "- ", "? ", "<<: *a",
        "!!binary ", "!!python/object:os.system ", "---\n", "...\n", "\n", "  ", "\t", "'", '"',
        "%YAML 1.1\n", "!!float ", "2024-13-01", "9" * 5000, "[" * 40, "{a: " * 20, "|\n  x",
        ">-\n", "#", "\\", "\x00", "\ufeff", "&x [*x]",
    ]
)  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, base: str) -> str:
    text = base
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(TOKENS | st.text(max_size=4))
        if action == "insert":
            text = text[:at] + piece + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)) :]
        else:
            text = text[:at] + piece + text[at + len(piece) :]
    return text


def expanded(value: Any, cap: int) -> tuple[int, int]:
    """(nodes, depth) of ``value`` with every shared part counted where it appears."""
    nodes = 0
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        deepest = max(deepest, depth)
        assert nodes <= cap, "the loader let through more nodes than its budget"
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            nodes += len(item)  # the keys
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return nodes, deepest


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


# -- the loader -----------------------------------------------------------------------


@CHECKS
@given(st.text(max_size=300) | mutated(yaml.safe_dump({"a": [1, {"b": "c"}], "d": "e"})))
def test_any_text_loads_or_raises_a_document_error_within_budget(text: str) -> None:
    try:
        data = load_yaml(text, "fuzz.yaml", SMALL)
    except DocumentError as exc:
        assert exc.document == "fuzz.yaml"
        if isinstance(exc, DocumentTooLarge):
            assert exc.limit in {"max_bytes", "max_depth", "max_nodes", "max_alias_expansion"}
        return
    _, depth = expanded(data, SMALL.max_nodes * 2)  # keys add to it: counted once more
    assert depth <= SMALL.max_depth + 1


@CHECKS
@given(json_data)
def test_data_dumped_as_yaml_or_json_reads_back_equal(data: Any) -> None:
    limits = DocumentLimits()
    assert same(load_yaml(json.dumps(data, ensure_ascii=False), "d.json", limits), data)
    assert same(load_yaml(yaml.safe_dump(data, allow_unicode=True), "d.yaml", limits), data)


@CHECKS
@given(with_floats)
def test_the_bounded_loader_reads_what_pyyaml_reads(data: Any) -> None:
    for text in (json.dumps(data), yaml.safe_dump(data, allow_unicode=True)):
        try:
            expected = yaml.load(text, Loader=REFERENCE)
        except yaml.YAMLError:  # e.g. JSON's surrogate-pair escapes: YAML has none
            with pytest.raises(DocumentError):
                load_yaml(text, "d.yaml")
            continue
        assert same(load_yaml(text, "d.yaml"), expected)


@st.composite
def aliased(draw: st.DrawFn) -> str:
    """Documents built from anchors and aliases of earlier anchors (bombs included)."""
    lines = ["a0: &a0 [x, y]"]
    for i in range(1, draw(st.integers(1, 8))):
        refs = draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=draw(st.integers(1, 9))))
        lines.append(f"a{i}: &a{i} [{', '.join(f'*a{r}' for r in refs)}]")
    return "\n".join(lines) + "\n"


@CHECKS
@given(aliased())
def test_aliases_are_loaded_only_within_the_expansion_budget(text: str) -> None:
    try:
        data = load_yaml(text, "a.yaml", SMALL)
    except DocumentTooLarge as exc:
        assert exc.limit in {"max_alias_expansion", "max_nodes", "max_depth"}
        return
    expanded(data, SMALL.max_nodes + SMALL.max_alias_expansion)
    # within budget, the result is what PyYAML itself reads
    assert data == yaml.load(text, Loader=REFERENCE)


# -- graphs and manifests on top --------------------------------------------------------


class Catalog:
    def lookup_transform(self, name: str) -> TransformInfo | None:
        schema = {"type": "object", "properties": {"text": {"type": "string"}}}
        return TransformInfo(name, "1.0.0", f"bafk-{name}", (), schema) if name == "echo" else None


GRAPH = """\
name: fuzzed
version: 1.0.0
input_schema: {type: object, properties: {text: {type: string}}}
graph:
  - id: a
    transform: echo
    inputs: {text: "{{ trigger.input_data.text }}"}
  - id: b
    transform: echo
    retry: {count: 1, backoff: 10ms}
    inputs: {text: "{{ nodes.a.outputs.text ~ '!' }}"}
output: "{{ nodes.b.outputs }}"
"""


@CHECKS
@given(mutated(GRAPH))
def test_mutated_graphs_raise_only_graph_validation_errors(text: str) -> None:
    planner = Planner(Catalog(), document_limits=SMALL)
    try:
        plan = planner.load(text, "fuzzed.yaml")
    except GraphValidationError as exc:
        assert exc.problems, "a validation error lists its problems"
        return
    assert plan.nodes


@CHECKS
@given(
    st.lists(
        st.fixed_dictionaries({"text": printable, "n": st.integers(0, 3), "on": st.booleans()}),
        min_size=1,
        max_size=6,
    )
)
def test_valid_graphs_plan_as_written(literals: list[dict[str, Any]]) -> None:
    graph = {
        "name": "g",
        "graph": [
            {"id": f"n{i}", "transform": "echo", "inputs": {"text": item["text"]}, "if": item["on"]}
            for i, item in enumerate(literals)
        ],
    }
    plan = Planner(Catalog()).load(yaml.safe_dump(graph, allow_unicode=True), "g.yaml")
    assert [p.inputs.value for p in plan.nodes.values()] == [{"text": x["text"]} for x in literals]


MANIFEST = """\
name: fuzzed
version: 1.0.0
abi: component
module: {cid: bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq}
scopes: [emit_log:info]
input_schema: {type: object, properties: {text: {type: string, default: &d hello}}}
output_schema: {type: object, properties: {text: {type: string, default: *d}}}
"""


@CHECKS
@given(mutated(MANIFEST))
def test_mutated_manifests_raise_only_manifest_errors(text: str) -> None:
    try:
        manifest = parse_manifest_text(text, path="fuzzed.yaml", limits=SMALL)
    except ManifestError:
        return
    assert manifest.name


def test_the_unmutated_documents_load() -> None:
    assert Planner(Catalog()).load(GRAPH, "g.yaml").name == "fuzzed"
    assert parse_manifest_text(MANIFEST, limits=SMALL).scopes == ["emit_log:info"]


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("a: &a [x, x, x, x, x, x, x, x, x]\n"
         + "".join(
             f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
             for p, c in zip("abcdefgh", "bcdefghi", strict=True)
         ),
         "max_alias_expansion"),
        ("x: " + "[" * 100 + "]" * 100, "max_depth"),
        ("[" + "1, " * 300_000 + "1]", "max_nodes"),
        ("x" * (1024 * 1024 + 1), "max_bytes"),
    ],
)  # fmt: skip
def test_each_default_budget_refuses_its_bomb(text: str, limit: str) -> None:
    with pytest.raises(DocumentTooLarge) as caught:
        load_yaml(text, "bomb.yaml")
    assert caught.value.limit == limit
    assert "bomb.yaml" in str(caught.value) and limit in str(caught.value)


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(DocumentError, match="recursive alias 'a'"):
        load_yaml("a: &a [1, *a]\n", "r.yaml")


@pytest.mark.parametrize("text", ['a: !!float ""', "a: 2024-13-01", "a: " + "9" * 5000])
def test_values_pyyaml_cannot_construct_are_document_errors(text: str) -> None:
    # found by the property test: `!!float ""` raised IndexError from PyYAML
    with pytest.raises(DocumentError, match="a value cannot be read"):
        load_yaml(text, "v.yaml")
