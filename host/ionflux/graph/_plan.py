"""Validation and planning: a graph file in, an executable ``Plan`` out.

Everything that can be known before a run is checked here, once, and every
problem is reported together (file, line, node id, field): the DSL's shape,
duplicate ids, dependencies on unknown nodes, template syntax and the names
templates read, unknown transforms and sub-graphs, sub-graph cycles and depth,
JSON Schemas, and cycles in the node graph. Dependencies are the explicit
``dependencies`` plus every ``nodes.<id>`` a node's templates read. Pure: the
transform registry and the deployed graphs come in through two small
Protocols.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import jsonschema
from jsonschema.protocols import Validator
from pydantic import ValidationError

from ionwall import DocumentLimits

from .._errors import GraphProblem, GraphValidationError, InvalidInput, TemplateError
from ._model import FluxGraph, Node, SubgraphRef
from ._schema import apply_defaults, compile_schema, known_problems, schema_problems
from ._source import Path, Source, parse_yaml
from ._template import Compiled, Ref, Template, TemplateBudget, compile_value
from ._template_budget import DEFAULT_BUDGET

TRIGGER_KEYS = frozenset({"input_data", "type", "details"})
SYSTEM_KEYS = frozenset(
    {"run_id", "timestamp_utc_iso", "graph_name", "graph_version", "node_id", "attempt"}
)
NODE_KEYS = frozenset({"outputs", "status", "error"})


@dataclass(frozen=True, slots=True)
class TransformInfo:
    """What planning and running need to know of a published transform."""

    name: str
    version: str
    cid: str
    scopes: tuple[str, ...] = ()
    input_schema: Mapping[str, Any] = field(default_factory=dict)
    output_schema: Mapping[str, Any] = field(default_factory=dict)
    # Its manifest's ``pure``, and a digest of what else shapes a call's output (the
    # effective limits and config): both part of a content-cache key.
    pure: bool = False
    fingerprint: str = ""


class TransformCatalog(Protocol):
    def lookup_transform(self, name: str) -> TransformInfo | None: ...


class GraphCatalog(Protocol):
    def lookup_graph(self, name: str, version: str | None) -> FluxGraph | None: ...


@dataclass(frozen=True, slots=True)
class InputCheck:
    """A node's inputs against its target's input schema: the transform's
    ``input_schema`` (as the host checks a call's input), or the sub-graph's
    (its ``default`` values filled in first, as a run does)."""

    validator: Validator
    target: str
    defaults: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PlannedNode:
    node: Node
    index: int
    deps: frozenset[str]
    level: int
    inputs: Compiled
    condition: Template | None
    approval_scope: Compiled | None
    transform: TransformInfo | None
    subgraph: SubgraphRef | None
    input_check: InputCheck | None = None
    wake: Compiled | None = None  # ``until``, compiled

    @property
    def timed(self) -> bool:
        """Whether the node waits (``delay`` or ``until``) before it starts."""
        return self.wake is not None or self.node.delay is not None

    def input_problems(self, scope: Mapping[str, Any] | None = None) -> list[tuple[Path, str]]:
        """What in this node's inputs breaks its target's input schema, as far as
        the inputs are known: literals always; with ``scope`` (a dry run: trigger
        and system known) the templates that read no other node too. Templates
        reading other nodes' outputs stay unknown (``known_problems``)."""
        check = self.input_check
        if check is None or self.node.if_ is False:
            return []
        unknown: dict[Path, bool] = {}
        value = _placeholders(self.inputs.value, scope, (), unknown)
        if value is None and () not in unknown:
            value = {}  # as a run sends it
        if check.defaults is not None:
            value = apply_defaults(dict(check.defaults), value)
        return known_problems(check.validator, value, unknown)

    def dry_run_error(self, scope: Mapping[str, Any]) -> dict[str, Any] | None:
        """The error the real run would meet at this node's input check, if its
        inputs (rendered from ``scope``) already show it; as ``error_dict`` shapes it."""
        problems = self.input_problems(scope)
        if not problems:
            return None
        path, message = problems[0]
        where = ".".join(["inputs", *(str(p) for p in path)])
        exc = InvalidInput(
            f"node {self.id!r} field {where!r}: does not match the input_schema of "
            f"{self.input_check.target if self.input_check else self.target}: {message}"
        )
        return {**exc.to_dict(), "node_id": self.id, "field": where}

    @property
    def id(self) -> str:
        return self.node.id

    @property
    def target(self) -> str:
        """``name@version`` of the transform, or ``graph:name`` of the sub-graph."""
        if self.transform is not None:
            return f"{self.transform.name}@{self.transform.version}"
        assert self.subgraph is not None
        version = f"@{self.subgraph.version}" if self.subgraph.version else ""
        return f"graph:{self.subgraph.name}{version}"


@dataclass(frozen=True)
class Plan:
    """A validated graph, ready to run: nodes in file order, levels of nodes that
    can run together, compiled templates and schema validators."""

    graph: FluxGraph
    source: Source
    nodes: dict[str, PlannedNode]
    levels: tuple[tuple[str, ...], ...]
    dependents: dict[str, tuple[str, ...]]
    output: Compiled | None
    input_validator: Validator | None
    output_validator: Validator | None
    cid: str = ""

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def manifest_scopes(self) -> list[str]:
        """The union of the nodes' transforms' manifest scopes, sorted."""
        scopes = {s for n in self.nodes.values() if n.transform for s in n.transform.scopes}
        return sorted(scopes)

    @property
    def terminal_nodes(self) -> list[str]:
        return [node_id for node_id in self.nodes if not self.dependents[node_id]]

    @cached_property
    def successors(self) -> dict[str, str]:
        """``a -> b`` where ``b`` is ``a``'s only dependent and ``a`` is ``b``'s only
        dependency: when ``a`` succeeds, ``b`` is ready and nothing else became so.
        The links of linear chains, which the engine runs back to back on one thread."""
        return {
            node_id: dependents[0]
            for node_id, dependents in self.dependents.items()
            if len(dependents) == 1 and len(self.nodes[dependents[0]].deps) == 1
        }


@dataclass
class Planner:
    """Turns graph text into a ``Plan``. ``transform_names`` maps names used in
    graphs (the seeds' ``FetchFromIONPOD_Transform_IONWALL``) to published ones."""

    transforms: TransformCatalog
    graphs: GraphCatalog | None = None
    transform_names: Mapping[str, str] = field(default_factory=dict)
    max_subgraph_depth: int = 3
    template_budget: TemplateBudget = DEFAULT_BUDGET
    document_limits: DocumentLimits | None = None  # None: the ``documents.*`` defaults
    _validators: dict[str, Validator | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def input_check(self, transform: TransformInfo) -> InputCheck | None:
        """The check of a node's inputs against ``transform``'s ``input_schema``
        (as the host validates a call), or None when it has none."""
        if not transform.input_schema:
            return None
        key = f"{transform.name}@{transform.version}@{transform.cid}"
        if key not in self._validators:
            schema = dict(transform.input_schema)
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
                found: Validator | None = jsonschema.Draft202012Validator(schema)
            except jsonschema.SchemaError:
                found = None  # refused at publish; nothing to check against
            self._validators[key] = found
        validator = self._validators[key]
        target = f"{transform.name}@{transform.version}"
        return None if validator is None else InputCheck(validator, target)

    def load(self, text: str, file: str | None = None) -> Plan:
        return self.plan(self.parse(text, file))

    def parse(self, text: str, file: str | None = None) -> Source:
        """``text`` read within the planner's document budgets."""
        return parse_yaml(text, file, self.document_limits)

    def plan(self, source: Source) -> Plan:
        return _Planning(self, source).run()

    def resolve_transform(self, name: str) -> TransformInfo | None:
        return self.transforms.lookup_transform(self.transform_names.get(name, name))


class _Planning:
    """One planning pass; collects problems instead of stopping at the first."""

    def __init__(self, planner: Planner, source: Source):
        self.planner = planner
        self.source = source
        self.problems: list[GraphProblem] = []
        self._declared: dict[str, list[str]] | None = None

    def problem(self, message: str, path: Path, node: str | None = None) -> None:
        fld = _field_of(path)
        self.problems.append(
            GraphProblem(
                message, file=self.source.file, line=self.source.line(path), node=node, field=fld
            )
        )

    def run(self) -> Plan:
        data = self.source.data
        if not isinstance(data, dict):
            self.problem("a graph file is a mapping with 'name' and 'graph' keys", ())
            raise GraphValidationError(self.problems)
        nodes = self._nodes(data.get("graph"))
        top = self._top(data, nodes)
        ids = self._unique_ids(data.get("graph"), nodes)
        first = _first_index(data.get("graph"))
        planned = {n.id: self._node(i, n, ids, data) for i, n in nodes if first.get(n.id) == i}
        output = self._output(data, ids)
        levels, dependents = self._order(planned, nodes)
        in_v = self._schema(data, "input_schema")
        out_v = self._schema(data, "output_schema")
        if self.problems or top is None:
            self.problems.sort(key=lambda p: p.line or 0)
            raise GraphValidationError(self.problems)
        return Plan(top, self.source, planned, levels, dependents, output, in_v, out_v)

    # -- shape ---------------------------------------------------------------

    def _nodes(self, raw: Any) -> list[tuple[int, Node]]:
        if not isinstance(raw, list):
            return []
        good: list[tuple[int, Node]] = []
        for index, item in enumerate(raw):
            try:
                good.append((index, Node.model_validate(item)))
            except ValidationError as exc:
                node_id = item.get("id") if isinstance(item, dict) else None
                label = str(node_id) if node_id is not None else f"#{index + 1}"
                self._pydantic(exc, ("graph", index), label, item)
                transform = item.get("transform") if isinstance(item, dict) else None
                if isinstance(transform, str) and self.planner.resolve_transform(transform) is None:
                    path = ("graph", index, "transform")
                    self.problem(self._unknown_transform(transform), path, label)
        return good

    def _top(self, data: dict[str, Any], nodes: list[tuple[int, Node]]) -> FluxGraph | None:
        raw_graph = data.get("graph")
        candidate = dict(data)
        nodes_reported = False
        if isinstance(raw_graph, list) and raw_graph:
            candidate["graph"] = [n for _, n in nodes]
            nodes_reported = len(nodes) < len(raw_graph)
        try:
            return FluxGraph.model_validate(candidate)
        except ValidationError as exc:
            for error in exc.errors():
                if not (nodes_reported and error["loc"][:1] == ("graph",)):
                    self._pydantic_error(error, (), None, data)
            return None

    def _pydantic(self, exc: ValidationError, base: Path, node: str | None, data: Any) -> None:
        for error in exc.errors():
            self._pydantic_error(error, base, node, data)

    def _pydantic_error(self, error: Any, base: Path, node: str | None, data: Any) -> None:
        loc, path, cursor = error["loc"], list(base), data
        for part in loc:
            if isinstance(cursor, dict) and part in cursor:
                cursor = cursor[part]
                path.append(part)
            elif isinstance(cursor, list) and isinstance(part, int) and part < len(cursor):
                cursor = cursor[part]
                path.append(part)
        named = [p for p in loc if isinstance(p, str | int)]
        if error["type"] == "extra_forbidden":
            where = "top-level key" if not base and len(loc) == 1 else "key"
            message = f"unknown {where} {str(loc[-1])!r}"
            allowed = _allowed_keys(base, loc)
            if allowed:
                message += f" (allowed: {', '.join(allowed)})"
        elif error["type"] == "missing":
            message = f"missing required field {str(loc[-1])!r}"
            if len(tuple(path)) == len(base) + len(named) - 1:
                path.append(str(loc[-1]))
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            if error.get("type") != "value_error" and named:
                message = f"{'.'.join(str(p) for p in named if not _is_tag(p))}: {message}"
        self.problem(message, tuple(path), node)

    def _unique_ids(self, raw: Any, nodes: list[tuple[int, Node]]) -> set[str]:
        seen: dict[str, int] = {}
        for index, item in enumerate(raw if isinstance(raw, list) else []):
            node_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(node_id, str):
                continue
            if node_id in seen:
                self.problem(
                    f"duplicate node id {node_id!r} (first used by node #{seen[node_id] + 1})",
                    ("graph", index, "id"),
                    node_id,
                )
            else:
                seen[node_id] = index
        good = {node.id for index, node in nodes if seen.get(node.id) == index}
        return good | {node_id for node_id in seen if node_id not in good}

    # -- one node ------------------------------------------------------------

    def _node(self, index: int, node: Node, ids: set[str], data: dict[str, Any]) -> PlannedNode:
        base: Path = ("graph", index)
        deps: set[str] = set()
        for j, dep in enumerate(node.dependencies):
            if dep == node.id:
                self.problem("a node cannot depend on itself", (*base, "dependencies", j), node.id)
            elif dep not in ids:
                self.problem(
                    f"depends on unknown node {dep!r}", (*base, "dependencies", j), node.id
                )
            else:
                deps.add(dep)
        inputs = self._compile(node.inputs, (*base, "inputs"), node.id, ids, deps)
        condition = None
        if isinstance(node.if_, str):
            try:
                condition = Template(
                    node.if_,
                    expression=True,
                    budget=self.planner.template_budget,
                    node=node.id,
                    field="if",
                )
                self._check_refs(condition.refs, (*base, "if"), node.id, ids, deps)
            except TemplateError as exc:
                self.problem(str(exc), (*base, "if"), node.id)
        scope = None
        if node.ionwall_approval_scope is not None:
            scope = self._compile(
                node.ionwall_approval_scope, (*base, "ionwall_approval_scope"), node.id, ids, deps
            )
        wake = None
        if node.until is not None:
            wake = self._compile(node.until, (*base, "until"), node.id, ids, deps)
        transform = None
        if node.transform is not None:
            transform = self.planner.resolve_transform(node.transform)
            if transform is None:
                self.problem(self._unknown_transform(node.transform), (*base, "transform"), node.id)
        if node.cache == "content" and (
            node.subgraph is not None or (transform is not None and not transform.pure)
        ):
            what = (
                f"its transform {node.transform!r} is not declared pure in its manifest"
                if node.transform is not None
                else "a sub-graph is not a pure transform"
            )
            self.problem(
                f"'cache: content' needs a pure transform: {what} (manifest 'pure: true', "
                "read scopes only)",
                (*base, "cache"),
                node.id,
            )
        check = None
        if transform is not None:
            check = self.planner.input_check(transform)
        if node.subgraph is not None:
            self._check_subgraph(
                node.subgraph, str(data.get("name", "")), (*base, "subgraph"), node
            )
            check = self._subgraph_input_check(node.subgraph)
        planned = PlannedNode(
            node,
            index,
            frozenset(deps),
            0,
            inputs,
            condition,
            scope,
            transform,
            node.subgraph,
            check,
            wake,
        )
        for sub, message in planned.input_problems():
            target = check.target if check is not None else planned.target
            self.problem(
                f"does not match the input_schema of {target}: {message}",
                (*base, "inputs", *sub),
                node.id,
            )
        return planned

    def _subgraph_input_check(self, ref: SubgraphRef) -> InputCheck | None:
        catalog = self.planner.graphs
        child = catalog.lookup_graph(ref.name, ref.version) if catalog else None
        if child is None or not child.input_schema:
            return None
        try:
            validator = compile_schema(child.input_schema)
        except jsonschema.SchemaError:
            return None
        if validator is None:
            return None
        return InputCheck(validator, f"graph {ref.name}", child.input_schema)

    def _unknown_transform(self, name: str) -> str:
        mapped = self.planner.transform_names.get(name)
        if mapped:
            return (
                f"unknown transform {name!r} (mapped to {mapped!r} by graph.transform_names,"
                " which is not published)"
            )
        return (
            f"unknown transform {name!r}: publish it, or map the name to a published transform"
            " in graph.transform_names"
        )

    def _compile(
        self, value: Any, path: Path, node_id: str | None, ids: set[str], deps: set[str]
    ) -> Compiled:
        errors: list[tuple[Path, TemplateError]] = []
        compiled = compile_value(
            value, errors, budget=self.planner.template_budget, node=node_id, field=_field_of(path)
        )
        for sub, exc in errors:
            self.problem(str(exc), (*path, *sub), node_id)
        for sub, template in compiled.located:
            self._check_refs(template.refs, (*path, *sub), node_id, ids, deps)
        return compiled

    def _check_refs(
        self, refs: Iterable[Ref], path: Path, node_id: str | None, ids: set[str], deps: set[str]
    ) -> None:
        for ref in refs:
            message = self._ref_problem(ref, node_id, ids)
            if message:
                self.problem(message, path, node_id)
            elif ref[0] == "nodes":
                deps.add(ref[1])

    def _ref_problem(self, ref: Ref, node_id: str | None, ids: set[str]) -> str | None:
        text = ".".join(ref)
        root = ref[0]
        if root == "trigger" and len(ref) > 1 and ref[1] not in TRIGGER_KEYS:
            return f"{text}: trigger has {', '.join(sorted(TRIGGER_KEYS))}"
        if root == "trigger" and len(ref) > 2 and ref[1] == "input_data":
            schema = self.source.data.get("input_schema")
            if (
                isinstance(schema, dict)
                and schema.get("additionalProperties") is False
                and ref[2] not in (schema.get("properties") or {})
            ):
                return f"{text}: input_schema has no property {ref[2]!r}"
        if root == "system" and len(ref) > 1 and ref[1] not in SYSTEM_KEYS:
            return f"{text}: system has {', '.join(sorted(SYSTEM_KEYS))}"
        if root != "nodes":
            return None
        if len(ref) < 2 or ref[1] == "*":
            return f"{text}: name the node by id, as nodes.<id>.outputs.<key>"
        target = ref[1]
        if target not in ids:
            return f"{text}: reference to unknown node {target!r}"
        if target == node_id:
            return f"{text}: a node cannot read its own outputs"
        if len(ref) > 2 and ref[2] not in NODE_KEYS:
            return f"{text}: a node has {', '.join(sorted(NODE_KEYS))}"
        if len(ref) > 3 and ref[2] == "outputs":
            declared = self._declared_outputs(target)
            if declared is not None and ref[3] not in declared:
                return (
                    f"{text}: node {target!r} has no output {ref[3]!r}"
                    f" (it declares {', '.join(declared) or 'none'})"
                )
        return None

    def _declared_outputs(self, node_id: str) -> list[str] | None:
        if self._declared is None:
            self._declared = {}
            for raw in self.source.data.get("graph") or []:
                if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                    outputs = raw.get("outputs")
                    if isinstance(outputs, list | dict):
                        self._declared.setdefault(raw["id"], [str(o) for o in outputs])
        return self._declared.get(node_id)

    def _check_subgraph(self, ref: SubgraphRef, own_name: str, path: Path, node: Node) -> None:
        catalog = self.planner.graphs
        limit = self.planner.max_subgraph_depth
        chain = [own_name]

        def visit(ref: SubgraphRef, depth: int) -> str | None:
            if ref.name in chain:
                return "sub-graph cycle refused: " + " -> ".join([*chain, ref.name])
            if depth > limit:
                return (
                    f"sub-graph nesting deeper than graph.max_subgraph_depth ({limit}): "
                    + " -> ".join([*chain, ref.name])
                )
            child = catalog.lookup_graph(ref.name, ref.version) if catalog else None
            if child is None:
                version = f" version {ref.version!r}" if ref.version else ""
                return f"unknown graph {ref.name!r}{version}: deploy it first"
            chain.append(ref.name)
            for grandchild in child.graph:
                if grandchild.subgraph is not None:
                    found = visit(grandchild.subgraph, depth + 1)
                    if found:
                        return found
            chain.pop()
            return None

        message = visit(ref, 1)
        if message:
            self.problem(message, path, node.id)

    # -- whole graph ---------------------------------------------------------

    def _output(self, data: dict[str, Any], ids: set[str]) -> Compiled | None:
        if data.get("output") is None:
            return None
        return self._compile(data["output"], ("output",), None, ids, set())

    def _schema(self, data: dict[str, Any], key: str) -> Validator | None:
        schema = data.get(key)
        if not isinstance(schema, dict):
            return None
        problems = schema_problems(schema)
        for sub, message in problems:
            self.problem(f"not a valid JSON Schema: {message}", (key, *sub))
        return None if problems else compile_schema(schema)

    def _order(
        self, planned: dict[str, PlannedNode], nodes: list[tuple[int, Node]]
    ) -> tuple[tuple[tuple[str, ...], ...], dict[str, tuple[str, ...]]]:
        dependents: dict[str, list[str]] = {node_id: [] for node_id in planned}
        for node_id, p in planned.items():
            # A dependency on a node that did not validate is reported already.
            known = frozenset(d for d in p.deps if d in planned)
            if known != p.deps:
                planned[node_id] = dataclasses.replace(p, deps=known)
            for dep in known:
                dependents[dep].append(node_id)
        waiting = {node_id: len(p.deps) for node_id, p in planned.items()}
        level_of: dict[str, int] = {}
        current = [node_id for node_id, count in waiting.items() if count == 0]
        levels: list[tuple[str, ...]] = []
        while current:
            levels.append(tuple(current))
            following: list[str] = []
            for node_id in current:
                level_of[node_id] = len(levels) - 1
                for child in dependents[node_id]:
                    waiting[child] -= 1
                    if waiting[child] == 0:
                        following.append(child)
            current = sorted(following, key=lambda n: planned[n].index)
        stuck = [node_id for node_id in planned if node_id not in level_of]
        if stuck:
            cycle = _find_cycle(stuck, planned)
            first = planned[cycle[0]]
            self.problem(
                "dependency cycle: " + " -> ".join([*cycle, cycle[0]]),
                ("graph", first.index, "dependencies" if first.node.dependencies else "inputs"),
                first.id,
            )
        for node_id, level in level_of.items():
            planned[node_id] = dataclasses.replace(planned[node_id], level=level)
        return tuple(levels), {k: tuple(v) for k, v in dependents.items()}


def _placeholders(
    value: Any, scope: Mapping[str, Any] | None, path: Path, unknown: dict[Path, bool]
) -> Any:
    """``value`` with each template rendered (given ``scope``, when it reads no
    node) or replaced by a placeholder recorded in ``unknown``."""
    if isinstance(value, Template):
        if scope is not None and not any(ref[0] == "nodes" for ref in value.refs):
            return value.render(scope)
        unknown[path] = value.text
        return "" if value.text else None
    if isinstance(value, dict):
        return {k: _placeholders(v, scope, (*path, k), unknown) for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholders(v, scope, (*path, i), unknown) for i, v in enumerate(value)]
    return value


def _first_index(raw: Any) -> dict[str, int]:
    first: dict[str, int] = {}
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            first.setdefault(item["id"], index)
    return first


def _find_cycle(stuck: list[str], planned: dict[str, PlannedNode]) -> list[str]:
    """One cycle among ``stuck`` (nodes Kahn's algorithm could not order)."""
    remaining = set(stuck)
    node = stuck[0]
    path: list[str] = []
    seen: dict[str, int] = {}
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = sorted(d for d in planned[node].deps if d in remaining)[0]
    return path[seen[node] :]


def _field_of(path: Path) -> str | None:
    if not path:
        return None
    if path[0] == "graph" and len(path) > 2:
        return ".".join(str(p) for p in path[2:])
    if path[0] == "graph":
        return None if len(path) == 2 else "graph"
    return ".".join(str(p) for p in path)


def _is_tag(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _allowed_keys(base: Path, loc: tuple[Any, ...]) -> list[str]:
    if len(loc) != 1:
        return []
    if base[:1] == ("graph",):
        return sorted(f.alias or name for name, f in Node.model_fields.items())
    return sorted(FluxGraph.model_fields) if not base else []
