"""Exactness: a SIGKILLed run resumed from its checkpoint, and a 2-process DDP run, both equal a plain run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from helpers import cli, toy_rows, write_jsonl
from safetensors.torch import load_file


def assert_same_adapter(a, b, atol):
    ta, tb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert ta.keys() == tb.keys()
    worst = max(float((ta[k] - tb[k]).abs().max()) for k in ta)
    assert worst <= atol, f"adapters differ by up to {worst}"
    assert any(float(t.abs().sum()) > 0 for k, t in ta.items() if "lora_B" in k)


def test_sigkill_after_first_checkpoint_then_resume_equals_uninterrupted(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", toy_rows(40))
    args = ["train", "--model", str(tiny_model), "--data", str(data), "--epochs", "15", "--batch-size", "4",
            "--checkpoint-every", "3", "--learning-rate", "3e-3"]
    reference = tmp_path / "reference"
    cli(*args, "--out", str(reference))

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    first = out / "checkpoints" / "step-000003"
    deadline = time.time() + 300
    while not (first / "trainer_state.pt").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter_model.safetensors").exists(), "the run finished before it could be killed"
    killed_at = max(json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines())
    assert killed_at < 150

    cli(*args, "--out", str(out), "--resume")
    assert_same_adapter(out, reference, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 151))  # the steps after the checkpoint ran once more, logged once


def test_two_process_ddp_on_gloo_matches_one_process(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", toy_rows(32))
    args = ["train", "--model", str(tiny_model), "--data", str(data), "--epochs", "2", "--learning-rate", "3e-3"]
    single = tmp_path / "single"
    cli(*args, "--out", str(single))
    ddp = tmp_path / "ddp"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "tuneforge", *args, "--no-packing", "--out", str(ddp)]
    # Without CUDA, accelerate's multi-process launcher (torchrun underneath) starts CPU processes on gloo.
    proc = subprocess.run(launch, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((ddp / "manifest.json").read_text())
    assert manifest["num_processes"] == 2
    # unpacked rows split over two processes vs packed rows in one: the same update, up to float rounding
    assert_same_adapter(ddp, single, atol=2e-5)
