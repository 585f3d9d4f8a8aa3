"""A full data disk, end to end, on a real small tmpfs: clean failure, degraded
health, and recovery once space returns.

The disk is a real ``tmpfs`` of a few MB mounted for the test (``mount`` needs
root: the tests skip, naming why, where it fails) and filled by a file written
until the kernel says ENOSPC. Nothing stands in for the disk.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import MANIFESTS, REPO, TESTING, make_config, on_nats
from ionflux.http import RunningHost, start_host
from ionflux.http.testing import chain_graph, consent_to, deploy, publish_wasm
from ionflux.triggers import NatsServer

from ionwall import AuditError, AuditLog

IONFLUX = REPO / ".venv" / "bin" / "ionflux"
DISK_MB = 64
PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs allocates whole pages
HOOK = "/webhooks/invoke/store"
ECHO_HOOK = "/webhooks/invoke/digest"
STORE_GRAPH = f"""\
name: store
version: "1.0.0"
triggers:
  - {{type: webhook, config: {{path: {HOOK}, method: POST, authentication_method: ionwall_jwt}}}}
input_schema:
  type: object
  required: [path, data]
  properties:
    path: {{type: string}}
    data: {{}}
graph:
  - id: put
    transform: pod-store
    inputs: {{path: "{{{{trigger.input_data.path}}}}", data: "{{{{trigger.input_data.data}}}}"}}
