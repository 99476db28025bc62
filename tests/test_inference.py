"""`generate`, `chat` and `eval` through the real CLI on the tiny model; `--report-to tensorboard`."""

from __future__ import annotations

import json

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


def test_generate_matches_one_by_one_greedy(tiny_model):
    """Batching with left padding must not change greedy answers."""
    from tuneforge.inference.generate import Generator, Prompt, SamplingParams

    gen = Generator(str(tiny_model))
    prompts = [Prompt([{"role": "user", "content": text}]) for text in ("hi", "tell me a longer story about cats")]
    params = SamplingParams(max_new_tokens=8)
    batched = gen.complete(prompts, params, batch_size=2)
    assert batched == [gen.complete([p], params)[0] for p in prompts]


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
