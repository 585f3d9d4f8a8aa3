"""Templates: dotted paths, structured values, ``if:`` expressions, the sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from ionflux import TemplateBudgetExceeded, TemplateError
from ionflux.graph import Template, TemplateBudget, compile_value

SCOPE: dict[str, Any] = {
    "trigger": {"input_data": {"x": 2, "name": "ada", "tags": ["a", "b"], "cid": None}},
    "nodes": {
        "fetch": {"outputs": {"obj": {"steps": [1, 2, 3]}, "n": 5}, "status": "success"},
        "skipped": {"outputs": None, "status": "skipped"},
    },
    "system": {"run_id": "01RUN", "timestamp_utc_iso": "2026-01-01T00:00:00.000Z"},
    "null": None,
}


def render(source: str) -> Any:
    return Template(source).render(SCOPE)


def test_whole_value_templates_keep_their_type() -> None:
    assert render("{{trigger.input_data.x}}") == 2
    assert render("{{ nodes.fetch.outputs.obj }}") == {"steps": [1, 2, 3]}
    assert render("{{ trigger.input_data.tags }}") == ["a", "b"]
    assert render("{{ nodes.fetch.outputs.obj.steps | length }}") == 3
    assert render("{{ {'a': trigger.input_data.x * 2, 'b': [null]} }}") == {"a": 4, "b": [None]}


def test_mixed_templates_render_text() -> None:
    assert (
        render("plan_{{trigger.input_data.name}}_{{system.run_id}}.json") == "plan_ada_01RUN.json"
    )
    assert render("tags={{ trigger.input_data.tags }} none={{ null }}") == 'tags=["a","b"] none='
    assert render("{% if trigger.input_data.x > 1 %}big{% else %}small{% endif %}") == "big"


def test_missing_values_read_as_null() -> None:
    assert render("{{ trigger.input_data.missing }}") is None
    assert render("{{ nodes.skipped.outputs.anything }}") is None
    assert render("{{ nodes.skipped.outputs.a.b.c }}") is None
    assert render("{{ trigger.input_data.cid != null }}") is False
    assert render("{{ trigger.input_data.absent != null }}") is False
    assert render("{{ trigger.input_data.name != null }}") is True
    assert render("{{ nodes.skipped.outputs.x == null }}") is True


def test_if_expressions() -> None:
    cases = {
        "trigger.input_data.x >= 2 and not (trigger.input_data.name == 'bob')": True,
        "trigger.input_data.x < 2 or nodes.fetch.status == 'success'": True,
        "'a' in trigger.input_data.tags": True,
        "nodes.fetch.outputs.n > 10": False,
    }
    for expression, expected in cases.items():
        assert Template(expression, expression=True).render(SCOPE) is expected
        assert render("{{ " + expression + " }}") is expected


def test_refs_are_the_names_read() -> None:
    template = Template("{{ nodes.fetch.outputs.obj['steps'] ~ trigger.input_data.x }}")
    assert template.refs == [
        ("nodes", "fetch", "outputs", "obj", "steps"),
        ("trigger", "input_data", "x"),
    ]
    compiled = compile_value({"a": ["{{ system.run_id }}", 3], "b": "plain"})
    assert compiled.refs == [("system", "run_id")]
    assert compiled.render(SCOPE) == {"a": ["01RUN", 3], "b": "plain"}
    kept = compiled.render(SCOPE, keep=lambda t: True)
    assert kept == {"a": ["{{ system.run_id }}", 3], "b": "plain"}


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ trigger.__init__ }}",
        "{{ trigger['__class__'] }}",
        "{{ (trigger | attr('__class__')) }}",
        "{{ lipsum.__globals__ }}",
        "{{ range.__self__ }}",
        "{% for c in ''.__class__.__mro__ %}{{ c }}{% endfor %}",
    ],
)
def test_python_internals_are_refused(source: str) -> None:
    with pytest.raises(TemplateError) as caught:
        Template(source).render(SCOPE)
    assert (
        "not readable" in str(caught.value)
        or "sandbox" in str(caught.value)
        or ("unknown name" in str(caught.value))
    )


def test_immutable_sandbox_refuses_mutation() -> None:
    with pytest.raises(TemplateError, match="sandbox"):
        render("{{ trigger.input_data.tags.append('x') }}")
    assert SCOPE["trigger"]["input_data"]["tags"] == ["a", "b"]


def test_runtime_failures_are_template_errors() -> None:
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        render("{{ trigger.input_data.x / 0 }}")
    with pytest.raises(TemplateError, match="has no attribute"):
        render("{{ nodes.skipped.outputs.n > 3 }}")


def test_syntax_errors_fail_at_compile_time() -> None:
    with pytest.raises(TemplateError, match="syntax error"):
        Template("{{ trigger.input_data.x + }}")
    with pytest.raises(TemplateError, match="unknown name 'os'"):
        Template("{{ os.environ }}")


# -- budgets ------------------------------------------------------------------------

BIG: dict[str, Any] = {
    **SCOPE,
    "trigger": {"input_data": {"n": 9, "s": "abc", "l": list(range(1000)), "t": "x" * 1000}},
}


@pytest.mark.parametrize(
    ("source", "limit"),
    [
        # integers: refused from their operands, before Python computes them
        (
            "{{ trigger.input_data.n ** (trigger.input_data.n ** trigger.input_data.n) }}",
            "int_bits",
        ),
        ("{{ 9 ** (9 ** 9) }}", "int_bits"),
        ("{{ (2 ** 4000) * (2 ** 4000) }}", "int_bits"),
        # strings and lists: sizes estimated before they are built
        ("{{ trigger.input_data.s * 400000000 }}", "value_bytes"),
        ("text {{ trigger.input_data.s * 400000000 }}", "value_bytes"),
        ("{{ [trigger.input_data.t] * 10000 }}", "value_bytes"),
        ("{{ trigger.input_data.t ~ (trigger.input_data.t * 4200) }}", "value_bytes"),
        ("{{ trigger.input_data.s | center(1000000000) }}", "value_bytes"),
        ("{{ trigger.input_data.s.center(1000000000) }}", "value_bytes"),
        ("{{ trigger.input_data.s.ljust(1000000000) }}", "value_bytes"),
        ("{{ trigger.input_data.s.zfill(1000000000) }}", "value_bytes"),
        ("{{ 'a\tb'.expandtabs(1000000000) }}", "value_bytes"),
        ("{{ '{:>1000000000}'.format(1) }}", "value_bytes"),
        ("{{ '%1000000000d' % 1 }}", "value_bytes"),
        ("{{ '%1000000000d' | format(1) }}", "value_bytes"),
        ("{{ ('x\\n' * 100) | indent(100000) }}", "value_bytes"),
        (
            "{{ trigger.input_data.t | wordwrap(1, wrapstring=trigger.input_data.t * 5) }}",
            "value_bytes",
        ),
        ("{{ trigger.input_data.t | replace('', trigger.input_data.t * 10) }}", "value_bytes"),
        ("{{ trigger.input_data.t.replace('x', trigger.input_data.t * 10) }}", "value_bytes"),
        ("{{ (trigger.input_data.t * 4000) | list }}", "value_bytes"),
        ("{{ [1] | batch(1000000000, 0) | list }}", "value_bytes"),
        ("{{ [1] | slice(1000000000) | list }}", "value_bytes"),
        ("{{ trigger.input_data.l | tojson(indent=100000) }}", "value_bytes"),
        ("{{ trigger.input_data.s.join([trigger.input_data.t] * 5000) }}", "value_bytes"),
        ("{{ ([trigger.input_data.s] * 3000) | join(trigger.input_data.t * 2) }}", "value_bytes"),
        (
            "{{ trigger.input_data.l | map('string') | map('center', 100000) | join }}",
            "value_bytes",
        ),
        ("{{ (1).to_bytes(1000000000, 'big') }}", "value_bytes"),
        # a list of references to one big list is as big as what it would print
        (
            "{% set a = [trigger.input_data.t] * 1000 %}{% set b = [a, a, a, a, a] %}{{ b }}",
            "value_bytes",
        ),
        (
            "{% set a = [trigger.input_data.t] * 1000 %}{{ [a, a, a, a, a] | string }}",
            "value_bytes",
        ),
        # work: loops (nested too), every iteration a step
        (
            "{% for a in trigger.input_data.l %}{% for b in trigger.input_data.l %}"
            "{% endfor %}{% endfor %}",
            "steps",
        ),
        (
            "{% for a in trigger.input_data.l %}{% for b in trigger.input_data.l %}"
            "{{ a }}{% endfor %}{% endfor %}",
            "steps",
        ),
        ("{{ trigger.input_data.l | map('string') | map('string') | list | length }}", None),
    ],
)
def test_templates_have_a_budget(source: str, limit: str | None) -> None:
    template = Template(source, node="n1", field="inputs.x")
    if limit is None:
        template.render(BIG)  # within every budget
        return
    with pytest.raises(TemplateBudgetExceeded) as caught:
        template.render(BIG)
    assert caught.value.limit == f"graph.template_max_{limit}"
    assert caught.value.node == "n1" and caught.value.field == "inputs.x"
    assert "node 'n1' field 'inputs.x'" in str(caught.value)
    assert f"raise graph.template_max_{limit}" in str(caught.value)
    assert caught.value.to_dict()["kind"] == "template_budget"


def test_a_budget_is_per_template_and_can_be_raised() -> None:
    source = "{% for a in trigger.input_data.l %}{{ a }}{% endfor %}"  # 1,000 steps and more
    with pytest.raises(TemplateBudgetExceeded, match="template_max_steps = 500"):
        Template(source, budget=TemplateBudget(max_steps=500)).render(BIG)
    assert Template(source, budget=TemplateBudget(max_steps=5_000)).render(BIG).endswith("999")
    tight = TemplateBudget(max_value_bytes=100)
    with pytest.raises(TemplateBudgetExceeded, match="template_max_value_bytes = 100"):
        Template("{{ trigger.input_data.t | upper }}", budget=tight).render(BIG)


def test_normal_templates_are_within_the_default_budget() -> None:
    assert render("{{ trigger.input_data.x * 2 ** 10 }}") == 2048
    assert render("{{ trigger.input_data.tags | join(', ') | upper }}") == "A, B"
    assert render("{{ '%05d' | format(trigger.input_data.x) }}") == "00002"
    assert render("{{ '{:>4}'.format(trigger.input_data.x) }}") == "   2"
    assert render("{% for t in trigger.input_data.tags %}{{ loop.index }}{{ t }}{% endfor %}") == (
        "1a2b"
    )
    assert render("{{ [[1, 2], [3]] | sum(start=[]) }}") == [1, 2, 3]
    assert render("{{ trigger.input_data.name ~ '-' ~ trigger.input_data.x }}") == "ada-2"


def test_unknown_filters_fail_when_the_template_is_compiled() -> None:
    with pytest.raises(TemplateError, match="syntax error: No filter named 'nope'"):
        Template("{{ trigger.input_data.x | nope }}")
