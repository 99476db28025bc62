"""The pairwise judge and the criterion judge, against a scripted OpenAI-compatible judge over real HTTP.

Must show: a judge that always prefers the answer shown first turns every verdict into a tie and scores
position consistency 0; an unbiased judge's wins come through; identical answers cost no call.
"""

from __future__ import annotations

import json

import pytest
from fake_judge import FakeJudge

from tuneforge.errors import UserError
from tuneforge.evals import graders
from tuneforge.evals.cache import JudgmentLog
from tuneforge.evals.chat import ChatError, OpenAIChatClient
from tuneforge.evals.graders.criterion import CriterionGrader, agreement, parse_pass_fail
from tuneforge.evals.graders.judge import PairTask, PairwiseJudge, parse_verdict, position_consistency
from tuneforge.evals.outputs import Output
from tuneforge.evals.runner import Candidate, run_eval


def row(question: str, answer: str = "ref", **extra) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], **extra}


# Model a has the marker on rows 0-3, model b on rows 4-5, both on row 6 (different texts), row 7 identical.
A_ANSWERS = ["GOOD 0", "GOOD 1", "GOOD 2", "GOOD 3", "plain 4", "plain 5", "GOOD x6", "same answer"]
B_ANSWERS = ["plain 0", "plain 1", "plain 2", "plain 3", "GOOD 4", "GOOD 5", "GOOD y6", "  same answer\n"]
ROWS = [row(f"question {i}", a=a, b=b) for i, (a, b) in enumerate(zip(A_ANSWERS, B_ANSWERS))]
CANDIDATES = [Candidate("a", column="a"), Candidate("b", column="b")]


def judge_for(fake: FakeJudge, model: str, **spec) -> PairwiseJudge:
    client = OpenAIChatClient(fake.url, "test-key", model, base_delay=0.0)
    return graders.make({"name": "judge", **spec}, client=client)  # type: ignore[return-value]


def judge_entry(report: dict) -> dict:
    return next(p for p in report["pairwise"] if p["grader"] == "judge")


def test_a_judge_that_always_prefers_the_first_answer_gives_only_ties_and_zero_consistency(tmp_path):
    with FakeJudge() as fake:
        report = run_eval(ROWS, CANDIDATES, judge=judge_for(fake, "first"), workdir=tmp_path, n_boot=200)
        calls = len(fake.calls)
    entry = judge_entry(report)
    assert (entry["wins"], entry["ties"], entry["losses"]) == (0, 8, 0)
    assert entry["win_rate"] == 0.5
    assert report["judge"]["position_consistency"] == 0.0
    assert entry["position_consistency"] == 0.0
    assert calls == 2 * 7  # both orders of the 7 differing pairs; the identical pair costs nothing
    verdicts = [v for r in report["rows"] for v in r["verdicts"]]
    assert all(v["winner"] == "tie" for v in verdicts)
    judged = [v for v in verdicts if not v["identical"]]
    assert all(v["consistent"] is False for v in judged)
    # each order's judgment is recorded: who was shown first, the raw verdict, the judge and prompt version
    first = judged[0]["judgments"]
    assert [j["shown_first"] for j in first] == ["a", "b"]
    assert [j["winner"] for j in first] == ["a", "b"]
    assert all(j["verdict"] == "A" and j["judge_model"] == "first" and j["prompt_version"] == "pairwise-v1"
               and '"winner": "A"' in j["raw"] for j in first)


def test_an_unbiased_judge_lets_the_wins_through(tmp_path):
    with FakeJudge() as fake:
        report = run_eval(ROWS, CANDIDATES, judge=judge_for(fake, "marker"), workdir=tmp_path, n_boot=200)
    entry = judge_entry(report)
    assert (entry["wins"], entry["ties"], entry["losses"]) == (4, 2, 2)
    assert entry["win_rate"] == pytest.approx((4 + 1) / 8)
    assert report["judge"]["position_consistency"] == 1.0
    assert report["judge"]["identical"] == 1 and report["judge"]["pairs_judged"] == 7
    winners = [r["verdicts"][0]["winner"] for r in report["rows"]]
    assert winners == ["a", "a", "a", "a", "b", "b", "tie", "tie"]
    assert report["rows"][0]["verdicts"][0]["judgments"][0]["explanation"] == "A has the marker"
    assert report["rows"][7]["verdicts"][0]["identical"] is True


