"""A DPO fine-tuning job through the official `openai` SDK: preference file upload, SFT then DPO on the fine-tune,
events with the preference metrics, checkpoints, the model served; and the wrong kind of file refused."""

from __future__ import annotations

import io
import json

import openai
import pytest
from helpers import toy_rows
from live_server import Server, wait_for_job


def jsonl(rows: list[dict]) -> io.BytesIO:
    return io.BytesIO("".join(json.dumps(r) + "\n" for r in rows).encode())


def preference_rows(n: int) -> list[dict]:
    rows = []
    for row in toy_rows(n):
        *prompt, answer = row["messages"]
        rows.append({"input": {"messages": prompt}, "preferred_output": [answer],
                     "non_preferred_output": [{"role": "assistant", "content": "I cannot help with that."}]})
    return rows


def test_dpo_job_through_the_openai_sdk(tmp_path, tiny_model):
    with Server(tmp_path / "data", extra=("--base", f"tiny={tiny_model}")) as server:
        client = server.client(server.key("acme"))
        chat = client.files.create(file=("chat.jsonl", jsonl(toy_rows(8))), purpose="fine-tune")
        prefs = client.files.create(file=("prefs.jsonl", jsonl(preference_rows(8))), purpose="fine-tune")
        trl_rows = [{"prompt": r["input"]["messages"], "chosen": r["preferred_output"],
                     "rejected": r["non_preferred_output"]} for r in preference_rows(4)]
        valid = client.files.create(file=("valid.jsonl", jsonl(trl_rows)), purpose="fine-tune")  # TRL's rows too

        sft = wait_for_job(client, client.fine_tuning.jobs.create(
            model="tiny", training_file=chat.id, hyperparameters={"n_epochs": 1, "batch_size": 4}).id)
        assert sft.status == "succeeded", sft.error

        hyper = {"beta": 0.2, "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 5, "checkpoint_every": 2}
        dpo_method = {"type": "dpo", "dpo": {"hyperparameters": hyper}}
        job = client.fine_tuning.jobs.create(model=sft.fine_tuned_model, training_file=prefs.id,
                                             validation_file=valid.id, suffix="prefs", method=dpo_method)
        assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.2
        job = wait_for_job(client, job.id)
        assert job.status == "succeeded", job.error
        assert job.method.dpo.hyperparameters.n_epochs == 2 and job.method.dpo.hyperparameters.beta == 0.2
        assert job.method.dpo.hyperparameters.learning_rate_multiplier == 5
        assert job.method.dpo.hyperparameters.sft_weight == 1.0  # tuneforge's default (RPO), shown on the job
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        assert any(e.message.startswith("Fine-tuning started: 8 pairs, 2 epochs, 4 steps") for e in events)
        last = next(e for e in events if e.type == "metrics")
        assert "preference accuracy=" in last.message and "validation loss=" in last.message
        assert {"reward_margin", "preference_accuracy", "valid_preference_accuracy"} <= set(last.data)
        assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data] == [4, 2]

        reply = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=5, messages=[
            {"role": "user", "content": "a=1 b=2"}])
        assert reply.choices[0].finish_reason in ("stop", "length")

        with pytest.raises(openai.BadRequestError) as wrong:
            client.fine_tuning.jobs.create(model="tiny", training_file=chat.id, method={"type": "dpo"})
        assert wrong.value.body["param"] == "training_file" and "preference pairs" in wrong.value.body["message"]
        with pytest.raises(openai.BadRequestError) as wrong:
            client.fine_tuning.jobs.create(model="tiny", training_file=prefs.id)
        assert wrong.value.body["param"] == "training_file" and "dpo" in wrong.value.body["message"]
        with pytest.raises(openai.BadRequestError) as wrong:
            client.files.create(file=("bad.jsonl", jsonl([*preference_rows(1), {"input": {"messages": []}}])),
                                purpose="fine-tune")
        assert "bad.jsonl:2: preferred_output: missing" in wrong.value.body["message"]
