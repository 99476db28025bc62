"""The fused output layer + log-softmax (training/fused_head.py): the same log-probabilities and gradients as the
usual logits path, for SFT rows and DPO pair rows, without keeping any [tokens, vocabulary] tensor for backward."""

from __future__ import annotations

import pytest
import torch
from test_dpo import _random_pairs
from test_varlen import _examples, _lora_model

from tuneforge.training import fused_head, plan
from tuneforge.training.pair_rows import collate_pairs, pair_logps, stack_rows
from tuneforge.training.sft import loss_sum


def _usual(monkeypatch):
    """The logits path, as every model without a frozen plain output layer takes it."""
    monkeypatch.setattr(fused_head, "frozen_head", lambda model: None)


def _loss_grads_and_saved(model, fn):
    """fn's value, the gradients it gives, and the largest number of elements of any tensor (not a weight) kept for
    backward."""
    model.zero_grad()
    weights = {p.data_ptr() for p in model.parameters()}
    saved = [0]

    def pack(t):
        saved.append(0 if t.data_ptr() in weights else t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = fn()
    value.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return value.detach(), grads, max(saved)


def _assert_close(fused, usual):
    assert torch.allclose(fused[0], usual[0], rtol=1e-5, atol=1e-4)
    assert fused[1].keys() == usual[1].keys() and len(fused[1]) == 4 * 7 * 2  # every LoRA A and B
    worst = max(float((g - usual[1][n]).norm() / usual[1][n].norm()) for n, g in fused[1].items())
    assert worst < 1e-4  # fp32 sums in another order; a wrong gradient is off by O(1)


@pytest.mark.parametrize("chunk_elements", [10**9, 3 * 64])  # one chunk; logits a row, targets 3 at a time
def test_sft_rows_give_the_same_loss_and_gradients(tiny_model, monkeypatch, chunk_elements):
    model = _lora_model(tiny_model)
    head = model.get_base_model().lm_head
    vocab = head.weight.shape[0]
    assert head.weight.shape[1] == 64
    monkeypatch.setattr(fused_head, "CHUNK_ELEMENTS", chunk_elements)
    assert fused_head.frozen_head(model) is head
    rows = plan.build_rows(_examples(0, [(9, 4), (20, 11), (3, 5), (14, 2), (30, 8)]), capacity=64)
    trained = sum(int((r["labels"] != -100).sum()) for r in rows)

    def loss():
        return torch.stack([loss_sum(model, row) for row in rows])

    fused = _loss_grads_and_saved(model, loss)
    assert model.get_base_model().lm_head is head  # the identity swap is undone
    _usual(monkeypatch)
    usual = _loss_grads_and_saved(model, loss)
    _assert_close(fused, usual)
    # what the fusion is for: the usual path keeps a logits-sized tensor for backward, this one none
    assert usual[2] >= trained // len(rows) * vocab > 50 * fused[2]


def test_pair_rows_give_the_same_logps_and_gradients(tiny_model, monkeypatch):
    model = _lora_model(tiny_model)
    monkeypatch.setattr(fused_head, "CHUNK_ELEMENTS", 4 * 64)  # logits a row at a time, targets 4 at a time
    pairs = _random_pairs(1, [(7, 3, 5), (12, 6, 1), (4, 9, 9), (20, 2, 4), (5, 1, 7)])
    batch = stack_rows([collate_pairs(pairs[:3]), collate_pairs(pairs[3:])])  # a kept logit predicts two tokens

    def logps():
        return pair_logps(model, batch, "cpu") * torch.tensor([1.0, -0.5])  # different weights per answer

    fused = _loss_grads_and_saved(model, logps)
    _usual(monkeypatch)
    _assert_close(fused, _loss_grads_and_saved(model, logps))


def test_the_usual_path_where_the_output_layer_trains_or_the_model_changes_logits(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert fused_head.frozen_head(model) is None  # full fine-tuning: the output layer (tied here) trains
    model.requires_grad_(False)
    assert fused_head.frozen_head(model) is model.lm_head
    model.config.final_logit_softcapping = 30.0  # as Gemma 2 does
    assert fused_head.frozen_head(model) is None
