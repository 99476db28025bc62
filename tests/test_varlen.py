"""Varlen attention (training/varlen.py, the CUDA path for packed rows and DPO's pair rows) computes the masked
path's losses and gradients.

On this CPU the varlen function runs its per-example SDPA loop, so these tests check everything around the CUDA
kernel: the boundaries, the kwargs through PEFT to every attention layer, grouped-query heads, the fallback to
SDPA, the training loop's use of it, and how the kernel is called for each torch signature.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import toy_rows, write_jsonl

from tuneforge.data.render import IGNORE, Encoded
from tuneforge.training import plan, varlen
from tuneforge.training.sft import loss_sum


def _lora_model(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
    # random B (not PEFT's zeros): every LoRA weight gets a gradient worth comparing
    return get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))


def _examples(seed: int, sizes) -> list[Encoded]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for prompt, answer in sizes:
        ids = torch.randint(0, 1000, (prompt + answer,), generator=g).tolist()
        out.append(Encoded(ids, [IGNORE] * prompt + ids[prompt:]))
    return out


def _loss_and_grads(model, rows) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    total = sum(loss_sum(model, row) for row in rows)
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(total.detach()), grads


def test_varlen_rows_give_the_same_loss_and_gradients(tiny_model):
    model = _lora_model(tiny_model)
    examples = _examples(0, [(9, 4), (20, 11), (3, 5), (14, 2), (30, 8)])
    rows = plan.build_rows(examples, capacity=64)
    assert len(rows) > 1 and all("attention_mask" not in r for r in rows)
    reference = _loss_and_grads(model, rows)
    varlen.use(model)
    assert model.get_base_model().config._attn_implementation == varlen.NAME
    boundaried = [varlen.with_boundaries(r) for r in rows]
    assert [len(r["cu_seq_lens_q"]) - 1 for r in boundaried] == [len(r) for r in plan.pack(
        list(range(5)), [len(e.input_ids) for e in examples], 64)]
    loss, grads = _loss_and_grads(model, boundaried)
    assert abs(loss - reference[0]) < 1e-5 * reference[0]
    assert grads.keys() == reference[1].keys() and len(grads) == 4 * 7 * 2  # every LoRA A and B
    worst = max(float((g - reference[1][n]).norm() / reference[1][n].norm()) for n, g in grads.items())
    assert worst < 1e-4  # fp32 sums in another order (about 1e-5 here); a wrong mask moves them by O(1)
    # the boundaries are what isolates the examples: one boundary for the whole row changes the loss
    glued = {**boundaried[0], "cu_seq_lens_q": boundaried[0]["cu_seq_lens_q"][[0, -1]]}
    glued["cu_seq_lens_k"] = glued["cu_seq_lens_q"]
    with torch.no_grad():
        assert abs(float(loss_sum(model, glued)) - float(loss_sum(model, rows[0]))) > 1e-3


def test_shared_prefix_rows_through_varlen_equal_the_masked_path(tiny_model):
    model = _lora_model(tiny_model)
    system = list(range(100, 140))
    examples = [Encoded(system + e.input_ids, [IGNORE] * 40 + e.labels)
                for e in _examples(3, [(5, 4), (12, 3), (2, 6), (9, 9), (7, 1)])]
    rows = plan.build_rows(examples, capacity=96)
    assert len(rows) > 1 and all(r.get("prefix_length") == 40 for r in rows)
    reference = _loss_and_grads(model, rows)
    with torch.no_grad():
        sdpa = [float(loss_sum(model, r)) for r in (rows[0], plan.collate(examples))]
    varlen.use(model)
    with torch.no_grad():  # without boundaries (evaluation rows; the mask as it was): SDPA's result, mask included
        assert [float(loss_sum(model, r)) for r in (rows[0], plan.collate(examples))] == pytest.approx(sdpa, rel=1e-6)
    boundaried = [varlen.with_boundaries(r) for r in rows]
    first = boundaried[0]
    q_lens, k_lens = first["cu_seq_lens_q"].diff().tolist(), first["cu_seq_lens_k"].diff().tolist()
    assert q_lens[0] == k_lens[0] > 40 and all(k == q + 40 for q, k in zip(q_lens[1:], k_lens[1:]))
    assert first["tuneforge_kv_index"][:40].tolist() == list(range(40))
    loss, grads = _loss_and_grads(model, boundaried)
    assert abs(loss - reference[0]) < 1e-5 * reference[0]
    worst = max(float((g - reference[1][n]).norm() / reference[1][n].norm()) for n, g in grads.items())
    assert len(grads) == 4 * 7 * 2 and worst < 1e-4


def test_pair_rows_through_varlen_equal_the_masked_path(tiny_model):
    """DPO's rows (a prompt, then its two answers, each reading the prompt) concatenated with their boundaries: the
    log-probabilities and gradients of the padded, masked batch."""
    from test_dpo import _random_pairs

    from tuneforge.training.pair_rows import collate_pairs, pair_logps, stack_rows, varlen_row

    model = _lora_model(tiny_model)
    pairs = _random_pairs(4, [(7, 3, 5), (12, 6, 1), (4, 9, 9), (20, 2, 4), (5, 1, 7)])
    groups = (pairs[:3], pairs[3:])
    weights = torch.tensor([1.0, -0.5])

    def run(model, batch):
        model.zero_grad()
        logps = pair_logps(model, batch, "cpu")
        (logps * weights).sum().backward()
        return logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    reference = run(model, stack_rows([collate_pairs(g) for g in groups]))
    varlen.use(model)
    row = varlen_row([collate_pairs(g, masked=False) for g in groups])
    assert row["input_ids"].shape == (1, sum(len(p) for p in pairs)) and "tuneforge_kv_index" in row
    assert len(row["cu_seq_lens_q"]) - 1 == 3 * len(pairs)  # a prompt and two answers each
    logps, grads = run(model, row)
    assert torch.allclose(logps, reference[0], rtol=1e-5, atol=1e-4)
    assert grads.keys() == reference[1].keys() and len(grads) == 4 * 7 * 2
    assert max(float((g - reference[1][n]).norm() / reference[1][n].norm()) for n, g in grads.items()) < 1e-4
    # the blocks are what keeps a rejected answer from reading its chosen one: one block per pair changes them
    first, second = (collate_pairs(g, masked=False)["blocks"] for g in groups)
    n = sum(len(p) for p in groups[0])
    second = [(q0 + n, q1 + n, k0 + n, k1 + n) for q0, q1, k0, k1 in second]
    glued = {**row, **varlen.boundaries([(0, len(pairs[0]), 0, 0), *first[3:], *second])}
    with torch.no_grad():
        assert torch.allclose(pair_logps(model, {**row, **varlen.boundaries(first + second)}, "cpu"), logps)
        assert not torch.allclose(pair_logps(model, glued, "cpu")[0, 1], logps[0, 1], atol=1e-3)


def test_the_kernel_is_called_as_each_torch_version_takes_it():
    calls = []

    def new(q, k, v, cu_q, cu_k, max_q, max_k, *, return_aux=None, scale=None, window_size=(-1, -1),
            enable_gqa=False):
        calls.append({"heads": k.shape[1], "window_size": window_size, "enable_gqa": enable_gqa, "scale": scale})
        return varlen.per_example_attention(q, k, v, cu_q, cu_k, scale)

    def old(q, k, v, cu_q, cu_k, max_q, max_k, is_causal=False, return_aux=None):
        calls.append({"heads": k.shape[1], "is_causal": is_causal})
        return varlen.per_example_attention(q, k, v, cu_q, cu_k, None)

    g = torch.Generator().manual_seed(2)
    q, k, v = torch.randn(12, 4, 8, generator=g), torch.randn(12, 2, 8, generator=g), torch.randn(12, 2, 8, generator=g)
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)
    expected = varlen.per_example_attention(q, k, v, cu, cu, 8**-0.5)
    for kernel in (new, old):
        assert torch.allclose(varlen.fused_attention(kernel, q, k, v, cu, cu, 7, 7, 8**-0.5), expected, atol=1e-6)
    assert calls == [{"heads": 2, "window_size": (-1, 0), "enable_gqa": True, "scale": 8**-0.5},
                     {"heads": 4, "is_causal": True}]  # no GQA in the old signature: heads repeated first
    # a scale the old signature cannot take: the per-example path instead of a wrong kernel call
    assert torch.allclose(varlen.fused_attention(old, q, k, v, cu, cu, 7, 7, 0.5),
                          varlen.per_example_attention(q, k, v, cu, cu, 0.5), atol=1e-6)
    assert len(calls) == 2


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_training_with_varlen_matches_training_without(tiny_model, tmp_path, monkeypatch, method):
    """The whole loop (rows, boundaries moved to the device, kwargs) with varlen forced on (on this CPU it runs
    the per-example path): the same losses, step by step. CPU training itself never chooses it."""
    from test_dpo import _pairs_file
    from transformers import AutoModelForCausalLM

    from tuneforge.training.config import TrainConfig
    from tuneforge.training.trainer import train

    assert not varlen.applies(AutoModelForCausalLM.from_pretrained(tiny_model), "cpu")
    if method == "sft":
        data = write_jsonl(tmp_path / "train.jsonl", toy_rows(8))
    else:
        _pairs_file(data := tmp_path / "prefs.jsonl", 8)

    def run(name: str) -> list[float]:
        cfg = TrainConfig(model=str(tiny_model), data=data, out=tmp_path / name, epochs=1, batch_size=4,
                          pack_tokens=96, learning_rate=5e-3, seed=0, method=method)
        train(cfg)
        return [json.loads(line)["train_loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    reference = run("sdpa")
    used = []
    monkeypatch.setattr(varlen, "applies", lambda model, device: True)
    monkeypatch.setattr(varlen, "boundaries", lambda blocks, f=varlen.boundaries: used.append(1) or f(blocks))
    assert run("varlen") == pytest.approx(reference, rel=1e-5)
    assert used  # the rows did go through it


def test_a_run_on_an_accelerator_says_which_paths_it_takes(tiny_model, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from tuneforge.models.loading import load_tokenizer
    from tuneforge.training.config import TrainConfig
    from tuneforge.training.sft import SFT
    from tuneforge.training.trainer import compute_paths

    data = write_jsonl(tmp_path / "train.jsonl", toy_rows(4))
    model = _lora_model(tiny_model)
    tokenizer = load_tokenizer(str(tiny_model))
    monkeypatch.setattr(varlen, "applies", lambda model, device: True)
    cfg = TrainConfig(model=str(tiny_model), data=data, out=tmp_path / "o", pack_tokens=256)
    line = compute_paths(SFT(cfg, tokenizer, model, "cuda:0", True), model, cfg, "cuda:0", "bf16")
    assert line == ("cuda:0, bf16: attention varlen (FlashAttention by example boundaries), output layer fused (no "
                    "logits kept), gradient checkpointing off, rows of up to 256 tokens")
    monkeypatch.setattr(varlen, "applies", lambda model, device: False)
    full = AutoModelForCausalLM.from_pretrained(tiny_model)  # full fine-tuning: the output layer trains
    cfg = TrainConfig(model=str(tiny_model), data=data, out=tmp_path / "o", packing=False, gradient_checkpointing=True)
    line = compute_paths(SFT(cfg, tokenizer, full, "cuda:0", False), full, cfg, "cuda:0", "bf16")
    assert line.endswith("attention SDPA, output layer logits, gradient checkpointing on, one example a row")
