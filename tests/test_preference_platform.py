"""Preference datasets on the platform, end to end on a tiny random base (offered with TUNEFORGE_BASES): pairs
from an eval run's verdicts (API and CLI, with the held-out warning), and a self-play job through the CLI whose
garbage answers all fail, so each pair prefers the row's reference (its lineage says so)."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fake_judge import FakeJudge
from helpers import chat_row, cli, write_jsonl
from live_server import Server, wait_for_job

from tuneforge.data.preference import normalized


@pytest.fixture(scope="module")
def platform(tiny_model, tmp_path_factory):
    data = tmp_path_factory.mktemp("platform")
    with FakeJudge() as judge, Server(data, env={"TUNEFORGE_UPSTREAM_URL": judge.url,
                                                 "TUNEFORGE_BASES": f"tiny={tiny_model}"}) as server:
        key = server.key("acme")
        yield server, key, {"TUNEFORGE_BASE_URL": server.url, "TUNEFORGE_API_KEY": key}


def rows(n: int) -> list[dict]:
    """References carry the scripted judge's GOOD marker: it prefers them to the tiny model's garbage."""
    return [chat_row(f"say {i}", f"GOOD {i}") for i in range(n)]


def api(server: Server, key: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{server.url}{path}", headers={"authorization": f"Bearer {key}"}, timeout=60,
                         **kwargs)


def wait_ready(server: Server, key: str, ds_id: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while (ds := api(server, key, "GET", f"/v1/datasets/{ds_id}").json())["status"] == "generating":
        assert time.time() < deadline, ds
        time.sleep(0.3)
    return ds


def test_pairs_from_an_eval_run_by_the_judge_and_by_a_grader(platform):
    import io

    server, key, env = platform
    client = server.client(key)
    body = "".join(json.dumps(r) + "\n" for r in rows(4)).encode()
    file_id = client.files.create(file=("test.jsonl", io.BytesIO(body)), purpose="evals").id
    ev = client.evals.create(
        name="tiny vs answers", data_source_config={"type": "custom", "item_schema": {"type": "object"}},
        testing_criteria=[{"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                           "reference": "{{item.reference}}", "operation": "eq"},
                          {"type": "judge", "name": "judge", "model": "marker"}])
    run = client.evals.runs.create(ev.id, data_source={
        "type": "tuneforge", "models": ["tiny", "answers"], "reference": "answers",
        "sampling_params": {"max_completion_tokens": 4, "temperature": 1.0, "seed": 0},  # greedy: only newlines
        "source": {"type": "file_id", "id": file_id}})
    early = api(server, key, "POST", "/v1/datasets/from_eval", json={"run_id": run.id})
    assert early.status_code == 409 and early.json()["error"]["param"] == "run_id"
    deadline = time.time() + 120
    while (status := client.evals.runs.retrieve(run.id, eval_id=ev.id).status) not in ("completed", "failed"):
        assert time.time() < deadline, status
        time.sleep(0.3)
    assert status == "completed"

    made = api(server, key, "POST", "/v1/datasets/from_eval", json={"run_id": run.id, "name": "judged"}).json()
    assert (made["kind"], made["status"], made["counts"]["pairs"]) == ("preference", "ready", 4)
    assert made["source"]["eval_run"] == run.id and "not held out" in made["warnings"][0]
    entries = api(server, key, "GET", f"/v1/datasets/{made['id']}/entries").json()["data"]
    assert [e["lineage"] for e in entries] == [
        {"eval_run": run.id, "row": i, "test_set": "test.jsonl", "by": "judge", "preferred": "answers",
         "rejected": "tiny"} for i in range(4)]
    assert entries[0]["messages"][-1] == {"role": "assistant", "content": "GOOD 0"} and entries[0]["rejected"]
    bad = api(server, key, "POST", "/v1/datasets/from_eval", json={"run_id": run.id, "by": "json"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "by"

    proc = cli("datasets", "from-eval", run.id, "--by", "exact", env=env)
    assert "warning:" in proc.stdout + proc.stderr
    ds_id = proc.stdout.strip().splitlines()[-1]
    exported = [json.loads(line) for line in api(server, key, "GET", f"/v1/datasets/{ds_id}/export").text.splitlines()]
    assert len(exported) == 4 and all(normalized(row) == row for row in exported)
    assert exported[0]["preferred_output"] == [{"role": "assistant", "content": "GOOD 0"}]


def test_self_play_job_prefers_the_reference_when_no_answer_passes(platform, tmp_path):
    server, key, env = platform
    data = write_jsonl(tmp_path / "train.jsonl", rows(5))
    too_many = api(server, key, "POST", "/v1/datasets/self_play", json={"model": "tiny", "training_file": "file-x",
                                                                       "k": 17})
    assert too_many.status_code == 400 and "k" in too_many.json()["error"]["param"]
    unknown = api(server, key, "POST", "/v1/datasets/self_play", json={"model": "nope", "training_file": "file-x"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"

    proc = cli("datasets", "self-play", "--model", "tiny", "--data", str(data), "--grader", "exact", "-k", "2",
               "--limit", "3", "--max-tokens", "4", env=env)
    ds_id = proc.stdout.strip().splitlines()[-1]
    ds = wait_ready(server, key, ds_id)
    assert (ds["kind"], ds["status"], ds["job"]["status"]) == ("preference", "ready", "succeeded")
    assert ds["counts"] == {"prompts": 3, "sampled": 3, "pairs": 3, "train": 3, "test": 0}
    entries = api(server, key, "GET", f"/v1/datasets/{ds_id}/entries").json()["data"]
    file_id = ds["source"]["file"]
    for n, e in enumerate(entries):
        play = e["lineage"].pop("self_play")
        assert e["lineage"] == {"file": file_id, "line": n + 1}
        assert {k: play[k] for k in ("model", "temperature", "k", "grader", "preferred")} == {
            "model": "tiny", "temperature": 1.0, "k": 2, "grader": "exact", "preferred": "reference"}
        assert play["samples"][0] is None and play["grades"] == [1.0, 0.0]
        assert e["messages"][-1] == {"role": "assistant", "content": f"GOOD {n}"} and e["answer_model"] == "tiny"
    lines = api(server, key, "GET", f"/v1/datasets/{ds_id}/export").text.splitlines()
    assert len(lines) == 3 and all(normalized(json.loads(line)) for line in lines)
    assert ds["job"]["id"].startswith("selfplayjob-")

    # The loop closed: a DPO job takes the dataset by id, continuing the model that played.
    client = server.client(key)
    job = client.fine_tuning.jobs.create(model="tiny", training_file=ds_id, method={
        "type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 3}}})
    job = wait_for_job(client, job.id)
    assert job.status == "succeeded" and job.method.type == "dpo", job.error
