"""Recording a run: its first row, its suspension (waiting for consent, a timer,
or paused) and its end (run log in the pod, then the closing transaction).

``RunRecording`` owns how a run's start and end reach the run history and the
pod, and what the host's health shows when they cannot (``RunNotRecorded``,
``RunLogNotStored``). It reads the engine's settings, history, leases and
health as they are at the time (a test or an operator may replace them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from .._errors import RunLogNotStored, RunNotRecorded, StateError
from ._context import RunTrigger
from ._durable import HISTORY, RUN_LOG, recorded_result
from ._history import RunRow
from ._plan import Plan
from ._recorder import RunRecorder, json_text
from ._result import Mode, RunResult, StepResult
from ._scheduler import RunStatus
from ._schema import apply_defaults

if TYPE_CHECKING:
    from ._engine import Engine


class RunRecording:
    """Writes a run's start, suspension and end for ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def recorded(self) -> None:
        if self.engine.health is not None:
            self.engine.health.ok(HISTORY)

    def not_recorded(self, run_id: str, doing: str, exc: BaseException) -> RunNotRecorded:
        reason = f"{type(exc).__name__}: {exc}"
        if self.engine.health is not None:
            self.engine.health.degraded(HISTORY, reason)
        return RunNotRecorded(run_id, doing, reason)

    def start_row(
        self,
        plan: Plan,
        run_id: str,
        input: Any,
        *,
        mode: Mode,
        trigger: RunTrigger,
        recorder: RunRecorder,
        parent: tuple[str, str] | None,
        run_key: str | None,
        status: str,
        started: float | None = None,
    ) -> tuple[RunRow, Any]:
        """The run's row (not written) and its input with the schema's defaults."""
        value = apply_defaults(plan.graph.input_schema, {} if input is None else input)
        input_text = json_text(value)
        masked = recorder.masker.value(value)
        shown = input_text if masked == value else json_text(masked)
        _, input_cid = recorder.encoded(shown)
        leases = self.engine.leases
        row = self.engine.history.start_run(
            run_id=run_id,
            graph_name=plan.name,
            graph_version=plan.graph.version,
            graph_cid=plan.cid,
            trigger_type=trigger.type,
            trigger_details=dict(trigger.details) if trigger.details else None,
            mode=mode,
            start_time=time.time() if started is None else started,
            input=value,
            input_cid=input_cid,
            parent_run_id=parent[0] if parent else None,
            parent_node_id=parent[1] if parent else None,
            input_text=input_text,
            input_shown=shown,
            write=False,
            run_key=run_key,
            lease=(leases.owner, leases.expiry()) if parent is None else None,
            status=status,
        )
        return row, value

    def suspend(
        self,
        recorder: RunRecorder,
        status: RunStatus,
        errors: list[dict[str, Any]],
        result: RunResult,
        wake_at: float | None = None,
    ) -> RunResult:
        """Records a run waiting (for its owner's consent, a timer, or paused), its
        lease released and its steps so far kept; nobody drives it until it is
        reopened (``wake``, an operator's resume)."""
        consent = next((e.get("consent_id") for e in errors if e.get("consent_id")), None)
        if status is RunStatus.AWAITING_APPROVAL:
            wake_at = time.time() + self.engine.config.graph.approval_timeout_s
        try:
            suspended = self.engine.history.suspend(
                recorder.run_id,
                status=status.value,
                error_details=errors or None,
                wake_at=wake_at,
                consent_id=consent,
                steps=recorder.take(),
                start=recorder.take_start(),
            )
        except (sqlite3.Error, StateError, OSError) as exc:
            doing = f"that the run is {status.value}"
            raise self.not_recorded(recorder.run_id, doing, exc) from exc
        self.recorded()
        if not suspended:  # another host took it over and closed it: its result stands
            record = self.engine.history.get(recorder.run_id)
            assert record is not None
            return recorded_result(self.engine.history, record)
        return result

    async def close(
        self,
        recorder: RunRecorder,
        status: RunStatus,
        output: Any,
        errors: list[dict[str, Any]] | None,
        steps: dict[str, StepResult],
        result: RunResult,
    ) -> RunResult:
        """Stores the run log in the pod, then closes the run in the history, in
        that order: a run whose log could not be stored is recorded as failed
        (``RunLogNotStored``), never as a success with a CID that names nothing."""
        output_preview, output_cid = recorder.value(output)
        result = dataclasses.replace(result, output_cid=output_cid)
        log_text = recorder.run_log(result)
        summary_cid = recorder.text_cid(log_text)
        if summary_cid is not None and recorder.writer is not None:
            try:
                await asyncio.shield(
                    asyncio.wrap_future(recorder.writer.put(log_text.encode("utf-8")))
                )
            except asyncio.CancelledError:
                # Cancelled (a parent stopped) after the run's work ended: it is closed
                # as it ended, without a run log it could not wait for.
                with contextlib.suppress(Exception):
                    self._close_row(
                        recorder,
                        status,
                        (output_preview, output_cid),
                        errors,
                        steps,
                        None,
                        output=output,
                    )
                raise
            except Exception as exc:
                failed = RunLogNotStored(recorder.run_id, f"{type(exc).__name__}: {exc}")
                if self.engine.health is not None:
                    self.engine.health.degraded(RUN_LOG, str(failed))
                status, summary_cid = RunStatus.FAILURE, None
                errors = [*(errors or []), failed.to_dict()]
                output, output_preview, output_cid = None, None, None
                result = dataclasses.replace(
                    result,
                    overall_status=status.value,
                    error_details=errors,
                    output=None,
                    output_cid=None,
                )
            else:
                if self.engine.health is not None:
                    self.engine.health.ok(RUN_LOG)
        result = dataclasses.replace(result, step_results_summary_cid=summary_cid)
        try:
            closed = self._close_row(
                recorder,
                status,
                (output_preview, output_cid),
                errors,
                steps,
                summary_cid,
                output=output,
                # Refused for a missing grant: not final for its trigger (which asks
                # again later), so the run gives its key back. SEAM: awaiting_approval.
                forget_key=status is RunStatus.FAILURE
                and any(e.get("kind") == "consent_required" for e in errors or ()),
            )
        except (sqlite3.Error, StateError, OSError) as exc:
            raise self.not_recorded(recorder.run_id, "the end of the run", exc) from exc
        self.recorded()
        if not closed:  # another host took it over and closed it: its result stands
            record = self.engine.history.get(recorder.run_id)
            assert record is not None
            return recorded_result(self.engine.history, record)
        return result

    def _close_row(
        self,
        recorder: RunRecorder,
        status: RunStatus,
        shown_output: tuple[str | None, str | None],
        errors: list[dict[str, Any]] | None,
        steps: dict[str, StepResult],
        summary_cid: str | None,
        *,
        output: Any = None,
        forget_key: bool = False,
    ) -> bool:
        """The run's closing transaction (with its last steps and, for a short run,
        its start row); ``shown_output``: the output's masked preview and CID."""
        return self.engine.history.finish_run(
            recorder.run_id,
            status=status.value,
            end_time=time.time(),
            output_preview=shown_output[0],
            output_cid=shown_output[1],
            error_details=errors,
            fuel_used=sum(s.fuel_used for s in steps.values()),
            step_results_summary_cid=summary_cid,
            steps=recorder.take(),
            start=recorder.take_start(),
            output=output,
            forget_key=forget_key,
        )

    def finish(
        self,
        recorder: RunRecorder,
        status: RunStatus,
        output: Any,
        errors: list[dict[str, Any]] | None,
        steps: dict[str, StepResult],
        plan: Plan,
        result: RunResult | None = None,
    ) -> RunResult:
        output_preview, output_cid = recorder.value(output)
        summary_cid = None
        if result is not None:
            result = dataclasses.replace(result, output_cid=output_cid)
            log_text = recorder.run_log(result)
            summary_cid = recorder.text_cid(log_text)
            result = dataclasses.replace(result, step_results_summary_cid=summary_cid)
        self._close_row(recorder, status, (output_preview, output_cid), errors, steps, summary_cid)
        if summary_cid is not None:
            # Written after the run's closing transaction: the pod write's file
            # system work would otherwise slow that commit down (~0.4 ms measured).
            recorder.put_text(log_text, summary_cid)
        if result is None:
            now = time.time()
            result = RunResult(
                execution_id=recorder.run_id,
                graph_name=plan.name,
                graph_version=plan.graph.version,
                graph_cid=plan.cid,
                mode="run_all",
                overall_status=status.value,
                output=None,
                steps=list(steps.values()),
                started_at=now,
                ended_at=now,
                error_details=errors,
            )
        return result