def test_identical_answers_tie_without_a_call():
    with FakeJudge() as fake:
        judge = judge_for(fake, "marker")
        task = PairTask(row("q"), "a", "b", Output("```\n{\"x\": 1}\n```"), Output(' {"x": 1} '))
        verdict = judge.judge(task)
        assert fake.calls == []
    assert verdict.winner == "tie" and verdict.identical and verdict.consistent is None
    assert position_consistency([verdict]) is None


def test_judgments_are_logged_and_never_paid_for_twice(tmp_path):
    tasks = [PairTask(ROWS[i], "a", "b", Output(A_ANSWERS[i]), Output(B_ANSWERS[i])) for i in range(3)]
    with FakeJudge() as fake:
        first = judge_for(fake, "marker")
        first.bind(JudgmentLog(tmp_path / "judgments.jsonl"))
        first.judge_many(tasks)
        assert len(fake.calls) == 6
        again = judge_for(fake, "marker")
        again.bind(JudgmentLog(tmp_path / "judgments.jsonl"))
        verdicts = again.judge_many(tasks)
        assert len(fake.calls) == 6
    assert [v.winner for v in verdicts] == ["a", "a", "a"]
    records = list(JudgmentLog(tmp_path / "judgments.jsonl").records.values())
    assert len(records) == 6
    assert {r["shown_first"] for r in records} == {"a", "b"}
    assert all(r["judge_model"] == "marker" and r["prompt_version"] == "pairwise-v1" and r["raw"] for r in records)


def test_a_garbage_judge_never_crashes_and_counts_as_ties(tmp_path):
    with FakeJudge() as fake:
        report = run_eval(ROWS, CANDIDATES, judge=judge_for(fake, "garbage"), workdir=tmp_path, n_boot=100)
    entry = judge_entry(report)
    assert (entry["wins"], entry["ties"], entry["losses"]) == (0, 8, 0)
    assert report["judge"]["invalid_verdicts"] == 14
    assert report["judge"]["position_consistency"] == 0.0  # two unreadable replies do not "agree"


def test_retries_on_503_and_falls_back_without_response_format():
    tasks = [PairTask(ROWS[0], "a", "b", Output(A_ANSWERS[0]), Output(B_ANSWERS[0]))]
    with FakeJudge() as fake:
        assert judge_for(fake, "flaky").judge_many(tasks)[0].winner == "a"
        assert len(fake.calls) == 4  # each order: a 503, then the answer
        fake.calls.clear()
        strict = judge_for(fake, "strict", concurrency=1)
        assert strict.judge_many(tasks)[0].winner == "a"
        assert "response_format" in fake.calls[0] and "response_format" not in fake.calls[-1]
        assert len(fake.calls) == 3  # refused once, then never offered again


def test_a_bad_key_stops_the_run_and_records_nothing(tmp_path):
    with FakeJudge() as fake:
        judge = judge_for(fake, "deny")
        judge.bind(JudgmentLog(tmp_path / "j.jsonl"))
        with pytest.raises(ChatError, match="401"):
            judge.judge_many([PairTask(ROWS[0], "a", "b", Output("x"), Output("y"))])
    assert not (tmp_path / "j.jsonl").exists()


@pytest.mark.parametrize("text, winner", [
    ('{"explanation": "B is right", "winner": "B"}', "B"),
    ('```json\n{"explanation": "x {y}", "winner": "A"}\n```', "A"),
    ('Sure! Here is my verdict: {"winner": "tie", "explanation": "both fine"} Thanks.', "tie"),
    ('{"explanation": "...", "winner": "Answer B"}', "B"),
    ("[[A]] because it is correct", "A"),
    ("B", "B"),
    ("A: it answers the question.", "A"),
    ("Winner: tie", "tie"),
    ("A good answer would mention Paris.", "invalid"),
    ("A is better: it is correct.", "A"),
    ("a. lowercase letters are not verdicts", "invalid"),
    ("", "invalid"),
    ('{"explanation": "no decision"}', "invalid"),
    ('{"winner": "C"}', "invalid"),
    ('Answer A says {"city": "Oslo"}; answer B says {"city": "Bergen"}. {"winner": "B", "explanation": "."}', "B"),
    ('The JSON object is:\n{\n  "explanation": "cut short",\n  "winner": "B",\n  "expl', "B"),
])
def test_parse_verdict(text, winner):
    assert parse_verdict(text)[0] == winner


