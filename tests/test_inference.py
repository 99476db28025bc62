"""`generate`, `chat` and `eval` through the real CLI on the tiny model; `--report-to tensorboard`."""

from __future__ import annotations

import json

import pytest
from helpers import chat_row, cli, toy_rows, write_jsonl


def test_generate_writes_one_line_per_row_in_order(tiny_model, tmp_path):
    rows = [
        chat_row("first question", "a reference answer that must be dropped"),
        {"messages": [{"role": "user", "content": "a much longer second question " * 5}], "id": "q2"},
        {"messages": [{"role": "user", "content": "third"}]},
    ]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "preds.jsonl"
    cli("generate", "--model", str(tiny_model), "--data", str(data), "--out", str(out), "--max-tokens", "5",
        "--batch-size", "2")
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["messages"] for r in written] == [r["messages"] for r in rows]  # the input rows, in order
    assert written[1]["id"] == "q2"
    assert all(isinstance(r["output"], str) for r in written)
    assert written[0]["output"] != rows[0]["messages"][-1]["content"]


def test_generate_matches_one_by_one_greedy_and_streams_the_same_text(tiny_model):
    """Continuous batching (a window of 2 over 4 prompts: rows join as others finish) must not change greedy
    answers, nor their order; progress counts finished rows; streaming gives the same text in pieces."""
    from tuneforge.inference.generate import Generator, Prompt, SamplingParams

    texts = ("hi", "tell me a longer story about cats", "2+2?", "a " * 40)
    prompts = [Prompt([{"role": "user", "content": text}]) for text in texts]
    params = SamplingParams(max_new_tokens=8)
    events = []
    with Generator(str(tiny_model), max_batch=4) as gen:
        batched = gen.complete(prompts, params, batch_size=2, on_event=events.append)
        assert batched == [gen.complete([p], params)[0] for p in prompts]
        assert "".join(gen.stream(prompts[1], params)) == batched[1]
    assert [(e.kind, e.step, e.total) for e in events] == [("start", 0, 4)] + [("progress", i, 4) for i in range(1, 5)]


def test_generation_errors_are_raised_and_a_closed_generator_says_so(tiny_model, tmp_path):
    """An adapter the engine cannot load fails the call with the engine's reason (not a hang); closing frees
    the model."""
    from peft import LoraConfig

    from tuneforge.inference.generate import GenerationError, Generator, Prompt, SamplingParams

    adapter = tmp_path / "broken-adapter"
    LoraConfig(r=4, target_modules=["q_proj"], base_model_name_or_path=str(tiny_model)).save_pretrained(adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"not safetensors")
    prompt, params = Prompt([{"role": "user", "content": "hi"}]), SamplingParams(max_new_tokens=4)
    gen = Generator(str(tiny_model), adapter=str(adapter))
    with pytest.raises(GenerationError, match="prompt 1 of 2: the model's adapter did not load"):
        gen.complete([prompt, prompt], params)
    with pytest.raises(GenerationError, match="adapter did not load"):
        list(gen.stream(prompt, params))
    gen.close()
    assert gen.engine.model is None
    with pytest.raises(GenerationError, match="closed"):
        gen.complete([prompt], params)


def test_chat_one_shot_and_bad_adapter(tiny_model, tmp_path):
    proc = cli("chat", "--model", str(tiny_model), "--prompt", "hello", "--max-tokens", "4")
    assert proc.returncode == 0
    proc = cli("chat", "--model", str(tiny_model), "--adapter", str(tmp_path), "--prompt", "x", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "neither a model folder" in proc.stderr


def test_eval_and_report_to_tensorboard(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", toy_rows(16))
    out = tmp_path / "run"
    cli("train", "--model", str(tiny_model), "--data", str(data), "--out", str(out), "--epochs", "1",
        "--report-to", "tensorboard")
    assert list(out.rglob("events.out.tfevents.*"))
    proc = cli("eval", "--model", str(out), "--data", str(data), "--limit", "4")
    assert "exact match" in proc.stdout and "on 4 rows" in proc.stdout