output: {{cid: "{{{{nodes.put.outputs.cid}}}}"}}
"""


def mount_tmpfs(where: Path, size_mb: int) -> Path:
    """Mounts a ``size_mb`` tmpfs at ``where``; skips the test if that is refused."""
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk test (needs root): {r.stderr.strip()}")
    return where


def unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = mount_tmpfs(tmp_path / "disk", DISK_MB)
    yield disk
    unmount(disk)


def fill(disk: Path) -> Path:
    """Writes a file until the disk has no byte left; returns it (unlink to free)."""
    filler = disk / "filler"
    with filler.open("ab", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
            block = bytes(size)
            try:
                while True:
                    f.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


def test_fill_leaves_no_room(tmp_path: Path, small_disk: Path) -> None:
    filler = fill(small_disk)
    with pytest.raises(OSError) as info:
        (small_disk / "one-more").write_bytes(b"x")
    assert info.value.errno == errno.ENOSPC
    filler.unlink()
    (small_disk / "one-more").write_bytes(b"x")


def _append(log: AuditLog, reason: str) -> None:
    log.append(subject="s", transform="t", scope="emit_log:info", allowed=True, reason=reason)


def _verify_cli(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IONFLUX_")}
    return subprocess.run(
        [str(IONFLUX), "--data-dir", str(data_dir), "audit", "verify"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_the_audit_log_on_a_full_disk_refuses_then_repairs_itself(small_disk: Path) -> None:
    # The disk fills while entries are appended: the kernel takes what fits in
    # the log's last page and no more, which is the torn line the issue found
    # (every scoped call denied for good, until the file was edited by hand).
    log = AuditLog(small_disk / "ionwall")
    failures: list[AuditError | None] = []
    log.watch_writes(failures.append)
    _append(log, "before the disk fills")
    if log.path.stat().st_size % PAGE == 0:  # leave room in the log's last page
        _append(log, "one more")
    log.checkpoint()
    filler = fill(small_disk)
    room = -log.path.stat().st_size % PAGE
    with pytest.raises(AuditError, match=r"(?i)no space left"):
        _append(log, "x" * (room + 100))  # longer than what fits: part of it lands
    assert failures and failures[-1] is not None and "space" in str(failures[-1])
    assert not log.path.read_bytes().endswith(b"\n")  # the torn line the issue found
    with pytest.raises(AuditError):  # still full: still refused (and nothing half-cut)
        _append(log, "still full")
    filler.unlink()
    _append(log, "after space is freed")
    assert failures[-1] is None
    report = log.verify()
    assert report.ok, report
    assert len(report.repairs) == 1, report
    (side,) = log.path.parent.glob("audit.jsonl.torn-*")
    assert len(side.read_bytes()) == room
    assert log.tail(1)[0].reason == "after space is freed"
    log.close()


def test_a_torn_audit_line_then_a_gated_call_then_verify_with_the_cli(tmp_path: Path) -> None:
    # The partial line a failed write left behind (written by hand here), then a
    # gate decision of a host process: it is recorded, and `ionflux audit
    # verify` passes and names the repair. A middle edit still fails verify.
    from ionflux.host import Host

    from ionwall import CallContext

    config = make_config(tmp_path / "data")
    host = Host(config)
    gate = host.ionwall.gate(None)
    ctx = CallContext("bafkreiguest", "digest", run_id="run-1", node_id="n1")
    for i in range(3):
        gate.check(ctx, f"read_pod_data:reports/{i}.json")
    log = host.ionwall.audit
    host.close()
    with log.path.open("ab") as f:
        f.write(b'{"decision":"deny","grant_id":null,"index":3,"node_id":"n1","pr')
    bad = _verify_cli(config.data_dir)
    assert bad.returncode != 0 and "entry 3 is truncated" in bad.stderr, bad.stderr

    host = Host(config)
    decision = host.ionwall.gate(None).check(ctx, "read_pod_data:reports/9.json")
    assert not decision.allowed and "audit" not in decision.reason  # a real decision
    host.close()
    good = _verify_cli(config.data_dir)
    assert good.returncode == 0, good.stderr
    assert "torn last line(s) were cut by a writer, as entries 3 record" in good.stdout
    sides = list((config.data_dir / "ionwall").glob("audit.jsonl.torn-*"))
    assert len(sides) == 1 and sides[0].read_bytes().endswith(b'"pr')

    lines = log.path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"reports/1.json", b"reports/X.json")
    log.path.write_bytes(b"".join(lines))
    edited = _verify_cli(config.data_dir)
    assert edited.returncode != 0 and "entry 1 was altered" in edited.stderr, edited.stderr


# -- a serving host whose data directory fills -------------------------------


@pytest.fixture
async def on_small_disk(
    small_disk: Path, nats_server: NatsServer, built: Path
) -> AsyncIterator[RunningHost]:
    """A serving host whose data directory is the small tmpfs, with the graph
    ``store`` (one pod-store node: a scoped call, an audit entry and a pod put)
    behind the webhook ``HOOK``, its consent given, and ``digest`` (three echo
    nodes) behind ``ECHO_HOOK``."""
    config = make_config(small_disk / "data")
    config = on_nats(config, nats_server)
    running = await start_host(config)
    running.host.health.probe_interval_s = 0  # probe at every /healthz: no clock in the test
    running.host.publish(MANIFESTS / "pod-store.yaml")
    publish_wasm(running.host, "echo", TESTING / "echo.wasm")
    await deploy(running, STORE_GRAPH)
    consent_to(running.ionwall, running.engine, "store", ["write_pod_data:**"])
    await deploy(
        running,
        chain_graph(
            "digest",
            triggers=[
                f"{{type: webhook, config: {{path: {ECHO_HOOK}, method: POST, "
                "authentication_method: ionwall_jwt}}"
            ],
        ),
    )
    yield running
    await running.aclose(5)


def _token(running: RunningHost, graph: str) -> dict[str, str]:
    grant = running.ionwall.issue_token([f"execute_graph:{graph}"])
    return {"Authorization": f"Bearer {grant.token}"}


_tokens: dict[tuple[int, str], dict[str, str]] = {}


def _auth(running: RunningHost, graph: str) -> dict[str, str]:
    """A token per host and graph, issued once (while the disk has room: a
    token is a row in the grant store)."""
    key = (id(running), graph)
    if key not in _tokens:
        _tokens[key] = _token(running, graph)
    return _tokens[key]


async def _store(
    running: RunningHost, http: httpx.AsyncClient, path: str, data: object
) -> httpx.Response:
    body = {"path": path, "data": data}
    return await http.post(HOOK, json=body, headers=_auth(running, "store"))


async def _echo(running: RunningHost, http: httpx.AsyncClient, text: str) -> httpx.Response:
    return await http.post(ECHO_HOOK, json={"text": text}, headers=_auth(running, "digest"))


def _stored(running: RunningHost, cid: str) -> bool:
    from ionflux import NotFound

    try:
        running.host.pod.get_bytes(cid)
    except NotFound:
        return False
    return True


def _assert_no_unstored_success(running: RunningHost, r: httpx.Response) -> dict[str, object]:
    """A run that reports success has its run log (and its output's CIDs) stored."""
    body: dict[str, object] = r.json()
    if r.status_code == 200 and body.get("overall_status") == "success":
        summary = body.get("step_results_summary_cid")
        assert isinstance(summary, str) and _stored(running, summary), (
            f"the run reports success with a run log CID that was never stored: {body}"
        )
        output = body.get("output")
        if isinstance(output, dict) and isinstance(output.get("cid"), str):
            assert _stored(running, output["cid"]), body
    return body


def _succeeded(running: RunningHost, r: httpx.Response) -> bool:
    body = _assert_no_unstored_success(running, r)
    return r.status_code == 200 and body.get("overall_status") == "success"


async def test_a_full_data_disk_fails_cleanly_degrades_health_and_recovers(
    on_small_disk: RunningHost, small_disk: Path
) -> None:
    running = on_small_disk
    _auth(running, "digest")
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as http:
        assert _succeeded(running, await _store(running, http, "reports/1.json", {"n": 1}))
        assert (await http.get("/healthz")).status_code == 200

        filler = fill(small_disk)
        # The node's scoped call (an audit entry) and its pod put cannot be
        # written: the run fails, typed; nothing half-written reports success.
        r = await _store(running, http, "reports/2.json", {"n": 2, "pad": "x" * 20_000})
        assert not _succeeded(running, r), r.text
        full = await http.get("/healthz")
        assert full.status_code == 503, full.text
        assert full.json()["status"] == "degraded"
        reasons = full.json()["components"]
        assert {"audit", "pod"} & set(reasons), reasons
        assert any("space" in why.lower() for why in reasons.values()), reasons

        filler.unlink()
        # With no traffic (a load balancer took the host out on 503), the
        # audit's and the pod's probes see the room again.
        back = (await http.get("/healthz")).json()["components"]
        assert not {"audit", "pod"} & set(back), back
        assert _succeeded(running, await _store(running, http, "reports/3.json", {"n": 3}))
        assert _succeeded(running, await _echo(running, http, "after"))
        assert (await http.get("/healthz")).json()["status"] == "ok"
    report = running.ionwall.audit_verify()
    assert report.ok, report
    print(f"\n[figures] full disk: {r.status_code} {r.text[:300]}; /healthz {reasons}")


async def test_a_run_whose_run_log_cannot_be_stored_does_not_report_success(
    on_small_disk: RunningHost, small_disk: Path
) -> None:
    # Three echo nodes: no scoped call, no pod write of their own; only the run
    # log needs the disk. The issue: such a run reported success with a run log
    # CID that was never stored.
    running = on_small_disk
    async with httpx.AsyncClient(base_url=running.url, timeout=60) as http:
        assert _succeeded(running, await _echo(running, http, "before"))
        filler = fill(small_disk)
        r = await _echo(running, http, "while full")
        _assert_no_unstored_success(running, r)
        filler.unlink()
        assert _succeeded(running, await _echo(running, http, "after"))


_WRITER = """
import sys
from pathlib import Path
from ionwall import AuditError, AuditLog

log = AuditLog(Path(sys.argv[1]))
failed = False
i = 0
while not Path(sys.argv[2]).exists():
    i += 1
    try:
        log.append(subject="s", transform=sys.argv[3], scope="emit_log:info", allowed=True,
                   reason=f"{sys.argv[3]} {i} " + "x" * (i % 300))
    except AuditError as exc:
        if not failed:
            print("failed", exc, flush=True)
        failed = True
        continue
    if failed:
        print("ok again", flush=True)
        failed = False
log.close()
print("done", flush=True)
"""


def test_writer_processes_sharing_the_log_through_a_full_disk(small_disk: Path) -> None:
    # Two processes append to one log (as `ionflux up --workers` does) while the
    # disk fills and is freed. Each refuses while full and goes on after; the
    # torn lines are cut once each, under the shared lock, never appended after.
    import selectors
    import sys
    import time

    directory = small_disk / "ionwall"
    AuditLog(directory).close()
    stop = small_disk.parent / "stop"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(directory), str(stop), f"w{n}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    selector = selectors.DefaultSelector()
    for p in procs:
        assert p.stdout is not None
        selector.register(p.stdout, selectors.EVENT_READ, p)

    said: list[str] = []

    def wait_for(word: str) -> None:
        """Until every writer has printed a line starting with ``word``."""
        waiting = set(procs)
        deadline = time.monotonic() + 60  # a bound on a hang, not a measurement
        while waiting:
            assert time.monotonic() < deadline, f"writers never said {word!r}"
            for key, _ in selector.select(timeout=1):
                p = key.data
                line = key.fileobj.readline()  # type: ignore[union-attr]
                assert line, f"writer {p.args[-1]} ended: {p.wait()}"
                if line.startswith(word):
                    said.append(line.strip())
                    waiting.discard(p)

    try:
        filler = fill(small_disk)
        wait_for("failed")
        filler.unlink()
        wait_for("ok again")
    finally:
        stop.write_bytes(b"")
        for p in procs:
            p.wait(timeout=60)
            assert p.stdout is not None
            p.stdout.close()
        selector.close()
    log = AuditLog(directory)
    report = log.verify()
    assert report.ok, report
    sides = list(directory.glob("audit.jsonl.torn-*"))
    assert len(sides) == len(report.repairs)
    print(
        f"\n[figures] two writers through a full disk: {report.entries} entries, "
        f"{len(report.repairs)} torn lines cut; {said}"
    )
    log.close()
