"""Eval runs as jobs on the platform, through the official SDK's `client.evals`: a scripted judge and an
upstream "student" served by a stub on 127.0.0.1, so no model loads and the run is quick enough to kill."""

from __future__ import annotations

import io
import json
import signal
import time
from collections import Counter

import httpx
import openai
import pytest
from fake_judge import FakeJudge
from helpers import chat_row, cli
from live_server import Server, start_worker

N_ROWS = 60


def rows() -> list[dict]:
    """`echo` (the stub student) answers the question upper-cased. A third of the references equal that (a
    tie without a judge call), a third carry the judge's GOOD marker (the reference wins), and in a third
    the question does (the student wins)."""
    out = []
    for i in range(N_ROWS):
        question = f"q{i} GOOD" if i % 3 == 2 else f"q{i}"
        reference = {0: question.upper(), 1: f"Q{i} GOOD", 2: f"q{i}"}[i % 3]
        out.append(chat_row(question, reference))
    return out


def upload(client, data: list[dict]) -> str:
    body = "".join(json.dumps(r) + "\n" for r in data).encode()
    return client.files.create(file=("test.jsonl", io.BytesIO(body)), purpose="evals").id


def wait_run(client, eval_id: str, run_id: str, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = client.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status in ("completed", "failed", "canceled"):
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {run.status}")


def events(server: Server, key: str, eval_id: str, run_id: str) -> list[str]:
    r = httpx.get(f"{server.url}/v1/evals/{eval_id}/runs/{run_id}/events", params={"limit": 100},
                  headers={"authorization": f"Bearer {key}"})
    return [e["message"] for e in reversed(r.json()["data"])]


def test_eval_job_survives_a_killed_worker_and_judges_nothing_twice(data_dir):
    with FakeJudge() as judge, Server(data_dir, workers=0, env={"TUNEFORGE_UPSTREAM_URL": judge.url}) as server:
        key = server.key("acme")
        client = server.client(key)
        ev = client.evals.create(
            name="stub", data_source_config={"type": "custom", "item_schema": {"type": "object"}},
            testing_criteria=[{"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                               "reference": "{{item.reference}}", "operation": "eq"},
                              {"type": "judge", "name": "judge", "model": "marker+slow"}],
        )
        assert ev.object == "eval" and [c.name for c in ev.testing_criteria] == ["exact", "judge"]
        run = client.evals.runs.create(ev.id, name="student vs teacher", data_source={
            "type": "tuneforge", "models": ["echo", "answers"], "reference": "answers",
            "source": {"type": "file_id", "id": upload(client, rows())}})
        assert run.object == "eval.run" and run.status == "queued" and run.id.startswith("evalrun_")

        first = start_worker(server)
        log = data_dir / "jobs" / run.id / "judgments.jsonl"
        deadline = time.time() + 120
        while not log.exists() or len(log.read_text().splitlines()) < 10:
            assert time.time() < deadline and first.poll() is None, "no judgments within 120 s"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        received_before = len(judge.calls)
        recorded_before = len(log.read_text().splitlines())
        assert recorded_before < 2 * (N_ROWS * 2 // 3), "the run finished before it could be interrupted"

        second = start_worker(server)
        try:
            done = wait_run(client, ev.id, run.id)
        finally:
            second.terminate()
            second.wait()
        assert done.status == "completed", done.error

        # every judgment was asked once, except those in flight when the worker died (asked again once)
        asked = [json.dumps(c["messages"], sort_keys=True) for c in judge.calls if c["model"] == "marker+slow"]
        counts = Counter(asked)
        again = [k for k, n in counts.items() if n > 1]
        assert len(counts) == 2 * (N_ROWS * 2 // 3)  # both orders of every non-identical pair
        assert all(counts[k] == 2 for k in again)
        assert all(asked.index(k) < received_before for k in again)
        assert len(again) <= received_before - recorded_before
        recorded = [json.loads(line)["key"] for line in log.read_text().splitlines()]
        assert len(recorded) == len(set(recorded)) == len(counts)

        messages = events(server, key, ev.id, run.id)
        assert any("stopped responding; job requeued" in m for m in messages)
        assert sum(m.startswith("Job started on worker") for m in messages) == 2

        # the numbers: the student wins the rows where its answer has the marker, loses the others
        judged = next(p for p in done.summary["pairwise"] if p["grader"] == "judge")
        assert (judged["a"], judged["b"]) == ("echo", "answers")
        assert (judged["wins"], judged["ties"], judged["losses"]) == (N_ROWS // 3, N_ROWS // 3, N_ROWS // 3)
        assert done.summary["judge"]["position_consistency"] == 1.0
        exact = {m["name"]: m["graders"]["exact"]["mean"] for m in done.summary["models"]}
        assert exact == {"echo": pytest.approx(1 / 3), "answers": 1.0}
        assert done.result_counts.total == 2 * N_ROWS and done.result_counts.passed == N_ROWS + N_ROWS // 3

        items = client.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=100)
        assert len(items.data) == 100 and items.has_more
        rest = client.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=100, after=items.data[-1].id)
        assert len(rest.data) == 2 * N_ROWS - 100 and not rest.has_more
        passed = client.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=100, status="pass")
        assert len(passed.data) == done.result_counts.passed and {i.status for i in passed.data} == {"pass"}
        one = client.evals.runs.output_items.retrieve(rest.data[0].id, eval_id=ev.id, run_id=run.id)
        assert one.sample.model == rest.data[0].sample.model and one.results[0].name == "exact"
        page = httpx.get(f"{server.url}{done.report_url}", headers={"authorization": f"Bearer {key}"})
        assert page.status_code == 200 and "<svg" in page.text and "https://" not in page.text

        other = server.client(server.key("globex"))
        with pytest.raises(openai.NotFoundError):
            other.evals.runs.retrieve(run.id, eval_id=ev.id)
        with pytest.raises(openai.NotFoundError):
            other.evals.retrieve(ev.id)


def test_bad_evals_are_refused_before_anything_runs(data_dir):
    # a default upstream would take any model name: our own names must still be ours
    with Server(data_dir, workers=0, env={"TUNEFORGE_UPSTREAM_URL": "http://127.0.0.1:9/v1"}) as server:
        client = server.client(server.key("acme"))
        elsewhere = server.client(server.key("globex")).files.create(
            file=("p.md", io.BytesIO(b"judge {a} {b}")), purpose="evals").id
        with pytest.raises(openai.BadRequestError, match="unknown grader 'nope'"):
            client.evals.create(data_source_config={"type": "custom", "item_schema": {}},
                                testing_criteria=[{"type": "nope"}])
        with pytest.raises(openai.BadRequestError, match="needs a `model`"):
            client.evals.create(data_source_config={"type": "custom", "item_schema": {}},
                                testing_criteria=[{"type": "judge"}])
        for path in ("/etc/passwd", elsewhere):  # a path on the server, another project's file
            with pytest.raises(openai.BadRequestError, match="upload the file"):
                client.evals.create(data_source_config={"type": "custom", "item_schema": {}},
                                    testing_criteria=[{"type": "judge", "model": "x", "prompt_file": path}])
        ev = client.evals.create(data_source_config={"type": "custom", "item_schema": {}},
                                 testing_criteria=[{"type": "exact"}])
        source = {"type": "file_id", "id": upload(client, rows()[:3])}
        with pytest.raises(openai.NotFoundError, match="ft:smollm2-135m-instruct:globex"):
            client.evals.runs.create(ev.id, data_source={"type": "tuneforge", "source": source, "models": [
                "answers", "ft:smollm2-135m-instruct:globex::0123456789ab"]})
        with pytest.raises(openai.BadRequestError, match="row 1 has no field 'gpt'"):
            client.evals.runs.create(ev.id, data_source={"type": "tuneforge", "models": ["column:gpt"],
                                                          "source": source})
        judged = client.evals.create(data_source_config={"type": "custom", "item_schema": {}},
                                     testing_criteria=[{"type": "judge", "model": "answers"}])
        with pytest.raises(openai.BadRequestError, match="a judge must be a model"):
            client.evals.runs.create(judged.id, data_source={"type": "tuneforge", "models": ["answers", "gpt-4o"],
                                                              "source": source})
        with pytest.raises(openai.BadRequestError, match="at least two models"):
            client.evals.runs.create(judged.id, data_source={"type": "completions", "model": "gpt-4o",
                                                              "source": source})
        suite = client.evals.runs.create(ev.id, data_source={"type": "tuneforge", "models": ["answers"],
                                                              "source": {"type": "suite", "name": "general"}})
        assert suite.status == "queued" and client.evals.runs.retrieve(suite.id, eval_id=ev.id).models == ["answers"]
        with pytest.raises(openai.NotFoundError):
            client.evals.runs.create(ev.id, data_source={"type": "completions", "model": "answers",
                                                          "source": {"type": "file_id", "id": "file-nope"}})
        with pytest.raises(openai.BadRequestError) as bad:
            client.evals.runs.create(ev.id, data_source={"type": "completions", "model": "answers", "source": {
                "type": "file_content", "content": [{"item": rows()[0]}, {"item": {"messages": "nope"}}]}})
        assert "file_content:2:" in bad.value.message and str(data_dir) not in bad.value.message
        broken = client.files.create(file=("broken.jsonl", io.BytesIO(b'{"messages": []}\n')), purpose="evals").id
        with pytest.raises(openai.BadRequestError) as bad:
            client.evals.runs.create(ev.id, data_source={"type": "completions", "model": "answers", "source": {
                "type": "file_id", "id": broken}})
        assert f"{broken} (broken.jsonl):1:" in bad.value.message and str(data_dir) not in bad.value.message
        run = client.evals.runs.create(ev.id, data_source={"type": "completions", "model": "answers",
                                                            "source": source})
        assert run.status == "queued" and run.model == "answers"
        assert client.evals.runs.cancel(run.id, eval_id=ev.id).status == "canceled"
        oldest_first = [r.id for r in client.evals.runs.list(ev.id).data]
        assert sorted(oldest_first) == sorted([suite.id, run.id])
        assert [r.id for r in client.evals.runs.list(ev.id, order="desc").data] == oldest_first[::-1]
        page = client.evals.runs.list(ev.id, limit=1)
        assert page.has_more and [r.id for r in client.evals.runs.list(ev.id, after=page.data[0].id).data] == \
            oldest_first[1:]
        assert client.evals.runs.delete(run.id, eval_id=ev.id).deleted
        assert client.evals.update(ev.id, name="renamed").name == "renamed"
        assert client.evals.delete(ev.id).deleted
        with pytest.raises(openai.NotFoundError):
            client.evals.runs.retrieve(suite.id, eval_id=ev.id)


def test_cli_runs_an_eval_here_and_resumes_it(tmp_path, data_dir):
    """`tuneforge evals run` on this machine, the stub student through an upstream; a rerun with --resume
    finds every output and judgment cached."""
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows()[:9]))
    with FakeJudge() as judge:
        env = {"TUNEFORGE_UPSTREAM_URL": judge.url}
        args = ["evals", "run", "--data", str(data), "--model", "echo", "--model", "answers", "--grader", "exact",
                "--grader", "judge", "--judge", "marker", "--reference", "answers", "--html", str(tmp_path / "r.html")]
        proc = cli(*args, env=env)
        run_id = next(p for p in (data_dir / "evals").iterdir()).name
        calls = len(judge.calls)
        first = json.loads((data_dir / "evals" / run_id / "report.json").read_text())
        cli(*args, "--resume", run_id, env=env)
        assert len(judge.calls) == calls  # nothing asked twice
        changed = cli(*args, "--limit", "3", "--resume", run_id, env=env, check=False)
    assert "echo" in proc.stdout and "position consistency 1.000" in proc.stdout
    report = json.loads((data_dir / "evals" / run_id / "report.json").read_text())
    assert report["work"] == {"generated": 0, "judge_calls": 0}
    assert report["models"] == first["models"] and report["pairwise"] == first["pairwise"]
    assert changed.returncode == 1 and "give the same models" in changed.stderr
    assert (tmp_path / "r.html").read_text().startswith("<!")
    listing = cli("evals", "list").stdout
    assert run_id in listing and "completed" in listing


