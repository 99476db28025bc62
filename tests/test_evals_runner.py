"""Eval runs: outputs generated once and cached, judgments made once, a run stopped partway resumed without
repeating any work, and the report's shape."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

from tuneforge.errors import UserError
from tuneforge.evals import graders
from tuneforge.evals.graders.judge import PairwiseJudge
from tuneforge.evals.report import write_report
from tuneforge.evals.runner import Candidate, Sampling, TestSet, load_rows, run_eval
from tuneforge.progress import Event


class Stop(Exception):
    pass


class CountingClient:
    """An in-process judge that prefers the answer containing GOOD, counting every request it gets."""

    model = "counting-judge"

    def __init__(self):
        self.requests: Counter = Counter()
        self._lock = threading.Lock()

    def complete(self, messages, *, max_tokens, temperature, response_format=None):
        text = messages[1]["content"]
        first = text.split("[Answer A]\n", 1)[1].split("\n[End of answer A]", 1)[0]
        second = text.split("[Answer B]\n", 1)[1].split("\n[End of answer B]", 1)[0]
        with self._lock:
            self.requests[json.dumps(messages)] += 1
        winner = "A" if "GOOD" in first and "GOOD" not in second else "B" if "GOOD" in second and "GOOD" not in first \
            else "tie"
        return json.dumps({"explanation": "marker", "winner": winner})


class Model:
    """A fake model: answers each prompt by a rule, counting every prompt it is asked."""

    def __init__(self, rule):
        self.rule, self.asked = rule, Counter()

    def __call__(self, prompts, sampling):
        for p in prompts:
            self.asked[p["messages"][-1]["content"]] += 1
        return [self.rule(p["messages"][-1]["content"]) for p in prompts]


def rows(n: int = 12) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": str(2 * i)}], "teacher": f"{2 * i} GOOD"}
            for i in range(n)]


def candidates(student: Model, base: Model) -> list[Candidate]:
    return [Candidate("student", answer=student, batch_size=4), Candidate("base", answer=base, batch_size=4),
            Candidate("teacher", column="teacher")]


def make_student() -> Model:
    return Model(lambda q: f"{2 * int(q.split()[2])}" + (" GOOD" if int(q.split()[2]) % 2 else ""))


def make_base() -> Model:
    return Model(lambda q: "I do not know")


def stop_after(n: int):
    calls = {"n": 0}

    def check():
        calls["n"] += 1
        if calls["n"] > n:
            raise Stop()

    return check


def test_a_stopped_run_resumes_without_generating_or_judging_anything_twice(tmp_path):
    student, base, client = make_student(), make_base(), CountingClient()
    data = rows()

    def run(check=lambda: None):
        judge = PairwiseJudge({"concurrency": 3}, client=client)
        return run_eval(data, candidates(student, base), graders=[graders.make("numeric")], judge=judge,
                        workdir=tmp_path, check=check, n_boot=100)

    with pytest.raises(Stop):
        run(stop_after(2))  # stops during the student's generation (batches of 4)
    assert 0 < sum(student.asked.values()) < 12 and not base.asked
    with pytest.raises(Stop):
        run(stop_after(14))  # generation finishes (3 + 3 batches); stops partway through judging
    assert 0 < sum(client.requests.values())
    report = run()
    assert set(student.asked.values()) == {1} and len(student.asked) == 12
    assert set(base.asked.values()) == {1} and len(base.asked) == 12
    assert set(client.requests.values()) == {1}
    # 3 pairs x 12 rows x both orders, except: on odd rows the student's answer is the teacher's, so that pair
    # costs no call, and student-vs-base is the very same request as teacher-vs-base (asked once)
    assert len(client.requests) == (3 * 12 - 6 - 6) * 2
    again = run()
    assert again["work"] == {"generated": 0, "judge_calls": 0}
    assert sum(student.asked.values()) == 12 and sum(client.requests.values()) == 48
    assert json.dumps(again["pairwise"]) == json.dumps(report["pairwise"])


def test_the_report_has_the_promised_shape(tmp_path):
    report = run_eval([TestSet("a", rows(6)), TestSet("b", rows(4))], candidates(make_student(), make_base()),
                      graders=[graders.make("numeric"), graders.make("exact")],
                      judge=PairwiseJudge(client=CountingClient()), workdir=tmp_path, n_boot=100)
    assert [m["name"] for m in report["models"]] == ["student", "base", "teacher"]
    student = report["models"][0]
    assert set(student["graders"]) == {"numeric", "exact"}
    assert set(student["graders"]["numeric"]) == {"mean", "ci_low", "ci_high", "n"}
    assert student["graders"]["numeric"]["mean"] == 1.0 and student["graders"]["exact"]["mean"] == 0.5
    assert report["models"][2] == {"name": "teacher", "source": "column", "column": "teacher",
                                   "graders": report["models"][2]["graders"]}
    pair_keys = {"a", "b", "grader", "wins", "ties", "losses", "win_rate", "ci_low", "ci_high", "n"}
    assert all(pair_keys <= set(p) for p in report["pairwise"])
    assert {(p["a"], p["b"], p["grader"]) for p in report["pairwise"]} == {
        (a, b, g) for a, b in [("student", "base"), ("student", "teacher"), ("base", "teacher")]
        for g in ("numeric", "exact", "judge")}
    numeric = next(p for p in report["pairwise"] if (p["a"], p["b"], p["grader"]) == ("student", "base", "numeric"))
    assert (numeric["wins"], numeric["ties"], numeric["losses"], numeric["delta"]) == (10, 0, 0, -1.0)
    assert {r["grader"] for r in report["ratings"]} == {"numeric", "exact", "judge"}
    assert all({"name", "rating", "ci_low", "ci_high"} <= set(r) for r in report["ratings"])
    assert set(report["judge"]) >= {"model", "prompt_version", "position_consistency"}
    assert report["judge"]["model"] == "counting-judge" and report["judge"]["prompt_version"] == "pairwise-v1"
    row = report["rows"][6]
    assert (row["test_set"], row["row"]) == ("b", 0)
    assert row["outputs"]["teacher"] == {"text": "0 GOOD"} and row["meta"] == {}
    assert row["grades"]["numeric"]["base"] == {"score": 0.0, "detail": "no number in the answer"}
    assert {(v["a"], v["b"]) for v in row["verdicts"]} == {("student", "base"), ("student", "teacher"),
                                                           ("base", "teacher")}
    verdict = next(v for v in row["verdicts"] if v["b"] == "teacher")
    assert verdict["winner"] == "teacher" and verdict["judgments"][0]["explanation"] == "marker"
    assert report["rows"][7]["verdicts"][1]["identical"] is True  # odd rows: the student's answer is the teacher's
    json_path, html_path = write_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text())["models"][0]["name"] == "student"
    assert html_path.read_text().startswith("<!DOCTYPE html>")


def test_outputs_are_keyed_by_model_input_and_sampling(tmp_path):
    model = Model(lambda q: "x")
    data = rows(3) + rows(2)  # two prompts repeated: generated once each
    run_eval(data, [Candidate("m", answer=model)], workdir=tmp_path, n_boot=10)
    assert sum(model.asked.values()) == 3
    run_eval(data, [Candidate("m", answer=model, sampling=Sampling(temperature=0.7, seed=1))], workdir=tmp_path,
             n_boot=10)
    assert sum(model.asked.values()) == 6
    run_eval(data, [Candidate("renamed", answer=model, cache_id="m")], workdir=tmp_path, n_boot=10)
    assert sum(model.asked.values()) == 6


def test_a_torn_last_line_is_redone(tmp_path):
    model = Model(lambda q: "x")
    run_eval(rows(3), [Candidate("m", answer=model)], workdir=tmp_path, n_boot=10)
    outputs = tmp_path / "outputs.jsonl"
    lines = outputs.read_text().splitlines(keepends=True)
    outputs.write_text("".join(lines[:-1]) + lines[-1][:20])  # a kill in mid-write
    report = run_eval(rows(3), [Candidate("m", answer=model)], workdir=tmp_path, n_boot=10)
    assert sum(model.asked.values()) == 4 and report["work"]["generated"] == 1


def test_progress_events_and_reference_candidates():
    events: list[Event] = []
    report = run_eval(rows(5), [Candidate("m", answer=make_student()), Candidate("ref", reference=True)],
                      graders=[graders.make("exact")], on_event=events.append, n_boot=10)
    assert report["models"][1]["graders"]["exact"]["mean"] == 1.0
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and "progress" in kinds and kinds[-1] == "done"
    assert any(e.kind == "start" and e.message.startswith("grading: exact") for e in events)


def test_bad_candidates_and_graders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="exactly one of"):
        Candidate("m", answer=make_base(), column="teacher")
    with pytest.raises(UserError, match="share a name"):
        run_eval(rows(2), [Candidate("m", reference=True), Candidate("m", column="teacher")])
    with pytest.raises(UserError, match="have no 'answer' field"):
        run_eval(rows(2), [Candidate("m", column="answer")])
    with pytest.raises(UserError, match="give one of them a `label`"):
        run_eval(rows(2), [Candidate("m", reference=True)], graders=[graders.make("exact"), graders.make("exact")])
    with pytest.raises(UserError, match="cannot judge the pair"):
        run_eval(rows(2), [Candidate("m", reference=True)], judge=PairwiseJudge(client=CountingClient()),
                 pairs=[("m", "other")])


def test_load_rows_keeps_extra_fields(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(2)))
    assert load_rows(path)[1]["teacher"] == "2 GOOD"
    path.write_text('{"messages": "nope"}\n')
    with pytest.raises(UserError, match="messages"):
        load_rows(path)
