"""`gradient_checkpointing`: each layer runs again in backward instead of keeping its activations, and training
computes the same losses as without it (SFT and DPO, LoRA and full weights)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import toy_rows, write_jsonl

from tuneforge.training import plan
from tuneforge.training.config import TrainConfig


@pytest.mark.parametrize("weights", ["lora", "full"])
def test_layers_run_again_in_backward(tiny_model, tmp_path, weights):
    from test_varlen import _examples

    from tuneforge.models import registry
    from tuneforge.training.sft import loss_sum
    from tuneforge.training.trainer import _build_model

    row = plan.build_rows(_examples(0, [(9, 4), (20, 11)]), capacity=64)[0]
    calls = {}
    for on in (False, True):
        cfg = TrainConfig(model=str(tiny_model), data=tmp_path / "x.jsonl", out=tmp_path / "o", weights=weights,
                          gradient_checkpointing=on)
        model = _build_model(cfg, registry.resolve(str(tiny_model)), "cpu")
        layers = (model.get_base_model() if weights == "lora" else model).model.layers
        runs = []
        layers[1].self_attn.register_forward_hook(lambda *a, runs=runs: runs.append(1))  # (inside the checkpoint)
        model.train()  # (as the trainer runs steps)
        loss = loss_sum(model, row)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads)
        calls[on] = len(runs)
    assert calls == {False: 1, True: 2}


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_training_with_checkpointing_matches_training_without(tiny_model, tmp_path, method):
    from test_dpo import _pairs_file

    from tuneforge.training.trainer import train

    if method == "sft":
        data = write_jsonl(tmp_path / "train.jsonl", toy_rows(8))
    else:
        _pairs_file(data := tmp_path / "prefs.jsonl", 8)

    def run(on: bool) -> list[float]:
        out = tmp_path / f"run-{on}"
        train(TrainConfig(model=str(tiny_model), data=data, out=out, epochs=2, batch_size=4, pack_tokens=96,
                          learning_rate=5e-3, seed=0, method=method, gradient_checkpointing=on))
        return [json.loads(line)["train_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]

    torch.manual_seed(0)
    assert run(True) == pytest.approx(run(False), rel=1e-5)
