"""The CPU pipeline sample (samples/pipeline/run.py --tiny): steps 1-4 and the report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_tiny_pipeline_end_to_end(tmp_path, one_thread):
    spec = importlib.util.spec_from_file_location("pipeline_run", REPO / "samples" / "pipeline" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    out = tmp_path / "pipe"
    assert run.main(["--tiny", "--out", str(out), "--conversations", "24", "--sft-steps", "6"]) == 0
    assert (out / "apm" / "apm.json").exists()
    annotated = [json.loads(l) for l in open(out / "annotated.jsonl")]
    assert len(annotated) == 24 and all(m["label"] for r in annotated for m in r["conversations"] if m["from"] == "Assistant")
    assert (out / "sft" / "adapter_model.safetensors").exists()
    assert (out / "bootstrap" / "round2.jsonl").exists() and (out / "bootstrap" / "round2" / "adapter_model.safetensors").exists()
    report = json.loads((out / "report" / "report.json").read_text())
    assert set(report["attributes"]) == {"humor", "friendliness", "creativity", "verbosity"}
    assert report["generations"] == 4 * 5 * 2  # 4 attributes x 5 targets x 2 lines, 1 persona
