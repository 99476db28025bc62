"""DPO: pair rows (the prompt once for both answers) equal separate sequences, the loss and gradients equal TRL's
DPOTrainer's, and `tuneforge train --method dpo` trains, checkpoints and resumes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import cli
from test_resume_ddp import assert_same_adapter

from tuneforge.data.preference import EncodedPair, encode_pair
from tuneforge.training.dpo import dpo_loss
from tuneforge.training.pair_rows import batches, collate_pairs, pair_logps, stack_rows


def _random_pairs(seed: int, shapes, vocab: int = 1000) -> list[EncodedPair]:
    g = torch.Generator().manual_seed(seed)

    def ids(n):
        return torch.randint(0, vocab, (n,), generator=g).tolist()

    return [EncodedPair(ids(p), ids(c), ids(r)) for p, c, r in shapes]


def _separate_logps(model, pairs: list[EncodedPair]) -> torch.Tensor:
    """Each prompt+answer as its own plain causal sequence: the reference computation."""
    out = []
    for pair in pairs:
        row = []
        for answer in (pair.chosen, pair.rejected):
            ids = torch.tensor([pair.prompt + answer])
            logits = model(input_ids=ids, use_cache=False).logits[0, len(pair.prompt) - 1 : -1].float()
            row.append(torch.log_softmax(logits, -1).gather(1, torch.tensor(answer)[:, None]).sum())
        out.append(torch.stack(row))
    return torch.stack(out)


def _lora(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(model, lora)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _loss_and_grads(model, logps_fn, pairs, reference):
    model.zero_grad()
    policy = logps_fn(pairs)
    losses, _ = dpo_loss(policy, reference, beta=0.1)
    losses.mean().backward()
    return policy.detach(), float(losses.mean()), _grads(model)


def _assert_same(a, b):
    assert torch.allclose(a[0], b[0], atol=1e-4), (a[0], b[0])
    assert abs(a[1] - b[1]) <= 1e-5 * abs(b[1])
    assert a[2].keys() == b[2].keys() and a[2]
    for name in b[2]:
        assert torch.allclose(a[2][name], b[2][name], rtol=1e-3, atol=1e-6), name


SHAPES = ((30, 4, 9), (38, 12, 3), (33, 7, 7), (35, 1, 5))


def test_pair_rows_layout_on_a_tiny_pair():
    row = collate_pairs([EncodedPair([1, 2], [3, 4], [5])])
    assert row["input_ids"].tolist() == [[1, 2, 3, 4, 5]]
    assert row["position_ids"].tolist() == [[0, 1, 2, 3, 2]]
    assert row["attention_mask"][0, 0].int().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 0, 0, 1],  # the rejected answer sees the prompt, not the chosen one
    ]
    assert row["keep"].tolist() == [[False, True, True, False, False]]
    # chosen 3 is predicted at the prompt's last token, 4 after 3; rejected 5 at the prompt's last token too
    assert row["target_index"].tolist() == [0, 1, 0]
    assert row["target"].tolist() == [3, 4, 5] and row["segment"].tolist() == [0, 0, 1]


def test_rows_are_batched_up_to_a_token_budget():
    assert batches([[0], [1, 2], [3], [4]], [30, 10, 10, 18, 5], 60) == [[[0], [1, 2]], [[3], [4]]]
    assert batches([[0]], [100], 60) == [[[0]]]  # a row longer than the budget goes alone


def test_shared_prompt_rows_give_the_same_logps_and_gradients_as_separate_sequences(tiny_model):
    from transformers import AutoModelForCausalLM

    model = _lora(AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa"))
    pairs = _random_pairs(1, SHAPES)
    reference = torch.randn(len(pairs), 2, generator=torch.Generator().manual_seed(2)) - 40
    separate = _loss_and_grads(model, lambda ps: _separate_logps(model, ps), pairs, reference)

    def shared(ps):  # two rows: several pairs in one, isolated from each other
        return torch.cat([pair_logps(model, collate_pairs(ps[:3]), "cpu"), pair_logps(model, collate_pairs(ps[3:]),
                                                                                        "cpu")])

    def stacked(ps):  # the same two rows (of different lengths) as one padded batch
        return pair_logps(model, stack_rows([collate_pairs(ps[:3]), collate_pairs(ps[3:])]), "cpu")

    row = collate_pairs(pairs[:3])
    assert row["input_ids"].shape[1] == sum(len(p) for p in pairs[:3])  # each prompt once
    _assert_same(_loss_and_grads(model, shared, pairs, reference), separate)
    _assert_same(_loss_and_grads(model, stacked, pairs, reference), separate)

    # Negative control: plain causal attention over `prompt chosen rejected` lets the rejected answer see the
    # chosen one, and its positions continue: the log-probabilities differ.
    leaky = collate_pairs(pairs[:1])
    leaky["attention_mask"] = torch.ones_like(leaky["attention_mask"]).tril()
    with torch.no_grad():
        assert not torch.allclose(pair_logps(model, leaky, "cpu")[0, 1], separate[0][0, 1], atol=1e-3)


def test_sliding_window_models_get_a_mask_per_layer_kind(tmp_path):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, sliding_window=8, max_position_embeddings=512,
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    pairs = _random_pairs(4, ((20, 6, 11), (14, 9, 2)))
    with torch.no_grad():
        separate = _separate_logps(model, pairs)
        windowed = pair_logps(model, stack_rows([collate_pairs(pairs[:1], window=8),
                                                 collate_pairs(pairs[1:], window=8)]), "cpu")
        one_mask = pair_logps(model, collate_pairs(pairs), "cpu")
    assert torch.allclose(windowed, separate, atol=1e-4)
    assert not torch.allclose(one_mask, separate, atol=1e-3)  # the window matters: one mask for all layers is wrong


def test_encode_pair_cuts_the_prompt_where_the_answers_begin(smollm2):
    from tuneforge.data.render import encode_example, encode_prompt
    from tuneforge.models.loading import load_tokenizer

    tok = load_tokenizer(str(smollm2))
    messages = [{"role": "user", "content": "Capital of France?"}]
    row = {"input": {"messages": messages}, "preferred_output": [{"role": "assistant", "content": "Paris."}],
           "non_preferred_output": [{"role": "assistant", "content": "Lyon, I think."}]}
    pair = encode_pair(tok, row)
    assert pair.prompt == encode_prompt(tok, messages)
    full = encode_example(tok, messages + row["preferred_output"])
    trained = [t for t in full.labels if t != -100]
    assert pair.chosen == trained  # the answer up to and including its end-of-turn token
    assert tok.decode(pair.rejected).startswith("Lyon") and pair.rejected[-1] == pair.chosen[-1]
    assert encode_pair(tok, row, max_length=len(pair.prompt)) is None
    assert len(encode_pair(tok, row, max_length=len(pair.prompt) + 2).rejected) == 2


@pytest.mark.parametrize("sft_weight", [0.0, 0.5])
def test_dpo_loss_and_gradients_equal_trl(tiny_model, tmp_path, sft_weight):
    """tuneforge's loss, log-probabilities, rewards and LoRA gradients on one batch equal TRL DPOTrainer's (TRL
    1.16: sigmoid loss, reference = the base with the adapter disabled), on the same model, adapter and tokens;
    with an SFT term (RPO) too, TRL's `loss_type=["sigmoid", "sft"]`. (TRL averages the SFT term over all chosen
    tokens of the batch, ours over each answer's tokens, then pairs: the same when the answers are as long, as
    here.)"""
    pytest.importorskip("trl")
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from tuneforge.models.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    pairs = _random_pairs(5, [(p, 6, r) for p, _c, r in SHAPES] if sft_weight else SHAPES)
    loss = dict(loss_type=["sigmoid", "sft"], loss_weights=[1.0, sft_weight]) if sft_weight else {}
    args = DPOConfig(output_dir=str(tmp_path), beta=0.1, bf16=False, use_cpu=True, gradient_checkpointing=False,
                     max_length=None, report_to="none", per_device_train_batch_size=4, **loss)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False)
    rows = [{"prompt": "hi", "chosen": "a", "rejected": "b"}] * 4  # TRL needs a dataset; the batch is ours
    torch.manual_seed(3)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa"),
                         args=args, peft_config=lora, train_dataset=Dataset.from_list(rows), processing_class=tok)
    model = trainer.model
    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)(
        [{"prompt_ids": p.prompt, "chosen_ids": p.chosen, "rejected_ids": p.rejected} for p in pairs])
    model.zero_grad()
    trl_loss = trainer.compute_loss(model, batch)
    trl_loss.backward()
    trl_grads = _grads(model)
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["train" if model.training else "eval"].items()}

    with torch.no_grad(), model.disable_adapter():
        reference = pair_logps(model, collate_pairs(pairs), "cpu")
    model.zero_grad()
    policy = pair_logps(model, collate_pairs(pairs), "cpu")
    chosen_tokens = torch.tensor([float(len(p.chosen)) for p in pairs])
    losses, stats = dpo_loss(policy, reference, beta=0.1, sft_weight=sft_weight, chosen_tokens=chosen_tokens)
    losses.mean().backward()
    ours = _grads(model)

    assert abs(float(losses.mean()) - float(trl_loss)) <= 1e-5 * float(trl_loss)
    assert abs(float(losses.mean()) - float(torch.log(torch.tensor(2.0)))) > 1e-3  # policy != reference
    mean = stats.mean(0)
    assert mean[1] == pytest.approx(trl_metrics["rewards/chosen"], abs=1e-4)
    assert mean[2] == pytest.approx(trl_metrics["rewards/rejected"], abs=1e-4)
    assert mean[3] == pytest.approx(trl_metrics["rewards/accuracies"], abs=1e-6)
    assert float(policy[:, 0].mean()) == pytest.approx(trl_metrics["logps/chosen"], abs=1e-3)
    assert ours.keys() == trl_grads.keys() and ours
    for name, grad in trl_grads.items():
        assert torch.allclose(ours[name], grad, rtol=1e-3, atol=1e-6), name


def _pairs_file(path, n: int = 12) -> None:
    lines = []
    for i in range(n):
        q = [{"role": "user", "content": f"Name the colour of item {i}."}]
        lines.append(json.dumps({"input": {"messages": q},
                                 "preferred_output": [{"role": "assistant", "content": f"Blue {i}."}],
                                 "non_preferred_output": [{"role": "assistant", "content": "I don't know."}]}))
    path.write_text("\n".join(lines) + "\n")


def test_train_dpo_learns_the_preference_and_resumes_exactly(tiny_model, tmp_path):
    data = tmp_path / "prefs.jsonl"
    _pairs_file(data)
    base = ["train", "--model", str(tiny_model), "--data", str(data), "--method", "dpo", "--sft-weight", "0",
            "--batch-size", "4", "--epochs", "3", "--learning-rate", "5e-3", "--validation", str(data),
            "--eval-every", "3", "--checkpoint-every", "3"]
    whole = tmp_path / "whole"
    cli(*base, "--out", str(whole))
    metrics = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 9
    assert metrics[0]["train_loss"] == pytest.approx(0.6931, abs=2e-3)  # the adapter starts as the reference
    assert metrics[-1]["valid_preference_accuracy"] == 1.0 and metrics[-1]["valid_reward_margin"] > 0
    assert metrics[-1]["valid_loss"] < 0.6
    manifest = json.loads((whole / "manifest.json").read_text())
    assert (manifest["method"], manifest["weights"], manifest["hyperparameters"]["beta"]) == ("dpo", "lora", 0.1)
    assert manifest["training_file"]["format"] == "preference"

    # A run that stopped after step 3 (its folder holds only that checkpoint) resumes to the very same adapter:
    # the reference log-probabilities come from the checkpoint, not from the model as it is at step 3.
    stopped = tmp_path / "stopped"
    shutil.copytree(whole / "checkpoints" / "step-000003", stopped / "checkpoints" / "step-000003")
    cli(*base, "--out", str(stopped), "--resume")
    assert_same_adapter(stopped, whole, atol=1e-6)
    resumed = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in resumed] == [4, 5, 6, 7, 8, 9]
    assert resumed[-1]["valid_loss"] == pytest.approx(metrics[-1]["valid_loss"], abs=1e-5)


def test_two_process_dpo_on_gloo_matches_one_process(tiny_model, tmp_path):
    """Reference log-probs spread over the processes and summed, pair losses scaled by world size / step pairs:
    two processes on gloo give the adapter one process gives."""
    data = tmp_path / "prefs.jsonl"
    _pairs_file(data, n=8)
    args = ["train", "--model", str(tiny_model), "--data", str(data), "--method", "dpo", "--epochs", "1",
            "--batch-size", "4", "--learning-rate", "5e-3", "--no-packing"]
    single = tmp_path / "single"
    cli(*args, "--out", str(single))
    ddp = tmp_path / "ddp"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "tuneforge", *args, "--out", str(ddp)]
    proc = subprocess.run(launch, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((ddp / "manifest.json").read_text())["num_processes"] == 2
    assert_same_adapter(ddp, single, atol=2e-5)
