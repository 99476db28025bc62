"""Must-show: from captured calls to a served model, its eval and the savings. An app's calls to its
provider (a stand-in teacher that turns `key=value` records into JSON) are captured through both the SDK
wrapper and the proxy; they become a dataset (duplicates removed, a held-out test split, the app's long fixed
system prompt pruned); a fine-tuning job trains SmolLM2 on it by dataset id; the `ft:` model, sent the app's
unchanged requests (system prompt and all: the server prunes it), answers with the pruned prompt. An eval
run compares it with the base model and the teacher's captured answers on the test split (exact, field-level,
a scripted judge), and the savings report prices the traffic on the teacher and on the student, with the
student's win rate."""

from __future__ import annotations

import json
import random

import fake_upstream
import httpx
import openai
import pytest
from fake_judge import FakeJudge
from helpers import cli
from live_server import Server, wait_for_job
from test_evals_platform import wait_run

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


def write_routes(path, judge_url: str):
    """The judge (a scripted one that prefers JSON objects) through its own upstream route; the teacher
    through the default upstream."""
    path.write_text(json.dumps({"upstreams": [{"models": ["json"], "url": judge_url}]}))
    return path


def messages(user: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]




@pytest.mark.slow
def test_captured_calls_become_a_fine_tuned_model_that_beats_the_base(tmp_path):
    rng = random.Random(7)
    records = [record(rng) for _ in range(100)]
    routes = tmp_path / "upstreams.json"
    with fake_upstream.running(0) as upstream, FakeJudge() as judge, Server(
        tmp_path / "platform", workers=1, env={"TUNEFORGE_UPSTREAM_URL": upstream, "TUNEFORGE_UPSTREAMS": str(
            write_routes(routes, judge.url))}
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

        # the student against the teacher's captured answers on the test split: exact, field-level and a judge
        ev = client.evals.create(name="converter", data_source_config={"type": "custom", "item_schema": {}},
                                 testing_criteria=[{"type": "exact"}, {"type": "json"},
                                                   {"type": "judge", "model": "json"}])
        run = client.evals.runs.create(ev.id, data_source={
            "type": "tuneforge", "models": [job.fine_tuned_model, "smollm2-135m-instruct", "answers"],
            "reference": "answers", "source": {"type": "dataset", "id": ds["id"]}})
        run = wait_run(client, ev.id, run.id)
        assert run.status == "completed", run.error
        exact = {m["name"]: m["graders"]["exact"]["mean"] for m in run.summary["models"]}
        print(f"exact match on the captured test split: {exact}")
        assert exact["answers"] == 1.0 and exact[job.fine_tuned_model] > exact["smollm2-135m-instruct"]
        assert exact[job.fine_tuned_model] >= 0.6

        # what the traffic costs on the teacher and would cost on the student, next to its win rate
        env = {"TUNEFORGE_BASE_URL": server.url, "TUNEFORGE_API_KEY": key}
        table = json.loads(cli("report", "savings", "--model", "gpt-4o", "--student", job.fine_tuned_model,
                               "--eval", run.id, "--usd-per-hour", "0.50", "--json", env=env).stdout)
        assert table["teacher"]["cost_per_day"] > 0 and table["student"]["cost_per_day"] > 0
        assert table["savings_per_month"] == pytest.approx(
            (table["teacher"]["cost_per_day"] - table["student"]["cost_per_day"]) * 30)
        win = table["win_rate"]
        assert win["ci_low"] <= win["win_rate"] <= win["ci_high"] and win["n"] == 20
        shown = cli("report", "savings", "--model", "gpt-4o", "--student", job.fine_tuned_model, "--eval", run.id,
                    "--usd-per-1m-input", "0.1", "--usd-per-1m-output", "0.2", env=env).stdout
        assert "win rate" in shown.lower()
