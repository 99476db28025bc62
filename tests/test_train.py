"""Training on the tiny model through the real CLI: it learns, writes what it promises, refuses bad input."""

from __future__ import annotations

import json

import pytest
from helpers import cli, toy_rows, write_jsonl
from safetensors.torch import load_file


@pytest.fixture
def toy(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", toy_rows(48))


def test_lora_training_changes_weights_and_writes_outputs(tiny_model, toy, tmp_path):
    val = write_jsonl(tmp_path / "val.jsonl", toy_rows(8, seed=1))
    out = tmp_path / "run"
    cli("train", "--model", str(tiny_model), "--data", str(toy), "--validation", str(val), "--out", str(out),
        "--epochs", "3", "--batch-size", "8", "--learning-rate", "5e-3", "--checkpoint-every", "5", "--eval-every", "6")
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    adapter = load_file(out / "adapter_model.safetensors")
    lora_b = [t for k, t in adapter.items() if "lora_B" in k]
    assert len(lora_b) == 4 * 7  # every linear layer of every block (q k v o gate up down)
    assert all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: training moved every one
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 19))
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 0.4  # a random tiny model: slow but sure
    valid = [m["valid_loss"] for m in metrics if "valid_loss" in m]
    assert len(valid) == 3 and valid[-1] < valid[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base_model"] == str(tiny_model)
    assert manifest["training_file"]["examples"] == 48 and len(manifest["training_file"]["sha256"]) == 64
    assert manifest["hyperparameters"]["epochs"] == 3 and manifest["hyperparameters"]["lora_rank"] == 16
    assert {"torch", "transformers", "peft"} <= set(manifest["versions"])
    assert manifest["metrics"]["step"] == 18
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000010", "step-000015", "step-000018"]


def test_bad_file_is_refused_with_the_report_and_no_traceback(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", [*toy_rows(3), "{not json", {"messages": []}])
    proc = cli("train", "--model", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "run"), check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"{data}:4: json: not valid JSON" in proc.stderr
    assert f"{data}:5: messages: empty" in proc.stderr
    assert "2 of 5 examples are invalid: fix them or pass --skip-invalid" in proc.stderr
    assert not (tmp_path / "run" / "adapter_model.safetensors").exists()


def test_skip_invalid_trains_on_the_valid_rows(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", [*toy_rows(6), "{not json"])
    out = tmp_path / "run"
    cli("train", "--model", str(tiny_model), "--data", str(data), "--out", str(out), "--epochs", "1",
        "--skip-invalid")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training_file"]["examples"] == 6 and manifest["training_file"]["skipped_invalid"] == 1


@pytest.mark.parametrize("args, message", [
    (["--epochs", "many"], "--epochs must be 'auto' or a whole number"),
    (["--method", "qlora"], "--method"),
    (["--batch-size", "0"], "--batch-size"),
])
def test_bad_flags_get_one_line(tiny_model, toy, tmp_path, args, message):
    proc = cli("train", "--model", str(tiny_model), "--data", str(toy), "--out", str(tmp_path / "r"), *args,
               check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_model_and_missing_file(toy, tmp_path):
    proc = cli("train", "--model", "gpt-9", "--data", str(toy), "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 1 and "unknown model 'gpt-9'" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("train", "--model", "smollm2-135m-instruct", "--data", str(tmp_path / "nope.jsonl"),
               "--out", str(tmp_path / "r"), check=False)
    assert proc.returncode == 1 and "nope.jsonl: no such file" in proc.stderr


def test_refuses_to_overwrite_a_run_without_resume(tiny_model, toy, tmp_path):
    out = tmp_path / "run"
    cli("train", "--model", str(tiny_model), "--data", str(toy), "--out", str(out), "--epochs", "1")
    proc = cli("train", "--model", str(tiny_model), "--data", str(toy), "--out", str(out), check=False)
    assert proc.returncode == 1 and "pass --resume" in proc.stderr


def test_full_fine_tuning_and_export_of_a_merged_adapter(tiny_model, toy, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    full = tmp_path / "full"
    cli("train", "--model", str(tiny_model), "--data", str(toy), "--out", str(full), "--weights", "full",
        "--epochs", "1", "--learning-rate", "1e-3")
    tuned = AutoModelForCausalLM.from_pretrained(full)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert not torch.equal(tuned.model.layers[0].mlp.down_proj.weight, base.model.layers[0].mlp.down_proj.weight)

    lora = tmp_path / "lora"
    cli("train", "--model", str(tiny_model), "--data", str(toy), "--out", str(lora), "--epochs", "1",
        "--learning-rate", "1e-2")
    merged = tmp_path / "merged"
    cli("export", str(lora), "--merge", "--out", str(merged), "--dtype", "fp32")
    ids = torch.tensor([[1, 200, 300, 400, 500]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), lora)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
    assert torch.allclose(expected, got, atol=1e-4)
    assert json.loads((merged / "manifest.json").read_text())["dtype"] == "fp32"
    assert (merged / "tokenizer.json").exists()
