"""The web console in a real Chromium (Debian's ``chromium``, driven by Playwright)
against a real ``ionflux up`` (uvicorn, nats-server, IONWALL, wasm guests).

What a person sees is asserted: a consent request appearing in the open inbox
with no reload, an approval narrowed in the form, the run's graph turning green
on its open page, a revoked grant asking again, refusals without a session or
from another site. No browser is ever downloaded: Playwright is pointed at
``/usr/bin/chromium`` (installed by scripts/bootstrap.sh); without it these
tests are skipped with that reason. Waits are on what the page shows
(Playwright's ``expect``), bounded only to stop a hang.

``IONFLUX_SCREENSHOTS=docs`` (``just screenshots``) writes the README's
docs/console-*.png; otherwise the screenshots go to build/screenshots/.
"""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import MANIFESTS, REPO, TESTING, make_config
from ionflux.graph import Engine
from ionflux.host import Host
from ionflux.http.testing import UpProcess, chain_graph, publish_wasm

playwright_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, BrowserContext, Page, expect  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BOUND_MS = 60_000  # stops a hang; never a measure
SUBJECT = f"consoletest{uuid.uuid4().hex[:8]}"

expect.set_options(timeout=BOUND_MS)
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (scripts/bootstrap.sh)"
)


def shots_dir() -> Path:
    if os.environ.get("IONFLUX_SCREENSHOTS") == "docs":
        return REPO / "docs"
    return REPO / "build" / "screenshots"


def graph_text(name: str) -> str:
    """``send`` publishes (it needs publish_nats_topic, asked for at the run's
    start), then a diamond of echo nodes: four nodes to watch turn green."""
    return "\n".join(
        [
            f"name: {name}",
            'version: "1.0.0"',
            "triggers:",
            "  - {type: manual}",
            "graph:",
            "  - id: send",
            "    transform: nats-publish",
            f'    inputs: {{subject: "{SUBJECT}.sent", payload: {{n: 1}}}}',
            "  - id: left",
            "    transform: echo",
            '    inputs: {text: "{{nodes.send.outputs.subject}}"}',
            "  - id: right",
            "    transform: echo",
            '    inputs: {text: "{{nodes.send.outputs.subject}}"}',
            "  - id: join",
            "    transform: echo",
            '    inputs: {text: "{{nodes.left.outputs.text}} {{nodes.right.outputs.text}}"}',
            "",
        ]
    )


AGENT = """\
agent_name: "Echo Agent"
version: "1.0.0"
flux_graph_dsl_yaml: |
  name: echo_agent
  version: "1.0.0"
  graph:
    - id: say
      transform: echo
      inputs: {text: "hi"}
"""


def prepare(data_dir: Path, *graphs: str) -> None:
    """A data directory with the standard transforms and echo published and ``graphs``
    deployed, no consent given; approved runs are resumed every 0.2 s."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "ionflux.yaml").write_text(
        "limits: {fuel: 1000000000000}\n"
        "graph: {resume_interval_s: 0.2}\n"
        "console: {poll_interval_s: 0.2}\n"
    )
    host = Host(make_config(data_dir))
    try:
        for manifest in sorted(MANIFESTS.glob("*.yaml")):  # the Reactor's need pod-*
            host.publish(manifest)
        publish_wasm(host, "echo", TESTING / "echo.wasm")
        engine = Engine.for_host(host)
        try:
            for text in graphs:
                plan = engine.validate(text)
                engine.repository.deploy(text, plan.name, plan.graph.version, "test")
        finally:
            engine.close()
    finally:
        host.close()


def cli(data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ionflux")), "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Served:
    def __init__(self, up: UpProcess) -> None:
        self.up = up
        self.url = up.url
        self.token = cli(
            up.data_dir,
            "token",
            "issue",
            "--scope",
            "execute_graph:*",
            "--scope",
            "manage_ionwall:*",
            "--scope",
            "execute_master_plan:*",
            "--expires",
            "1h",
        )
        self.api = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    def link(self) -> str:
        """A new one-time sign-in link (``ionflux console``)."""
        return cli(self.up.data_dir, "console")

    def start_run(self, graph: str) -> str:
        r = self.api.post(f"/graphs/{graph}/runs", json={}, headers={"Prefer": "respond-async"})
        assert r.status_code == 202, r.text
        return str(r.json()["run_id"])

    def pending(self) -> list[dict[str, Any]]:
        r = self.api.get("/ionwall/consents", params={"status": "pending"})
        assert r.status_code == 200, r.text
        return list(r.json())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, built: Path) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("console") / "host"
    prepare(data, graph_text("asks"), graph_text("asks2"), chain_graph("chain", nodes=3))
    up = UpProcess(data).start()
    try:
        served = Served(up)
        yield served
        served.api.close()
    finally:
        up.terminate(15)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile: no cookies from another test."""
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    ctx.set_default_timeout(BOUND_MS)
    yield ctx
    ctx.close()


