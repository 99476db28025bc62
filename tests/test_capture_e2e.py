"""Must-show: from captured calls to a served model. An app's calls to its provider (a stand-in teacher that
turns `key=value` records into JSON) are captured through both the SDK wrapper and the proxy; they become a
dataset (duplicates removed, a held-out test split, the app's long fixed system prompt pruned); a fine-tuning
job trains SmolLM2 on it by dataset id; and the `ft:` model, sent the app's unchanged requests (system prompt
and all: the server prunes it), answers the test split better than the base model."""

from __future__ import annotations

import json
import random

import fake_upstream
import httpx
import openai
import pytest
from live_server import Server, wait_for_job

import tuneforge

SYSTEM = ("You are the record converter of ACME's order system. You receive one record written as key=value "
          "pairs separated by semicolons. Reply with a single JSON object that maps every key to its value as a "
          "string, keys in the order given, and nothing else: no prose, no code fences, no explanations. ") * 2
KEYS = ["name", "city", "color", "pet", "fruit", "tool"]
VALUES = ["ada", "oslo", "red", "cat", "plum", "saw", "bob", "lima", "blue", "dog", "kiwi", "axe", "eve", "rome",
          "teal", "owl", "fig", "awl", "max", "kyiv", "gold", "emu", "lime", "hoe"]


def record(rng: random.Random) -> str:
    keys = rng.sample(KEYS, rng.randint(2, 3))
    return "Convert: " + "; ".join(f"{k}={rng.choice(VALUES)}{rng.randint(1, 99)}" for k in keys)


def messages(user: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def score(client, model: str, tests: list[dict]) -> float:
    """Share of test entries whose reply parses to exactly the teacher's JSON."""
    import concurrent.futures

    def one(entry: dict) -> bool:
        user = entry["messages"][1]["content"]
        reply = client.chat.completions.create(model=model, messages=messages(user), temperature=0, max_tokens=48)
        try:
            return json.loads(reply.choices[0].message.content) == json.loads(entry["messages"][-1]["content"])
        except ValueError:
            return False

    with concurrent.futures.ThreadPoolExecutor(len(tests)) as pool:  # the server batches them together
        return sum(pool.map(one, tests)) / len(tests)


@pytest.mark.slow
def test_captured_calls_become_a_fine_tuned_model_that_beats_the_base(tmp_path):
    rng = random.Random(7)
    records = [record(rng) for _ in range(100)]
    with fake_upstream.running(0) as upstream, Server(
        tmp_path / "platform", workers=1, env={"TUNEFORGE_UPSTREAM_URL": upstream}
    ) as server:
        key = server.key("acme")
        app = tuneforge.OpenAI(base_url=upstream, api_key="sk-app", max_retries=0,
                               tuneforge={"base_url": server.url, "api_key": key, "tags": {"route": "sdk"},
                                          "spool_dir": tmp_path / "spool"})
        via_proxy = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        for i, user in enumerate(records):
            client = app if i % 2 else via_proxy
            client.chat.completions.create(model="gpt-4o", messages=messages(user))
        for user in records[:6]:  # the app repeats itself: the same request, and the same one reworded
            app.chat.completions.create(model="gpt-4o", messages=messages(user))
            via_proxy.chat.completions.create(model="gpt-4o", messages=messages(user.replace("Convert: ", "Convert:  ")
                                                                                    .replace("; ", " ; ")))
        assert app.flush(timeout=60)
        auth = {"authorization": f"Bearer {key}"}
        for _ in range(50):
            if httpx.get(server.url + "/v1/logs", headers=auth, params={"limit": 1}).json()["total"] == 112:
                break
            import time

            time.sleep(0.1)

        ds = httpx.post(server.url + "/v1/datasets", headers=auth, timeout=60, json={
            "name": "converter", "logs": {"model": "gpt-4o"}, "dedupe": "near", "test_fraction": 0.2, "seed": 1,
            "pruning_rules": [SYSTEM]}).json()
        assert ds["counts"]["candidates"] == 112, ds
        assert ds["counts"]["exact_duplicates"] + ds["counts"]["near_duplicates"] == 12, ds
        assert (ds["counts"]["train"], ds["counts"]["test"]) == (80, 20)
        entries = httpx.get(f"{server.url}/v1/datasets/{ds['id']}/entries", headers=auth,
                            params={"limit": 1000}).json()["data"]
        tests = [e for e in entries if e["split"] == "test"]
        train_users = {e["messages"][1]["content"] for e in entries if e["split"] == "train"}
        assert not train_users & {e["messages"][1]["content"] for e in tests}
        assert all(e["lineage"]["log"].startswith("log-") for e in entries)

        client = server.client(key)
        job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=ds["id"], seed=0,
                                             hyperparameters={"n_epochs": 2, "batch_size": 8,
                                                              "learning_rate_multiplier": 2.0})
        job = wait_for_job(client, job.id, timeout=900)
        assert job.status == "succeeded", job.error
        trained_on = client.files.content(job.training_file).text
        assert SYSTEM not in trained_on and len(trained_on.splitlines()) == 80

        user = tests[0]["messages"][1]["content"]
        with_prompt, without = (client.chat.completions.create(model=job.fine_tuned_model, messages=m, max_tokens=1)
                                for m in (messages(user), [{"role": "user", "content": user}]))
        assert with_prompt.usage.prompt_tokens == without.usage.prompt_tokens  # the server pruned the system prompt

        base = score(client, "smollm2-135m-instruct", tests)
        tuned = score(client, job.fine_tuned_model, tests)
        print(f"exact match on the captured test split: base {base:.2f}, fine-tuned {tuned:.2f}")
        assert tuned > base and tuned >= 0.6
