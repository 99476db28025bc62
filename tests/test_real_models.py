"""The claims that matter, on the real bundled models: fine-tuning makes them good at a task (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_demo_smollm2_learns_email_extraction(data_dir):
    """The README's main job: held-out exact match >= 0.8 after LoRA, and >= 4x the base model's."""
    proc = cli("demo", "--data-dir", str(data_dir), "--test-limit", "30", timeout=1800)
    assert "fine-tuned (LoRA)" in proc.stdout
    result = json.loads(next((data_dir / "runs").glob("demo-*/demo.json")).read_text())
    before, after = result["before"]["exact_match"], result["after"]["exact_match"]
    assert result["test_rows"] == 30
    assert after >= 0.8, result
    assert after >= 4 * before, result


def test_gemma_base_fine_tunes_and_improves_on_ticket_routing(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join((ROOT / "examples/ticket_routing/train.jsonl").read_text().splitlines(True)[:96]))
    test = ROOT / "examples/ticket_routing/test.jsonl"

    def exact_match(*model_args: str) -> float:
        out = cli("eval", *model_args, "--data", str(test), "--limit", "24", timeout=900).stdout
        return float(out.split("exact match ")[1].split()[0])

    before = exact_match("--model", "gemma-3-270m")
    cli("train", "--model", "gemma-3-270m", "--data", str(train), "--out", str(tmp_path / "gemma"),
        "--epochs", "1", timeout=1800)
    manifest = json.loads((tmp_path / "gemma" / "manifest.json").read_text())
    assert manifest["base_model"] == "gemma-3-270m"
    after = exact_match("--model", str(tmp_path / "gemma"))  # the adapter folder names its base
    assert after >= before + 0.3, (before, after)