def sign_in(page: Page, served: Served) -> None:
    page.goto(served.link())
    expect(page.get_by_role("heading", name="Consent inbox")).to_be_visible()


def mark(page: Page) -> None:
    """A marker that a reload would lose: the page changed by itself if it is still there."""
    page.evaluate("window.__unreloaded = true")


def still_unreloaded(page: Page) -> bool:
    return bool(page.evaluate("window.__unreloaded === true"))


def test_a_run_asks_in_the_live_inbox_an_approval_narrowed_there_turns_its_graph_green(
    served: Served, context: BrowserContext
) -> None:
    inbox = context.new_page()
    sign_in(inbox, served)
    expect(inbox.get_by_test_id("inbox-empty")).to_be_visible()
    mark(inbox)

    run_id = served.start_run("asks")
    run_page = context.new_page()
    run_page.goto(f"{served.url}/console/runs/{run_id}")
    expect(run_page.get_by_test_id("run-status")).to_have_text("awaiting_approval")
    expect(run_page.get_by_text("This run waits for your consent")).to_be_visible()
    dag = run_page.get_by_test_id("dag")
    expect(dag.locator("[data-node]")).to_have_count(4)
    mark(run_page)

    # The request appears in the open inbox by itself, in the owner's words.
    card = inbox.locator("section.consent")
    expect(card).to_have_count(1)
    expect(card.get_by_role("heading")).to_contain_text("Graph “asks”")
    expect(card).to_contain_text("Messaging (the NATS bus)")
    expect(card).to_contain_text("unsigned")
    assert still_unreloaded(inbox)
    inbox.screenshot(path=str(shots_dir() / "console-inbox.png"), full_page=True)

    # Approve narrower: only the subjects this run uses, for one hour.
    narrowed = f"publish_nats_topic:{SUBJECT}.*"
    card.get_by_role("textbox", name=re.compile("publish_nats_topic")).fill(narrowed)
    card.get_by_label("Expires after").select_option("1h")
    card.get_by_role("button", name="Approve only what is ticked").click()
    expect(inbox.get_by_test_id("inbox-empty")).to_be_visible()
    mark(inbox)  # the form's answer loaded the inbox again

    # The open run page goes on by itself: every node of the graph turns green.
    expect(run_page.get_by_test_id("run-status")).to_have_text("success")
    nodes = dag.locator("[data-node]")
    for i in range(4):
        expect(nodes.nth(i)).to_have_attribute("data-status", "success")
    assert still_unreloaded(run_page)
    run_page.screenshot(path=str(shots_dir() / "console-run.png"), full_page=True)

    # The grant holds the narrowed scope only; revoking it (confirmed) makes the
    # next run ask again.
    grants = context.new_page()
    grants.goto(f"{served.url}/console/grants?status=active&q=asks")
    row = grants.locator("tr[data-grant]", has_text=narrowed)
    expect(row).to_have_count(1)
    row.get_by_role("link", name="Revoke").click()
    expect(grants.get_by_role("heading")).to_contain_text("Revoke grant")
    grants.get_by_role("button", name="Yes, revoke it").click()
    revoked = grants.locator("tr[data-grant]", has_text=narrowed)
    expect(revoked.locator(".badge")).to_have_text("revoked")

    again = served.start_run("asks")
    expect(inbox.locator("section.consent")).to_have_count(1)
    assert still_unreloaded(inbox)
    inbox.locator("section.consent").get_by_role("button", name="Deny").click()
    expect(inbox.get_by_test_id("inbox-empty")).to_be_visible()
    r = served.api.get(f"/runs/{again}")
    assert r.json()["status"] in ("awaiting_approval", "failure")  # denied: it fails