def test_the_user_prompt_file_and_criteria_go_into_the_request(tmp_path):
    prompt = tmp_path / "my-judge.md"
    prompt.write_text("notes\n--- system ---\nBe fair.\n--- user ---\nQ: {{conversation}}\nA: {{answer_a}}\n"
                      "B: {{answer_b}}\n")
    judge = PairwiseJudge({"prompt_file": str(prompt), "criteria": "Prefer answers in French."},
                          client=OpenAIChatClient("http://127.0.0.1:9/v1", None, "m"))
    assert judge.prompt_version.startswith("my-judge-") and len(judge.prompt_version) == len("my-judge-") + 12
    messages = judge.messages(row("hi {{answer_b}}"), Output("first {{answer_b}}"), Output("second"))
    assert messages[0]["content"].endswith("Prefer answers in French.")
    assert messages[1]["content"] == "Q: USER: hi {{answer_b}}\nA: first {{answer_b}}\nB: second"
    bad = tmp_path / "bad.md"
    bad.write_text("--- system ---\nx\n--- user ---\n{{answer_a}} only\n")
    with pytest.raises(UserError, match="answer_b"):
        PairwiseJudge({"prompt_file": str(bad)}, client=OpenAIChatClient("http://127.0.0.1:9/v1", None, "m"))



def test_reports_and_errors_name_a_file_by_its_name_never_its_server_path(tmp_path):
    folder = tmp_path / "server-side"
    folder.mkdir()
    prompt = folder / "my-criterion.md"
    prompt.write_text("--- system ---\nJudge.\n--- user ---\n{{criterion}}: {{answer}}\n")
    labels = folder / "labels.jsonl"
    labels.write_text(json.dumps(row("q", "GOOD", label="PASS")) + "\n")
    client = OpenAIChatClient("http://127.0.0.1:9/v1", None, "m")
    grader = CriterionGrader({"criterion": "c", "prompt_file": str(prompt), "alignment_file": str(labels)},
                             client=client)
    described = grader.describe()
    assert (described["prompt_file"], described["alignment_file"]) == ("my-criterion.md", "labels.jsonl")
    assert str(folder) not in json.dumps(described)
    (folder / "flat.md").write_text("no sections")
    (folder / "partial.md").write_text("--- system ---\nx\n--- user ---\n{{answer}}\n")
    (folder / "broken.jsonl").write_text("{}\nnot json\n")
    cases = [({"prompt_file": str(folder / "gone.md")}, "gone.md: cannot read the judge prompt"),
             ({"prompt_file": str(folder / "flat.md")}, "flat.md: a judge prompt needs"),
             ({"prompt_file": str(folder / "partial.md")}, "partial.md: the user section must contain"),
             ({"alignment_file": str(folder / "gone.jsonl")}, "gone.jsonl: cannot read the alignment set"),
             ({"alignment_file": str(folder / "broken.jsonl")}, "broken.jsonl:2: not valid JSON")]
    for options, message in cases:
        with pytest.raises(UserError, match=message) as caught:
            CriterionGrader({"criterion": "c", **options}, client=client)
        assert str(folder) not in str(caught.value)


def test_chat_errors_name_the_model_not_the_upstream_address():
    with FakeJudge() as fake:
        with pytest.raises(ChatError, match="401") as refused:
            OpenAIChatClient(fake.url, "k", "deny").complete([], max_tokens=16, temperature=0.0)
    unreachable = OpenAIChatClient("http://127.0.0.1:9/v1", None, "gone", max_attempts=1)
    with pytest.raises(ChatError, match="gave up") as gave_up:
        unreachable.complete([{"role": "user", "content": "hi"}], max_tokens=16, temperature=0.0)
    for exc, url, model in [(refused, fake.url, "deny"), (gave_up, "127.0.0.1:9", "gone")]:
        assert f"model '{model}' (upstream)" in str(exc.value)
        assert url not in str(exc.value) and "127.0.0.1" not in str(exc.value)


def test_the_bundled_prompt_shows_the_reference_only_when_asked():
    client = OpenAIChatClient("http://127.0.0.1:9/v1", None, "m")
    r = row("2+2?", "4")
    assert "[Reference answer]" not in PairwiseJudge(client=client).messages(r, Output("4"), Output("5"))[1]["content"]
    shown = PairwiseJudge({"show_reference": True}, client=client).messages(r, Output("4"), Output("5"))
    assert "[Reference answer]\n4\n" in shown[1]["content"]