def test_forgetting_check_on_the_general_suite(tmp_path, data_dir):
    """`--suite general` runs the bundled suite; the first model is the base, the second its fine-tune, and the
    report has the fine-tune's score minus the base's with its CI (here the stub `echo` against the suite's
    own answers: a large, certain loss)."""
    with FakeJudge() as judge:
        cli("evals", "run", "--suite", "general", "--model", "answers", "--model", "echo", "--html",
            str(tmp_path / "r.html"), env={"TUNEFORGE_UPSTREAM_URL": judge.url})
    report = json.loads(next((data_dir / "evals").glob("*/report.json")).read_text())
    f = report["forgetting"]
    assert (f["base"], f["tuned"]) == ("answers", "echo")
    assert f["overall"]["mean_a"] == 1.0 and f["overall"]["ci_high"] < 0 and f["overall"]["n"] == 296
    assert set(f["by_category"]) == {"instruction", "arithmetic", "facts"}
    assert "Forgetting check" in (tmp_path / "r.html").read_text()


def test_cli_runs_an_eval_on_the_platform(tmp_path, data_dir):
    """`tuneforge evals run --remote`: the file uploaded, an eval and a run created, its events followed, the
    report fetched; `evals list --remote` and `evals show --remote` find it."""
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows()[:6]))
    with FakeJudge() as judge, Server(data_dir / "platform", workers=1,
                                      env={"TUNEFORGE_UPSTREAM_URL": judge.url}) as server:
        env = {"TUNEFORGE_BASE_URL": server.url, "TUNEFORGE_API_KEY": server.key("acme")}
        proc = cli("evals", "run", "--remote", "--data", str(data), "--model", "echo", "--model", "answers",
                   "--grader", "exact", "--grader", "judge", "--judge", "marker", "--out", str(tmp_path / "r.json"),
                   env=env)
        report = json.loads((tmp_path / "r.json").read_text())
        run_id = next(line.split("run ")[1].split()[0] for line in proc.stderr.splitlines() if "queued" in line)
        listing = cli("evals", "list", "--remote", env=env).stdout
        shown = cli("evals", "show", run_id, "--remote", env=env).stdout
    exact = {m["name"]: m["graders"]["exact"]["mean"] for m in report["models"]}
    assert exact == {"echo": pytest.approx(1 / 3), "answers": 1.0}  # a third of the rows: echo = reference
    assert report["judge"]["model"] == "marker" and "Evaluating echo, answers on 6 rows" in proc.stderr
    assert run_id in listing and "completed" in listing
    assert "echo" in shown and "position consistency 1.000" in shown
