"""Templates: dotted paths, structured values, ``if:`` expressions, the sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from ionflux._errors import TemplateError
from ionflux.graph import Template, compile_value

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