# criterion


def test_criterion_grades_and_reports_its_agreement_with_labels(tmp_path):
    alignment = [row("q1", "GOOD", label="PASS"), row("q2", "bad", label="FAIL"), row("q3", "GOOD too", label="FAIL"),
                 row("q4", "nope", label="PASS"), row("q5", "GOOD!", label="PASS")]
    with FakeJudge() as fake:
        client = OpenAIChatClient(fake.url, "k", "criterion", base_delay=0.0)
        grader = CriterionGrader({"criterion": "says GOOD"}, client=client, alignment_rows=alignment)
        report = run_eval(ROWS, CANDIDATES, graders=[grader], workdir=tmp_path, n_boot=100)
    a = report["graders"]["criterion"]["alignment"]
    # judge says PASS on rows 1, 3, 5; labels PASS on 1, 4, 5: tp=2 fp=1 fn=1 tn=1
    assert (a["tp"], a["fp"], a["fn"], a["tn"]) == (2, 1, 1, 1)
    assert a["accuracy"] == pytest.approx(3 / 5) and a["precision"] == pytest.approx(2 / 3)
    assert a["recall"] == pytest.approx(2 / 3)
    assert a["kappa"] == pytest.approx((0.6 - 0.52) / 0.48)
    scores = {m["name"]: m["graders"]["criterion"]["mean"] for m in report["models"]}
    assert scores == {"a": pytest.approx(5 / 8), "b": pytest.approx(3 / 8)}
    assert report["rows"][0]["grades"]["criterion"]["a"] == {"score": 1.0, "detail": "looked for GOOD"}


def test_agreement_measures_on_exact_numbers():
    labels = [True, True, True, False, False, False, False, True]
    said = [True, True, False, False, False, True, None, None]  # None: unreadable, counted as the wrong answer
    a = agreement(labels, said)
    assert (a["tp"], a["fp"], a["fn"], a["tn"], a["invalid"]) == (2, 2, 2, 2, 2)
    assert a["accuracy"] == 0.5 and a["precision"] == 0.5 and a["recall"] == 0.5 and a["kappa"] == 0.0
    perfect = agreement([True, False, True], [True, False, True])
    assert perfect["kappa"] == 1.0 and perfect["accuracy"] == 1.0
    assert agreement([True, True], [True, True])["kappa"] is None  # no variation: kappa undefined
    assert agreement([False], [False])["precision"] is None


@pytest.mark.parametrize("text, verdict", [
    ('{"explanation": "ok", "verdict": "PASS"}', "PASS"),
    ('```\n{"verdict": "fail", "explanation": "no"}\n```', "FAIL"),
    ('{"pass": true}', "PASS"),
    ("FAIL - it never says GOOD", "FAIL"),
    ("The answer clearly meets it, so PASS.", "PASS"),
    ("Verdict: FAIL", "FAIL"),
    ('{"explanation": "it says "GOOD" twice", "verdict": "PASS"', "PASS"),
    ("I cannot decide between pass and fail", "invalid"),
])
def test_parse_pass_fail(text, verdict):
    assert parse_pass_fail(text)[0] == verdict


# candidates answered by an OpenAI-compatible endpoint


def test_an_upstream_model_as_a_candidate(tmp_path):
    from tuneforge.evals.answerers import client_answerer

    data = [row("hello"), row("please REFUSE this"), row("bye")]
    with FakeJudge() as fake:
        answer = client_answerer(OpenAIChatClient(fake.url, "k", "echo", base_delay=0.0), concurrency=2)
        report = run_eval(data, [Candidate("gpt-echo", answer=answer)], workdir=tmp_path, n_boot=10)
        assert len(fake.calls) == 3
        again = run_eval(data, [Candidate("gpt-echo", answer=answer)], workdir=tmp_path, n_boot=10)
        assert len(fake.calls) == 3 and again["work"]["generated"] == 0
        with pytest.raises(ChatError, match="401"):
            run_eval(data, [Candidate("x", answer=client_answerer(OpenAIChatClient(fake.url, "k", "deny")))])
    outputs = [r["outputs"]["gpt-echo"] for r in report["rows"]]
    assert outputs[0] == {"text": "HELLO"} and outputs[2] == {"text": "BYE"}
    assert outputs[1]["text"] == "" and "content filtered" in outputs[1]["error"]  # refused: an error answer
