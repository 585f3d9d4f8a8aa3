"""What a run leaves behind while it runs: step rows in the history and large
values in the pod.

Values are stored in IONPOD as JSON text (a UnixFS file, so ``pod-fetch`` and
``ionflux pod get`` read them back); values that fit the preview are kept
whole in the history row and get no CID. Pod writes happen behind the run on
one writer thread (``ValueWriter``): the CID is computed from the bytes at
once, the block lands a moment later; ``Engine.flush()`` (and ``close()``)
wait for every pending write; the run log is awaited before the run is
closed (a run whose log cannot be stored is not a success). Step rows are
buffered and written in one transaction: when the run ends, or at the latest
``flush_after_s`` after the oldest was buffered (a timer), so a long run
stays observable and resumable from what it did. A node that is not
idempotent is written ``running`` before its call and done after it, at once.
A host that dies mid-run loses at most that window of step rows: those steps
run again when the run is resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, Protocol

from ionwall import Masker

from .._errors import IonfluxError
from ..store import cid_for_bytes
from ._history import PREVIEW_CHARS, RunHistory, RunRow, StepRecord
from ._result import RunResult, StepResult


class ValuePod(Protocol):
    """The part of IONPOD a run uses."""

    def put_bytes(self, data: bytes) -> str: ...

    def get_bytes(self, cid: str) -> bytes: ...


# One encoder for every record: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)
# ``JSONEncoder.encode`` still makes its C encoder anew on every call (a third of
# the cost of encoding a step's small inputs): the same C encoder, made once. No
# circular-reference check: records hold JSON data, which cannot be circular.
_C_ENCODE = (
    None
    if c_make_encoder is None
    else c_make_encoder(None, str, encode_basestring, None, ":", ",", False, False, True)
)


def json_text(value: Any) -> str:
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def shorten(text: str, limit: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


log = logging.getLogger("ionflux.graph")


class ValueWriter:
    """Writes values to the pod on one background thread; the CID is known at once."""

    def __init__(self, pod: ValuePod):
        self.pod = pod
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ionflux-values")
        self._pending: set[Future[str]] = set()
        self._lock = threading.Lock()

    def submit(self, data: bytes, cid: str | None = None) -> str:
        """Queues ``data`` for the pod; ``cid`` when already computed from ``data``."""
        cid = cid or cid_for_bytes(data)
        self.put(data)
        return cid

    def put(self, data: bytes) -> Future[str]:
        """Queues ``data`` for the pod; the future fails if it could not be stored.
        One writer thread: when it is done, every value queued before it is too."""
        future = self._pool.submit(self.pod.put_bytes, data)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[str]) -> None:
        with self._lock:
            self._pending.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.warning("could not store a run value in the pod: %s", exc)

    def flush(self, timeout: float | None = None) -> None:
        with self._lock:
            pending = list(self._pending)
        wait(pending, timeout=timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class RunRecorder:
    def __init__(
        self,
        history: RunHistory,
        writer: ValueWriter | None,
        run_id: str,
        *,
        flush_after_s: float = 0.5,
        masker: Masker | None = None,
    ):
        self.masker = masker or Masker()
        self.history = history
        self.writer = writer
        self.run_id = run_id
        self.flush_after_s = flush_after_s
        self._buffer: list[StepRecord] = []
        self._oldest = 0.0
        # Each step's inputs and outputs as masked for its row, kept for the run log.
        self._shown: dict[str, tuple[Any, Any]] = {}
        self._start: RunRow | None = None  # the run's row while it is not written yet
        self._start_timer: asyncio.TimerHandle | None = None
        self._flush_timer: asyncio.TimerHandle | None = None

    def defer_start(self, row: RunRow, after_s: float) -> None:
        """Writes the run's row ``after_s`` from now, or with the run's last
        transaction if it ends first (``take_start``): a short run costs one
        transaction, a longer one shows as ``running`` while it runs."""
        self._start = row
        self._start_timer = asyncio.get_running_loop().call_later(after_s, self.write_start)

    def write_start(self) -> None:
        row = self.take_start()
        if row is None:
            return
        try:
            self.history.write_start(row)
        except Exception:
            log.exception("could not record the start of run %s; retried at its end", self.run_id)
            self._start = row

    def take_start(self) -> RunRow | None:
        """The run's row if it is not written yet (then the caller writes it)."""
        if self._start_timer is not None:
            self._start_timer.cancel()
            self._start_timer = None
        row, self._start = self._start, None
        return row

    def value(self, value: Any) -> tuple[str | None, str | None]:
        """(preview, CID): the CID only when the preview is not the whole value."""
        return self._masked(self.masker.value(value))

    def _masked(self, shown: Any) -> tuple[str | None, str | None]:
        if shown is None:
            return None, None
        return self.encoded(json_text(shown))

    def encoded(self, text: str) -> tuple[str, str | None]:
        """``value`` for a value already masked and encoded by ``json_text``."""
        if len(text) <= PREVIEW_CHARS:
            return text, None
        return shorten(text), self.put_text(text)

    def put_text(self, text: str, cid: str | None = None) -> str | None:
        if self.writer is None:
            return None
        try:
            return self.writer.submit(text.encode("utf-8"), cid)
        except IonfluxError:
            return None  # the record keeps its preview

    def text_cid(self, text: str) -> str | None:
        """The CID ``put_text(text)`` will store it under (None without a pod)."""
        return None if self.writer is None else cid_for_bytes(text.encode("utf-8"))

    def running(self, node_id: str, target: str, started: float) -> None:
        """Records ``node_id`` as in flight, committed before it returns, with every
        row buffered so far: a node that must not run twice (``idempotent: false``)
        is known to have started if the host dies during its call."""
        self._buffer.append(
            StepRecord(
                f"{self.run_id}.{node_id}",
                self.run_id,
                node_id,
                target,
                "running",
                started,
                None,
                1,
                None,
                None,
                None,
                None,
                None,
                None,
                0,
                None,
            )
        )
        self.flush()

    def step(self, step: StepResult, *, durable: bool = False) -> StepResult:
        """Buffers the step's row (its real outputs with it, to resume from). The
        buffer is written within ``flush_after_s``; ``durable``: now."""
        shown = self.masker.value(step.inputs), self.masker.value(step.outputs)
        self._shown[step.node_id] = shown
        inputs_preview, inputs_cid = self._masked(shown[0])
        step_run_id = f"{self.run_id}.{step.node_id}"
        real = None
        if step.status in ("success", "skipped") and step.outputs is not None:
            real = json_text(step.outputs)
        outputs_preview: str | None
        if real is not None and shown[1] == step.outputs:
            # Nothing was masked: the row's preview is the text of the real outputs.
            outputs_preview, outputs_cid = self.encoded(real)
        else:
            outputs_preview, outputs_cid = self._masked(shown[1])
        if not self._buffer:
            self._oldest = time.monotonic()
            if not durable and self._flush_timer is None:
                with contextlib.suppress(RuntimeError):  # no loop: flushed at the end
                    loop = asyncio.get_running_loop()
                    self._flush_timer = loop.call_later(self.flush_after_s, self._timed_flush)
        self._buffer.append(
            StepRecord(
                step_run_id=step_run_id,
                run_id=self.run_id,
                node_id=step.node_id,
                target=step.target,
                status=step.status,
                start_time=step.started_at,
                end_time=step.ended_at,
                attempts=step.attempts,
                inputs_preview=inputs_preview,
                inputs_cid=inputs_cid,
                outputs_preview=outputs_preview,
                outputs_cid=outputs_cid,
                error_message=(step.error or {}).get("message") or step.reason,
                error=step.error,
                fuel_used=step.fuel_used,
                child_run_id=step.child_run_id,
                outputs_json=real,
                cached=step.cached,
                cache_key=step.cache_key if step.status == "success" else None,
            )
        )
        if durable or time.monotonic() - self._oldest >= self.flush_after_s:
            self.flush()
        return step.with_ids(inputs_cid, outputs_cid, step_run_id)

    def run_log(self, result: RunResult) -> str:
        """The run log stored in the pod: the whole result, masked. The steps' inputs
        and outputs were masked when they were recorded; the rest is masked here."""
        mask = self.masker
        run = result.to_dict()
        steps = []
        for step in run.pop("steps"):
            values = step.pop("inputs"), step.pop("outputs")
            shown = self._shown.get(step["node_id"]) or (
                mask.value(values[0]),
                mask.value(values[1]),
            )
            step = mask.value(step)
            step["inputs"], step["outputs"] = shown
            steps.append(step)
        run = mask.value(run)
        run["steps"] = steps
        return json_text({"kind": "ionflux.run_log/1", "run": run})

    def take(self) -> list[StepRecord]:
        """The buffered rows, for the run's closing transaction."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        rows, self._buffer = self._buffer, []
        return rows

    def _timed_flush(self) -> None:
        self._flush_timer = None
        try:
            self.flush()
        except Exception:  # kept: the run's closing transaction writes them
            log.exception("could not record the steps of run %s; retried at its end", self.run_id)

    def flush(self) -> None:
        rows = self.take()
        if rows:
            self.write_start()  # a step's row never comes before its run's
            try:
                self.history.record_steps(rows)
            except BaseException:
                self._buffer = rows + self._buffer
                raise
