"""The bake-off as one job on the platform: two bases (tiny random llamas of one shape, offered by the operator
with TUNEFORGE_BASES) x two tasks, a scripted pairwise judge, the top two merged; its worker is SIGKILLed while
a child fine-tune runs, and the next worker carries on without redoing what was done."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from fake_judge import FakeJudge
from helpers import chat_row, write_jsonl
from live_server import Server, start_worker

from tuneforge.merging import bakeoff as arithmetic


@pytest.fixture(scope="module")
def tiny_bases(tiny_model, tmp_path_factory) -> list:
    """Two random llamas of tiny_model's shape, seeded differently (so a merge of them is not a copy)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    config, tokenizer = AutoConfig.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    folders = []
    for seed in (1, 2):
        folder = tmp_path_factory.mktemp(f"tiny-base-{seed}")
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders


def task(n: int, prefix: str) -> list[dict]:
    """The reference answers carry the judge's GOOD marker, so the scripted judge prefers them."""
    return [chat_row(f"{prefix} {i}", f"{prefix.upper()} {i} GOOD") for i in range(n)]


def bakeoff_of(server: Server, key: str) -> dict | None:
    listed = httpx.get(f"{server.url}/v1/bakeoffs", headers={"authorization": f"Bearer {key}"}).json()["data"]
    return listed[0] if listed else None


