"""The recorder's fast paths keep what the slow ones gave: ``StepResult.with_ids``
carries every field (``dataclasses.replace`` does by construction), and a step's
row shows its masked outputs when something in them is masked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ionflux.graph import RunHistory, StepResult
from ionflux.graph._recorder import RunRecorder

from ionwall import Masker


def _every_field_set() -> StepResult:
    values: dict[str, object] = {}
    for i, field in enumerate(dataclasses.fields(StepResult)):
        values[field.name] = True if field.type == "bool" else f"value-{i}"
    return StepResult(**values)  # type: ignore[arg-type]


def test_with_ids_is_replace_of_the_three_ids() -> None:
    step = _every_field_set()
    assert step.with_ids("in", "out", "run.n") == dataclasses.replace(
        step, inputs_cid="in", outputs_cid="out", step_run_id="run.n"
    )


def test_a_masked_output_is_shown_masked_and_kept_whole(tmp_path: Path) -> None:
    history = RunHistory(tmp_path / "runs.db")
    recorder = RunRecorder(history, None, "run1", masker=Masker(["hunter2"]))
    outputs = {"v": "pw hunter2", "token": "t", "n": 1}
    step = StepResult("n0", "echo@0.1.0", "success", 0, 1.0, 2.0, 1, {"v": 1}, outputs)
    recorder.step(step)
    (row,) = recorder.take()
    assert row.outputs_preview == '{"v":"pw ***","token":"***","n":1}'
    assert row.outputs_json == '{"v":"pw hunter2","token":"t","n":1}'
    plain = StepResult("n1", "echo@0.1.0", "success", 0, 1.0, 2.0, 1, {"v": 1}, {"v": 2})
    recorder.step(plain)
    (row,) = recorder.take()
    assert row.outputs_preview == row.outputs_json == '{"v":2}'
    history.close()


def test_json_text_is_the_encoder_it_replaces() -> None:
    from ionflux.graph._recorder import _ENCODER, json_text

    values = [
        {"v": 0},
        {"a": [1, 2.5, 'x\u00e9"\\', None, True, False], "b": {"c": float("nan")}, "d": 1e300},
        "plain",
        -3,
        [],
        {"path": Path("/x")},  # not JSON: default=str, as before
    ]
    for value in values:
        assert json_text(value) == _ENCODER.encode(value)
