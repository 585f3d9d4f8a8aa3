"""Run records and run logs mask secrets (configured values, sensitive field
names) as the seeds' sensitive_fields_to_mask_in_log asks; the values nodes
pass to each other and the caller's result are untouched."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import GuestPublisher, make_config
from ionflux.graph import Engine
from ionflux.host import Host

GRAPH = """
name: masked
version: "1.0.0"
graph:
  - id: first
    transform: echo
    inputs:
      text: "{{trigger.input_data.text}}"
      api_key: "{{trigger.input_data.api_key}}"
      filler: "{{trigger.input_data.filler}}"
"""


async def test_records_and_run_log_are_masked(
    tmp_path: Path, built: Path, publish_guest: GuestPublisher
) -> None:
    config = make_config(tmp_path / "data")
    config = config.model_copy(
        update={"ionwall": config.ionwall.model_copy(update={"secret_values": ["hunter2"]})}
    )
    host = Host(config)
    publish_guest(host, "echo")
    engine = Engine.for_host(host)
    graph = tmp_path / "masked.yaml"
    graph.write_text(GRAPH)
    given = {"text": "my password is hunter2", "api_key": "sk-live-123", "filler": "x" * 400}
    try:
        result = await engine.run(str(graph), given)
        assert result.overall_status == "success", result.error_details
        # The caller gets the real values back.
        assert result.output["api_key"] == "sk-live-123"
        assert "hunter2" in result.output["text"]
        engine.flush()
        run = engine.history.get(result.execution_id)
        assert run is not None
        stored = [run.input_preview or ""]
        for step in engine.history.steps(result.execution_id):
            stored += [step.inputs_preview or "", step.outputs_preview or ""]
            for cid in (step.inputs_cid, step.outputs_cid):
                if cid:
                    stored.append(host.pod.get_bytes(cid).decode())
        log = host.pod.get_bytes(result.step_results_summary_cid).decode()
        stored.append(log)
        assert json.loads(log)["run"]["execution_id"] == result.execution_id
        for text in stored:
            assert "hunter2" not in text and "sk-live-123" not in text, text
        assert any("***" in text for text in stored)
        # Re-runs replay the real input.
        again = await engine.rerun(result.execution_id)
        assert again.output["api_key"] == "sk-live-123"
    finally:
        engine.close()
        host.close()