def test_nothing_is_shown_without_a_session_and_a_pasted_token_signs_in(
    served: Served, context: BrowserContext
) -> None:
    page = context.new_page()
    for path in ("/", "/console/inbox", "/console/runs", "/console/grants", "/console/audit"):
        page.goto(served.url + path)
        expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
        expect(page.get_by_role("navigation")).to_have_count(0)
    bare = httpx.get(f"{served.url}/console/live/inbox", timeout=30)
    assert bare.status_code == 401 and "consent" not in bare.text
    posted = httpx.post(f"{served.url}/console/signout", timeout=30)
    assert posted.status_code == 401

    # A used link is refused; a token with the console's scopes signs in.
    link = served.link()
    page.goto(link)
    expect(page.get_by_role("heading", name="Consent inbox")).to_be_visible()
    other = context.browser.new_context() if context.browser else None
    assert other is not None
    try:
        second = other.new_page()
        second.goto(link)
        expect(second.get_by_role("alert")).to_contain_text("used already")
        second.get_by_label("IONWALL token").fill(served.token)
        second.get_by_role("button", name="Sign in").click()
        expect(second.get_by_role("heading", name="Consent inbox")).to_be_visible()
        second.get_by_role("button", name="Sign out").click()
        expect(second.get_by_role("heading", name="Sign in to the console")).to_be_visible()
        second.goto(f"{served.url}/console/inbox")
        expect(second.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    finally:
        other.close()


class _Attacker(http.server.BaseHTTPRequestHandler):
    """Another site (``localhost`` is another site than ``127.0.0.1``) whose page
    posts a form to the console as soon as it loads."""

    target = ""

    def do_GET(self) -> None:
        body = (
            f'<form id="f" method="post" action="{self.target}">'
            '<input name="csrf" value="guess"></form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_cross_site_form_post_is_refused_and_changes_nothing(
    served: Served, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, served)
    served.start_run("asks2")
    page.wait_for_selector("section.consent")
    consent_id = page.locator("section.consent").get_attribute("data-consent")
    assert consent_id

    _Attacker.target = f"{served.url}/console/consents/{consent_id}/deny"
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        landed = context.new_page()
        with landed.expect_response(_Attacker.target) as answer:
            landed.goto(f"http://localhost:{evil.server_address[1]}/")
        assert answer.value.status in (401, 403)
    finally:
        evil.shutdown()
        evil.server_close()
    assert [c["id"] for c in served.pending()] == [consent_id]

    # The same form with the session's cookie but sent from elsewhere, or from
    # here without the CSRF token: refused too.
    cookie = next(c for c in context.cookies() if c["name"] == "ionflux_console")
    jar = {"ionflux_console": cookie["value"]}
    cross = httpx.post(
        _Attacker.target,
        data={"csrf": "guess"},
        cookies=jar,
        headers={"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost:1"},
    )
    assert cross.status_code == 403
    no_token = httpx.post(
        _Attacker.target, data={"csrf": "guess"}, cookies=jar, headers={"Origin": served.url}
    )
    assert no_token.status_code == 403
    assert [c["id"] for c in served.pending()] == [consent_id]
    page.locator("section.consent").get_by_role("button", name="Deny").click()
    expect(page.get_by_test_id("inbox-empty")).to_be_visible()


def test_deploy_and_debug_a_graph_step_by_step_then_agents_plans_and_audit(
    served: Served, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, served)
    page.get_by_role("link", name="Graphs").click()
    # A graph deployed from the page (a new version of the graph it names).
    page.get_by_text("Deploy a graph").click()
    page.get_by_label(re.compile("FluxGraph")).fill(chain_graph("fresh", nodes=1))
    page.get_by_role("button", name="Deploy", exact=True).click()
    expect(page.locator("section[data-graph='fresh']")).to_contain_text("1 version(s)")
    chain = page.locator("section[data-graph='chain']")
    chain.get_by_label("Input (JSON)").fill('{"text": "hi"}')
    chain.get_by_role("button", name="Run step by step").click()

    # Stopped before the first node, its inputs shown; continue, then skip the next.
    expect(page.get_by_test_id("debug-node")).to_have_text("n0")
    expect(page.locator("pre").first).to_contain_text('"text": "hi"')
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_test_id("debug-node")).to_have_text("n1")
    expect(page.get_by_text("Done so far")).to_be_visible()
    page.locator("details[data-done='n0'] summary").click()
    expect(page.locator("details[data-done='n0'] pre")).to_contain_text('"text": "hi"')
    page.get_by_role("button", name="Skip this node").click()
    expect(page.get_by_test_id("debug-node")).to_have_text("n2")
    page.get_by_role("button", name="Abort the run").click()
    expect(page.get_by_test_id("debug-status")).to_be_visible()
    page.get_by_role("link", name="its run page").click()
    dag = page.get_by_test_id("dag")
    expect(dag.locator("[data-node='n0']")).to_have_attribute("data-status", "success")
    expect(dag.locator("[data-node='n1']")).to_have_attribute("data-status", "skipped")
    expect(dag.locator("[data-node='n2']")).not_to_have_attribute("data-status", "success")

    # An agent deployed from its definition, then retired (the Reactor's API).
    page.get_by_role("navigation").get_by_role("link", name="Agents").click()
    expect(page.get_by_role("heading", name="Agents and master plans")).to_be_visible()
    expect(page.get_by_text("did not answer")).to_have_count(0)
    page.get_by_text("Deploy an agent").click()
    page.get_by_label(re.compile("Agent definition")).fill(AGENT)
    page.get_by_role("button", name="Deploy", exact=True).click()
    row = page.locator("tr[data-agent='echo_agent']")
    expect(row.locator(".badge")).to_have_text("active")

    # A master plan calling it asks once, in the seed's words, in the inbox.
    plan = {
        "name": "console-plan",
        "version": "1.0.0",
        "required_scopes": ["read_pod_data:reports/*"],
        "steps": [{"step_id": "a", "agent_to_call": "echo_agent"}],
    }
    stored = served.api.post("/reactor/plans", json={"plan": plan})
    assert stored.status_code == 201, stored.text
    waits = served.api.post("/reactor/plans/console-plan/runs", json={})
    assert waits.json()["overall_status"] == "awaiting_approval", waits.text
    page.get_by_role("navigation").get_by_role("link", name="Inbox").click()
    prompt = page.get_by_test_id("plan-prompt")
    expect(prompt).to_contain_text("ION Reactor Agent wants to execute Master Plan: 'console-plan'")
    card = page.locator("section.consent", has=prompt)
    expect(card.get_by_role("heading")).to_contain_text("Plan “console-plan”")
    card.get_by_role("button", name="Deny").click()
    expect(page.get_by_test_id("inbox-empty")).to_be_visible()
    page.get_by_role("navigation").get_by_role("link", name="Agents").click()
    row.get_by_role("button", name="Retire").click()
    expect(row.locator(".badge")).to_have_text("retired")

    # The audit log's chain verified with one button.
    page.get_by_role("link", name="Audit").click()
    page.get_by_role("button", name="Verify the chain").click()
    expect(page.get_by_test_id("verify")).to_contain_text("The audit log verifies")


def test_readable_at_phone_width_and_usable_from_the_keyboard(
    served: Served, browser: Browser
) -> None:
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.set_default_timeout(BOUND_MS)
    try:
        page = phone.new_page()
        sign_in(page, served)
        done = served.api.post("/graphs/chain/runs", json={"input": {"text": "x"}})
        assert done.status_code == 200, done.text
        run_id = done.json()["execution_id"]
        for path in ("/console/inbox", "/console/runs", f"/console/runs/{run_id}",
                     "/console/grants", "/console/audit", "/console/graphs"):  # fmt: skip
            page.goto(served.url + path)
            wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert wide <= 0, f"{path} scrolls sideways by {wide}px at 390px"
        page.screenshot(path=str(REPO / "build" / "screenshots" / "console-phone.png"))

        # From the keyboard alone: the skip link first, then the menu.
        page.goto(f"{served.url}/console/inbox")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.get_by_role("link", name="Runs").focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    finally:
        phone.close()