def test_bakeoff_is_one_job_that_survives_a_killed_worker_and_ranks_the_bases(data_dir, tiny_bases, tmp_path):
    a, b = tiny_bases
    with FakeJudge() as judge, Server(data_dir, workers=0, env={
            "TUNEFORGE_UPSTREAM_URL": judge.url, "TUNEFORGE_BASES": f"tiny-a={a},tiny-b={b}"}) as server:
        key = server.key("acme")
        files = [write_jsonl(tmp_path / f"{name}.jsonl", task(15, name)) for name in ("route", "extract")]
        cli = subprocess.Popen(
            [sys.executable, "-m", "tuneforge", "bakeoff", "--base", "tiny-a", "--base", "tiny-b", "--data",
             str(files[0]), "--data", str(files[1]), "--judge", "marker", "--reference", "answers", "--merge-top",
             "2", "--budget", "200", "--hyper", "batch_size=2", "--max-tokens", "6", "--out", str(tmp_path / "out"),
             "--base-url", server.url, "--api-key", key],
            env=server.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = start_worker(server)
        try:
            deadline = time.time() + 300
            while True:  # kill the worker once a child has finished and another is running
                assert time.time() < deadline and cli.poll() is None, cli.stdout.read() if cli.poll() else "slow"
                job = bakeoff_of(server, key)
                statuses = [c["status"] for c in job["children"]] if job else []
                if "succeeded" in statuses and "running" in statuses:
                    break
                time.sleep(0.2)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        second = start_worker(server)
        try:
            output, _ = cli.communicate(timeout=600)
        finally:
            second.terminate()
            second.wait()
            cli.kill()
        assert cli.returncode == 0, output

        done = bakeoff_of(server, key)
        assert done["status"] == "succeeded"
        kinds = [c["kind"] for c in done["children"]]
        assert sorted(kinds) == ["eval"] * 4 + ["fine_tune"] * 6 + ["merge"]  # 2x2 + the merge's 2; 2 phases
        assert {c["status"] for c in done["children"]} == {"succeeded"}
        headers = {"authorization": f"Bearer {key}"}
        all_tunes = httpx.get(f"{server.url}/v1/fine_tuning/jobs", params={"limit": 100}, headers=headers).json()
        assert len(all_tunes["data"]) == 6  # nothing was started twice
        events = [e["message"] for e in httpx.get(f"{server.url}/v1/bakeoffs/{done['id']}/events",
                                                   params={"limit": 100}, headers=headers).json()["data"]]
        assert f"Worker {socket.gethostname()}:{first.pid} stopped responding; job requeued" in events
        assert any(m.startswith("Using fine_tune") for m in events)  # the second attempt picked up its children

        # the report: the reference's answers win every judged game, the bases tie, the merge has its place
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert [r["name"] for r in report["ranking"]][0] == "answers"
        assert {r["name"] for r in report["ranking"]} == {"tiny-a", "tiny-b", "answers"}
        assert all(r["ci_low"] <= r["rating"] <= r["ci_high"] for r in report["ranking"])
        assert [t["task"] for t in report["tasks"]] == done["datasets"]
        assert all(t["win_rates"]["answers"]["win_rate"] == 1.0 for t in report["tasks"])
        merge = report["merge"]
        assert merge["model"].startswith("merge:") and merge["of"] in (["tiny-a", "tiny-b"], ["tiny-b", "tiny-a"])
        assert {r["name"] for r in merge["ranking"]} == {"tiny-a", "tiny-b", "answers", merge["model"]}
        assert merge["place"] in (2, 3, 4) and done["merge"]["place"] == merge["place"]
        html = (tmp_path / "out" / "report.html").read_text()
        assert "<svg" in html and "The merge" in html and "https://" not in html
        assert merge["model"] in [m["id"] for m in httpx.get(f"{server.url}/v1/models", headers=headers).json()["data"]]
        assert judge.calls and {c["model"] for c in judge.calls} == {"marker"}
        assert "answers" in output and "tiny-a" in output  # the ranking table
        search_on_the_platform(server, key, done["datasets"][0], tmp_path)


def search_on_the_platform(server: Server, key: str, dataset: str, tmp_path) -> None:
    """A merge search as a merge job: `$t` tried at two values on a task's test rows; the best registered."""
    config = tmp_path / "search.yaml"
    config.write_text("merge_method: slerp\nbase_model: tiny-a\nparameters: {t: $t}\ndtype: float32\nslices:\n"
                      "  - sources: [{model: tiny-a, layer_range: [0, 4]}, {model: tiny-b, layer_range: [0, 4]}]\n")
    worker = start_worker(server)
    try:
        run = subprocess.run([sys.executable, "-m", "tuneforge", "merge-search", str(config), "--param", "t=0.2,0.8",
                              "--data", dataset, "--rows", "2", "--max-tokens", "3", "--name", "searched",
                              "--base-url", server.url, "--api-key", key], env=server.env, capture_output=True,
                             text=True, timeout=300)
    finally:
        worker.terminate()
        worker.wait()
    assert run.returncode == 0, run.stdout + run.stderr
    job_id = json.loads(run.stdout.strip().splitlines()[-1])["id"]
    headers = {"authorization": f"Bearer {key}"}
    job = httpx.get(f"{server.url}/v1/merges/{job_id}", headers=headers).json()
    assert job["model"] == "merge:searched" and job["result"]["search"]["values"]["t"] in (0.2, 0.8)
    found = httpx.get(f"{server.url}/v1/merges/{job_id}/search", headers=headers).json()
    assert [t["values"]["t"] for t in found["trials"]] == [0.2, 0.8] and len(found["curve"]) == 2
    assert "<svg" in httpx.get(f"{server.url}/v1/merges/{job_id}/search.html", headers=headers).text
    listed = httpx.get(f"{server.url}/v1/models", headers=headers).json()["data"]
    assert "merge:searched" in [m["id"] for m in listed]


def test_games_weigh_each_task_equally_and_fall_back_to_the_graders():
    def report(rows, judged):
        return {"judge": {"model": "j"} if judged else None, "graders": {"exact": {}}, "models": [], "rows": rows}

    judged = report([{"verdicts": [{"a": "ft-a", "b": "ft-b", "winner": "ft-a"}], "grades": {}}] * 3, True)
    graded = report([{"verdicts": [], "grades": {"exact": {"ft-a": {"score": 0.0}, "ft-b": {"score": 1.0}}}}], False)
    entrants = {"ft-a": "A", "ft-b": "B"}
    one = arithmetic.games(judged, entrants, "t1")
    two = arithmetic.games(graded, entrants, "t2")
    assert one == [("A", "B", 1.0, "t1")] * 3 and two == [("A", "B", 0.0, "t2")]
    ranking = arithmetic.rank(one + two, ["A", "B"], n_boot=200)
    ratings = {r["name"]: r["rating"] for r in ranking}
    assert ratings["A"] == pytest.approx(ratings["B"], abs=1)  # three wins in t1 weigh as much as one loss in t2
    rates = arithmetic.win_rates(one, ["A", "B"])
    assert rates["A"]["win_rate"] == 1.0 and rates["B"]["win_rate"] == 0.0
