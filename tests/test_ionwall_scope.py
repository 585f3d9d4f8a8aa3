"""Scopes: grammar, glob semantics, inclusion, and narrowing that never widens."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ionwall
from ionwall import ScopeError, covers, narrow, parse_scope
from ionwall._scope import ACTIONS, narrow_all


@pytest.mark.parametrize(
    "text",
    [
        "read_pod_data:reactor_master_plans",
        "publish_nats_topic:ionflux.reactor.*",
        "http_fetch:api.example.com",
        "execute_master_plan:*",
        "emit_log:warn",
        "read_config:api.base_url",
        "manage_ionwall:*",
    ],
)
def test_seed_style_scopes_parse_and_round_trip(text: str) -> None:
    assert str(parse_scope(text)) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("read_pod_data", "expected action:resource"),
        ("read_pod_data:", "empty"),
        ("launch_missiles:all", "unknown action 'launch_missiles'"),
        ("invoke_ionflux_controller_admin_actions:manage_agent_lifecycle", "unknown action"),
        ("read_pod_data:reports/ x", "whitespace"),
        ("read_pod_data:a***", "***"),
        ("publish_nats_topic:ionflux.>", "'>' is not supported"),
        ("emit_log:shout", "unknown log level"),
        (":reports", "unknown action ''"),
    ],
)
def test_unparseable_scope_names_the_string(text: str, problem: str) -> None:
    with pytest.raises(ScopeError) as info:
        parse_scope(text)
    assert repr(text) in str(info.value)
    assert problem in str(info.value)
    assert isinstance(info.value, ionwall.IonwallError)


@pytest.mark.parametrize(
    ("granted", "concrete", "expected"),
    [
        ("http_fetch:api.example.com", "http_fetch:api.example.com", True),
        ("http_fetch:api.example.com", "http_fetch:api.example.com.evil.net", False),
        ("http_fetch:api.example.com", "http_fetch:api.example.com:8443", False),
        ("http_fetch:api.example.com", "http_fetch:evilapi.example.com", False),
        ("http_fetch:API.Example.com", "http_fetch:api.example.com", True),
        ("http_fetch:*.example.com", "http_fetch:api.example.com", True),
        ("http_fetch:*.example.com", "http_fetch:example.com", False),
        ("http_fetch:*.example.com", "http_fetch:a.b.example.com", False),
        ("http_fetch:*.example.com", "http_fetch:api.example.com:8080", False),
        ("http_fetch:*.example.com", "http_fetch:example.com.evil.net", False),
        ("http_fetch:**.example.com", "http_fetch:a.b.example.com", True),
        ("http_fetch:127.0.0.1:8080", "http_fetch:127.0.0.1:9090", False),
        ("http_fetch:localhost", "http_fetch:localhost:6379", False),
        ("http_fetch:api.example.com:*", "http_fetch:api.example.com:8443", True),
        ("publish_nats_topic:ionflux.*", "publish_nats_topic:ionflux.digest", True),
        ("publish_nats_topic:ionflux.*", "publish_nats_topic:ionflux.digest.daily", False),
        ("publish_nats_topic:ionflux.**", "publish_nats_topic:ionflux.digest.daily", True),
        ("publish_nats_topic:ionflux.**", "publish_nats_topic:ionflux", False),
        ("read_pod_data:reports/*", "read_pod_data:reports/01.json", True),
        ("read_pod_data:reports/*", "read_pod_data:reports/2026/01.json", False),
        ("read_pod_data:reports/**", "read_pod_data:reports/2026/01.json", True),
        ("read_pod_data:reports/2026-*.json", "read_pod_data:reports/2026-01.json", True),
        ("read_pod_data:reports/*", "read_pod_data:reports2/x", False),
        ("read_pod_data:*", "read_pod_data:bafkreigh2akiscaildc", True),
        ("read_pod_data:*", "write_pod_data:x", False),
        ("emit_log:*", "emit_log:error", True),
        ("execute_master_plan:*", "execute_master_plan:bafyplan", True),
    ],
)
def test_covers(granted: str, concrete: str, expected: bool) -> None:
    assert covers(granted, concrete) is expected


def test_a_grant_never_widens_a_request() -> None:
    requested = "publish_nats_topic:ionflux.digest.*"
    assert str(narrow(requested, "publish_nats_topic:ionflux.**")) == requested
    # Approving something narrower than asked grants only that.
    assert str(narrow(requested, "publish_nats_topic:ionflux.digest.daily")) == (
        "publish_nats_topic:ionflux.digest.daily"
    )
    # `ionflux.*` covers one token only: its overlap with the request is empty.
    assert narrow(requested, "publish_nats_topic:ionflux.*") is None
    assert narrow("read_pod_data:a/*", "write_pod_data:a/*") is None


def test_narrow_all_drops_redundant_scopes() -> None:
    requested = ionwall.parse_scopes(["read_pod_data:reports/*", "read_pod_data:reports/01.json"])
    approved = ionwall.parse_scopes(["read_pod_data:**"])
    assert [str(s) for s in narrow_all(requested, approved)] == ["read_pod_data:reports/*"]


# -- properties --------------------------------------------------------------------

_ACTION = st.sampled_from(["publish_nats_topic", "read_pod_data", "http_fetch"])
_PIECE = st.sampled_from(["a", "b", ".", "/", ":", "*", "**"])


def _resource(pieces: list[str]) -> str | None:
    text = "".join(pieces)
    if not text or "***" in text:
        return None
    return text


@st.composite
def scopes(draw: st.DrawFn, action: str | None = None) -> ionwall.Scope:
    act = action or draw(_ACTION)
    text = _resource(draw(st.lists(_PIECE, min_size=1, max_size=6)))
    if text is None:
        text = "a"
    return parse_scope(f"{act}:{text}")


@st.composite
def scope_pairs(draw: st.DrawFn) -> tuple[ionwall.Scope, ionwall.Scope]:
    act = draw(_ACTION)
    return draw(scopes(act)), draw(scopes(act))


def _expansions(scope: ionwall.Scope, draw: Callable[[st.SearchStrategy[str]], str]) -> str:
    seps = ACTIONS[scope.action]
    out = []
    for token in re.findall(r"\*\*|\*|[^*]", scope.resource):
        if token == "**":
            out.append(draw(st.text(alphabet="ab./:", min_size=1, max_size=4)))
        elif token == "*":
            out.append(
                draw(
                    st.text(
                        alphabet="".join(c for c in "abc" if c not in seps), min_size=1, max_size=3
                    )
                )
            )
        else:
            out.append(token)
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(scope_pairs())
def test_property_narrow_never_widens(pair: tuple[ionwall.Scope, ionwall.Scope]) -> None:
    requested, approved = pair
    result = narrow(requested, approved)
    if result is not None:
        assert covers(requested, result)
        assert covers(approved, result)


@settings(max_examples=300, deadline=None)
@given(st.data(), scope_pairs())
def test_property_covers_is_sound(
    data: st.DataObject, pair: tuple[ionwall.Scope, ionwall.Scope]
) -> None:
    """If ``g`` covers pattern ``q``, every concrete resource ``q`` names matches ``g``."""
    granted, asked = pair
    if covers(granted, asked):
        for _ in range(5):
            concrete = _expansions(asked, data.draw)
            scope = parse_scope(f"{asked.action}:{concrete}")
            assert covers(granted, scope), (granted, asked, concrete)
            assert covers(asked, scope)


@settings(max_examples=200, deadline=None)
@given(scopes(), scopes(), scopes())
def test_property_covers_is_reflexive_and_transitive(
    a: ionwall.Scope, b: ionwall.Scope, c: ionwall.Scope
) -> None:
    assert covers(a, a)
    if covers(a, b) and covers(b, c):
        assert covers(a, c)
