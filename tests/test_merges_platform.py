"""Merges on the platform, through the official `openai` SDK where it has the call (models, chat, fine-tuning,
evals) and plain HTTP for `/v1/merges`: merged models are served by name, fine-tuned, graded and deleted."""

from __future__ import annotations

import io
import json
import time

import httpx
import openai
import pytest
from helpers import toy_rows
from live_server import Server, wait_for_job

ASK = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "a=1 b=2"}]


def jsonl(rows: list[dict]) -> io.BytesIO:
    return io.BytesIO("".join(json.dumps(r) + "\n" for r in rows).encode())


def merge(server: Server, key: str, body: dict, timeout: float = 600) -> dict:
    headers = {"authorization": f"Bearer {key}"}
    r = httpx.post(f"{server.url}/v1/merges", json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = httpx.get(f"{server.url}/v1/merges/{r.json()['id']}", headers=headers).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(1)
    raise AssertionError(f"merge still {job['status']}")


def refused(server: Server, key: str, body: dict) -> dict:
    r = httpx.post(f"{server.url}/v1/merges", json=body, headers={"authorization": f"Bearer {key}"}, timeout=60)
    assert 400 <= r.status_code < 500, r.text
    return r.json()["error"]


@pytest.mark.slow
def test_merged_models_are_served_fine_tuned_graded_and_deleted(data_dir, smollm2):
    with Server(data_dir) as server:
        key = server.key("acme")
        client = server.client(key)
        train = client.files.create(file=("t.jsonl", jsonl(toy_rows(8))), purpose="fine-tune").id
        tunes = [client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=train, suffix=s,
                                                hyperparameters={"n_epochs": 1, "batch_size": 4}) for s in "ab"]
        a, b = (wait_for_job(client, j.id).fine_tuned_model for j in tunes)
        assert a and b

        # bad merges are refused before anything runs, naming the field
        base = "smollm2-135m-instruct"
        config = {"merge_method": "linear", "dtype": "float32",
                  "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.5}}]}
        assert refused(server, key, {"name": "Bad Name", "config": config})["param"] == "name"
        assert refused(server, key, {"name": "x", "config": {**config, "merge_method": "nope"}})["message"]
        assert "does not exist" in refused(server, key, {"name": "x", "config": {
            "merge_method": "linear", "models": [{"model": "/etc", "parameters": {"weight": 1}}]}})["message"]
        assert refused(server, key, {"name": "x", "adapters": [a, base]})["param"] == "adapters"
        for sneaky in ({"model": "/etc"}, {"model": a, "lora": str(data_dir)}, f"{a}+{data_dir}"):  # no server paths
            body = {"name": "x", "config": {**config, "models": [{"model": sneaky, "parameters": {"weight": 1}}]}}
            assert refused(server, key, body)["param"] in ("config", "model")
        assert "chat_template" in refused(server, key, {"name": "x", "config": {**config,
                                                                                 "chat_template": "/etc/x"}})["message"]
        other_key = server.key("globex")
        assert "does not exist" in refused(server, other_key, {"name": "x", "config": config})["message"]

        # a full-model merge of two fine-tunes (each merged into its base first), served by name
        job = merge(server, key, {"name": "mix", "config": config})
        assert job["status"] == "succeeded", job["error"]
        assert job["model"] == "merge:mix" and [i["name"] for i in job["result"]["inputs"]] == [a, b]
        assert all(len(i["sha256"]) == 64 for i in job["result"]["inputs"])
        manifest = json.loads((data_dir / "jobs" / job["id"] / "model" / "manifest.json").read_text())
        assert manifest["engine"]["name"] == "mergekit" and manifest["config"] == config
        events = httpx.get(f"{server.url}/v1/merges/{job['id']}/events", params={"limit": 100},
                           headers={"authorization": f"Bearer {key}"}).json()["data"]
        assert any(e["type"] == "metrics" and e["data"]["step"] == e["data"]["total"] for e in events)
        assert refused(server, key, {"name": "mix", "config": config})["code"] == "model_exists"
        assert "merge:mix" in [m.id for m in client.models.list().data]
        reply = client.chat.completions.create(model="merge:mix", messages=ASK, temperature=0, max_tokens=12)
        assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
        with pytest.raises(openai.NotFoundError):  # ours, not an upstream's: another project gets our 404
            server.client(other_key).chat.completions.create(model="merge:mix", messages=ASK, max_tokens=2)

        # an adapter merge: a new adapter on the same base, served like a fine-tune
        combined = merge(server, key, {"name": "ab", "adapters": [a, b], "method": "cat", "weights": [1, 1]})
        assert combined["status"] == "succeeded", combined["error"]
        assert combined["type"] == "adapter"
        folder = data_dir / "jobs" / combined["id"] / "model"
        assert (folder / "adapter_config.json").exists() and not (folder / "model.safetensors").exists()
        assert client.chat.completions.create(model="merge:ab", messages=ASK, max_tokens=4).choices[0].message

        # the merge as the base of a fine-tune, and in a further merge
        tuned = wait_for_job(client, client.fine_tuning.jobs.create(
            model="merge:mix", training_file=train, hyperparameters={"n_epochs": 1, "batch_size": 4}).id)
        assert tuned.status == "succeeded", tuned.error
        assert tuned.model == "merge:mix" and tuned.fine_tuned_model.startswith("ft:merge-mix:acme:")
        assert client.chat.completions.create(model=tuned.fine_tuned_model, messages=ASK, max_tokens=4).choices
        back = merge(server, key, {"name": "mix-back", "config": {
            "merge_method": "slerp", "base_model": base, "dtype": "float32", "parameters": {"t": 0.3},
            "slices": [{"sources": [{"model": base, "layer_range": [0, 30]},
                                    {"model": "merge:mix", "layer_range": [0, 30]}]}]}})
        assert back["status"] == "succeeded", back["error"]

        # graded in an eval, next to the rows' own answers
        ev = client.evals.create(name="merge", data_source_config={"type": "custom", "item_schema": {}},
                                 testing_criteria=[{"type": "exact", "name": "exact"}])
        test = client.files.create(file=("test.jsonl", jsonl(toy_rows(3, seed=5))), purpose="evals").id
        run = client.evals.runs.create(ev.id, data_source={"type": "tuneforge", "models": ["merge:mix", "answers"],
                                                           "source": {"type": "file_id", "id": test},
                                                           "sampling_params": {"max_completion_tokens": 16}})
        deadline = time.time() + 300
        while (run := client.evals.runs.retrieve(run.id, eval_id=ev.id)).status not in ("completed", "failed"):
            assert time.time() < deadline
            time.sleep(1)
        assert run.status == "completed", run.error
        scores = {m["name"]: m["graders"]["exact"]["mean"] for m in run.summary["models"]}
        assert scores["answers"] == 1.0 and 0.0 <= scores["merge:mix"] <= 1.0

        # deleted: gone from /v1/models and no longer served
        assert client.models.delete("merge:mix").deleted
        assert "merge:mix" not in [m.id for m in client.models.list().data]
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="merge:mix", messages=ASK, max_tokens=2)
        assert "merge:ab" in [m.id for m in client.models.list().data]
