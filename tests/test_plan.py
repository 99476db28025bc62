"""Data plan and packing: exact orders, exact tensors, and no attention across packed examples."""

from __future__ import annotations

import torch

from tuneforge.data.render import IGNORE, Encoded
from tuneforge.training import plan
from tuneforge.training.sft import loss_sum


def test_auto_epochs_rule():
    assert [plan.auto_epochs(n) for n in (10, 32, 100, 128, 200, 214, 256, 5000)] == [10, 10, 3, 3, 2, 1, 1, 1]


def test_plan_covers_every_example_once_per_epoch_and_is_reproducible():
    steps = plan.plan_steps(10, 4, 2, seed=7)
    assert [len(s) for s in steps] == [4, 4, 2, 4, 4, 2]
    assert sorted(sum(steps[:3], [])) == list(range(10)) == sorted(sum(steps[3:], []))
    assert steps == plan.plan_steps(10, 4, 2, seed=7)
    assert steps != plan.plan_steps(10, 4, 2, seed=8)
    assert steps[:3] != steps[3:]  # each epoch reshuffles


def test_token_budget_cuts_the_plan_at_the_step_that_reaches_it():
    steps = plan.plan_steps(10, 4, 3, seed=1)
    lengths = [10] * 10
    assert plan.within_budget(steps, lengths, None) == steps
    assert plan.within_budget(steps, lengths, 1) == steps[:1]  # at least one step
    assert plan.within_budget(steps, lengths, 80) == steps[:2]  # 40 + 40 reaches 80
    assert plan.within_budget(steps, lengths, 81) == steps[:3]
    assert plan.within_budget(steps, lengths, 10**9) == steps  # epochs cap it


def test_pack_first_fit_decreasing_respects_capacity():
    lengths = [300, 200, 120, 100, 90, 600]
    rows = plan.pack(list(range(6)), lengths, capacity=512)
    assert rows == [[5], [0, 1], [2, 3, 4]]
    assert all(sum(lengths[i] for i in r) <= 512 or len(r) == 1 for r in rows)
    assert plan.row_capacity(lengths, 512) == 600


def test_collate_restarts_positions_per_example():
    a = Encoded([5, 6, 7], [IGNORE, 6, 7])
    b = Encoded([8, 9], [IGNORE, 9])
    batch = plan.collate([a, b])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9]]


def test_packed_loss_equals_separate_losses(tiny_model):
    """If packed examples attended to each other, the second example's loss would change."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    g = torch.Generator().manual_seed(0)
    examples = []
    for n in (17, 9, 23):
        ids = torch.randint(0, 1000, (n,), generator=g).tolist()
        examples.append(Encoded(ids, [IGNORE] * 3 + ids[3:]))
    with torch.no_grad():
        separate = sum(float(loss_sum(model, plan.collate([e]))) for e in examples)
        packed = float(loss_sum(model, plan.collate(examples)))
        # the same tokens without position resets (one long sequence) give a different loss
        glued = plan.collate(examples)
        glued["position_ids"] = torch.arange(glued["input_ids"].shape[1]).unsqueeze(0)
        unpacked = float(loss_sum(model, glued))
    assert abs(packed - separate) < 1e-3 * separate
    assert abs(unpacked - separate) > 1e-3 * separate


def test_step_tokens_count_only_trained_tokens():
    examples = [Encoded([1, 2, 3], [IGNORE, 2, 3]), Encoded([4, 5], [IGNORE, IGNORE])]
    assert plan.step_trained_tokens([0, 1], examples) == 2


def _prompted(prefix: list[int], body: list[int], answer: list[int]) -> Encoded:
    return Encoded(prefix + body + answer, [IGNORE] * (len(prefix) + len(body)) + answer)


def test_shared_prefix_stops_before_the_first_predicted_token():
    system = list(range(100, 130))
    a = _prompted(system, [1, 2, 3], [7, 8])
    b = _prompted(system, [1, 2, 4, 4], [9])
    assert plan.shared_prefix([a, b]) == 32  # the system prompt and the common [1, 2]
    c = _prompted(system, [], [5])
    assert plan.shared_prefix([a, c]) == 29  # c's answer starts at 30: its predicting position 29 stays apart


def test_shared_prefix_rows_give_the_same_losses_and_gradients(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
    g = torch.Generator().manual_seed(1)
    system = torch.randint(0, 1000, (40,), generator=g).tolist()
    examples = [
        _prompted(system, torch.randint(0, 1000, (n,), generator=g).tolist(),
                  torch.randint(0, 1000, (m,), generator=g).tolist())
        for n, m in ((12, 5), (20, 9), (7, 3), (15, 6))
    ]

    def loss_and_grad(rows):
        model.zero_grad()
        total = sum(loss_sum(model, r) for r in rows)
        total.backward()
        return float(total.detach()), model.model.layers[0].self_attn.q_proj.weight.grad.clone()

    shared_rows = plan.build_rows(examples, capacity=512)
    assert len(shared_rows) == 1 and "attention_mask" in shared_rows[0]
    assert shared_rows[0]["input_ids"].shape[1] == 40 + sum(len(e.input_ids) - 40 for e in examples)
    separate = loss_and_grad([plan.collate([e]) for e in examples])
    shared = loss_and_grad(shared_rows)
    assert abs(shared[0] - separate[0]) < 1e-4 * separate[0]
    assert torch.allclose(shared[1], separate[1], rtol=1e-3, atol=1e-6)
    plain = loss_and_grad(plan.build_rows(examples, capacity=512, share_prefix=False))
    assert abs(plain[0] - separate[0]) < 1e-4 * separate[0]
