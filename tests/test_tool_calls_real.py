"""Must-show: fine-tune SmolLM2 on the bundled tool-calling task through the API, then the official `openai`
SDK gets `message.tool_calls` from the served `ft:` model, streamed and not, on held-out requests that need a
call; and tool_choice naming a function is honoured on every prompt, those the model would answer in text
included (slow: trains and serves the real model)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from live_server import Server, wait_for_job
from openai.lib.streaming.chat import ChatCompletionStreamState

pytestmark = pytest.mark.slow

TASK = Path(__file__).resolve().parent.parent / "examples" / "tool_calling"
TRAIN_ROWS = 48  # 6 steps of 8: enough to learn the format (loss ~1.4 -> ~0.15), and it trains in under a minute
HYPERPARAMETERS = {"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 3.0,
                   "pack_tokens": 4096}  # one packed row a step: the long tool listing is shared, computed once


def _rows(split: str) -> list[dict]:
    return [json.loads(line) for line in (TASK / f"{split}.jsonl").read_text().splitlines()]


def _streamed(client, **kw):
    state = ChatCompletionStreamState()
    for chunk in client.chat.completions.create(stream=True, **kw):
        state.handle_chunk(chunk)
    return state.get_final_completion()


def test_a_fine_tune_on_the_tool_calling_task_calls_tools_through_the_openai_sdk(data_dir, smollm2):
    started = time.time()
    test = _rows("test")
    tools = test[0]["tools"]
    names = {t["function"]["name"] for t in tools}
    needs_call = [r for r in test if len(r["messages"]) == 3 and r["messages"][2].get("tool_calls")]
    in_text = [r for r in test if not r["messages"][2].get("tool_calls")]
    with Server(data_dir) as server:
        client = server.client(server.key("acme"))
        data = "".join(line + "\n" for line in (TASK / "train.jsonl").read_text().splitlines()[:TRAIN_ROWS])
        file = client.files.create(file=("tool_calling.jsonl", io.BytesIO(data.encode())), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=file.id, seed=0,
                                             hyperparameters=HYPERPARAMETERS)
        job = wait_for_job(client, job.id, timeout=600)
        assert job.status == "succeeded", job.error
        trained = time.time()

        # tool_choice auto (the default with tools): held-out requests that need a call get one, streamed or not
        for row, stream in ((needs_call[0], False), (needs_call[1], True)):
            kw = {"model": job.fine_tuned_model, "messages": row["messages"][:2], "tools": tools,
                  "temperature": 0, "max_tokens": 60}
            reply = _streamed(client, **kw) if stream else client.chat.completions.create(**kw)
            choice = reply.choices[0]
            assert choice.finish_reason == "tool_calls", (row["messages"][1], choice.message)
            for call in choice.message.tool_calls:
                assert call.id.startswith("call_") and call.type == "function" and call.function.name in names
                assert isinstance(json.loads(call.function.arguments), dict)

        # a named tool_choice is always honoured, also where the model would rather answer in text
        for row in [*in_text[:2], needs_call[2]]:
            reply = client.chat.completions.create(
                model=job.fine_tuned_model, messages=row["messages"][:2], tools=tools, max_tokens=60,
                tool_choice={"type": "function", "function": {"name": "create_ticket"}})
            (call,) = reply.choices[0].message.tool_calls
            args = json.loads(call.function.arguments)
            assert call.function.name == "create_ticket" and set(args) == {"title", "priority"}
            assert isinstance(args["title"], str) and args["priority"] in ("low", "normal", "high")
    print(f"\ntool-calling must-show: trained {TRAIN_ROWS} rows in {trained - started:.0f} s (server start "
          f"included), served 5 requests in {time.time() - trained:.0f} s")
