"""Helpers for tests and benchmarks of a serving host: real processes, real servers.

- ``publish_wasm(host, name, path)``: publishes a built module under a manifest made here.
- ``deploy(running, text)``: deploys a graph, approves its consent, switches its triggers on.
- ``consent_to(wall, engine, ref)``: approves the IONWALL consent a graph's runs need.
- ``UpProcess``: ``ionflux up`` as a child process (to kill it mid-run, or to
  measure two hosts in a queue group).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ionwall import Ionwall

    from ..graph import Engine
    from ..host import Host
    from ..registry import PublishedTransform
    from ._hosting import RunningHost


def publish_wasm(
    host: Host,
    name: str,
    path: Path,
    *,
    limits: dict[str, int] | None = None,
    version: str = "0.1.0",
) -> PublishedTransform:
    from ..manifest import Manifest, ModuleRef
    from ..store import cid_for_bytes

    data = path.read_bytes()
    manifest = Manifest.model_validate(
        {
            "name": name,
            "version": version,
            "abi": "component",
            "module": ModuleRef(cid=cid_for_bytes(data)),
            "limits": limits or {},
        }
    )
    return host.publish_bytes(manifest, data)


async def deploy(running: RunningHost, text: str, *, message: str = "test") -> str:
    """Deploys graph ``text`` on ``running``, approves its consent; returns its name."""
    engine = running.engine
    plan = engine.validate(text)
    engine.repository.deploy(text, plan.name, plan.graph.version, message)
    consent_to(running.ionwall, engine, plan.name)
    await running.triggers.sync()
    return plan.name


def consent_to(wall: Ionwall, engine: Engine, ref: str, scopes: Sequence[str] = ()) -> str:
    """Approves (once) the consent runs of graph ``ref`` need; returns the grant id.

    ``scopes`` must be the graph's requested set (empty for graphs of pure transforms).
    """
    from ionwall import ConsentRequired

    if not scopes:
        return ""  # nothing to grant: IonwallAuthorizer asks nothing for a scopeless graph
    plan = engine.load(ref)
    try:
        grant = wall.authorize(plan.cid, f"graph {plan.name}", plan.graph.version, list(scopes))
    except ConsentRequired as exc:
        grant = wall.approve(exc.request.id)
    return grant.id


def approve_pending(wall: Ionwall, only: Sequence[str] | None = None) -> list[str]:
    """Approves every pending consent request (narrowed to ``only``); returns grant ids."""
    from ionwall import ConsentStatus

    return [
        wall.approve(c.id, only=list(only) if only else None).id
        for c in wall.consents(ConsentStatus.PENDING)
    ]


class UpProcess:
    """``ionflux up`` in a child process; ``url`` is its HTTP address once started."""

    def __init__(
        self,
        data_dir: Path,
        *,
        nats_url: str | None = None,
        concurrency: int | None = None,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        args = [
            sys.executable,
            "-c",
            "from ionflux.cli import main; main()",
            "--data-dir",
            str(data_dir),
            "up",
            "--http-port",
            "0",
        ]
        if nats_url:
            args += ["--nats-url", nats_url]
        if concurrency:
            args += ["--concurrency", str(concurrency)]
        args += list(extra)
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "up.log"

    def start(self, timeout: float = 30.0) -> UpProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        url_file = self.data_dir / "http.url"
        url_file.unlink(missing_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ionflux up exited: {self.log.read_text()[-3000:]}")
            if url_file.exists() and url_file.read_text().strip():
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"ionflux up did not start: {self.log.read_text()[-3000:]}")

    @property
    def url(self) -> str:
        return (self.data_dir / "http.url").read_text().strip()

    @property
    def nats_url(self) -> str:
        return (self.data_dir / "nats" / "url").read_text().strip()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (drain), then wait; returns the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: a host dying mid-run (nothing drains, nothing is acked)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> UpProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.terminate(10)


def chain_graph(
    name: str,
    *,
    transform: str = "echo",
    nodes: int = 3,
    triggers: Sequence[str] = (),
    slow: str | None = None,
) -> str:
    """A graph of ``nodes`` ``transform`` nodes in a chain, passing ``text`` along.

    ``triggers`` are YAML flow mappings (``{type: manual}``); ``slow`` names a
    transform run first whose failure is ignored (``spin`` with a short timeout:
    a run that takes that long).
    """
    lines = [f"name: {name}", 'version: "1.0.0"', "triggers:"]
    lines += [f"  - {t}" for t in (triggers or ["{type: manual}"])]
    lines += [
        "input_schema:",
        "  type: object",
        "  required: [text]",
        "  properties:",
        "    text: {type: string}",
        "graph:",
    ]
    previous = None
    if slow is not None:
        lines += [
            "  - id: slow",
            f"    transform: {slow}",
            "    inputs: {}",
            "    on_error: continue",
        ]
    for i in range(nodes):
        node = f"n{i}"
        source = "trigger.input_data.text" if previous is None else f"nodes.{previous}.outputs.text"
        lines += [
            f"  - id: {node}",
            f"    transform: {transform}",
            f'    inputs: {{text: "{{{{{source}}}}}"}}',
        ]
        if slow is not None and previous is None:
            lines += ["    dependencies: [slow]"]
        previous = node
    lines += [f'output: {{text: "{{{{nodes.{previous}.outputs.text}}}}"}}']
    return "\n".join(lines) + "\n"
