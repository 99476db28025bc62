"""Preference pairs from the platform's own signals: from an eval report's verdicts and grades, from graded
self-play samples (exact pairs on hand-made inputs), sampling on a tiny model, and the store's preference
datasets (entries, OpenAI preference export, the migration's columns)."""

from __future__ import annotations

import json

import pytest

from tuneforge.data.preference import normalized
from tuneforge.errors import Conflict, UserError
from tuneforge.evals.graders import Grade
from tuneforge.evals.outputs import Output
from tuneforge.evals.pairs import pairs_from_report, pairs_from_samples, sample

SYSTEM = {"role": "system", "content": "Answer briefly."}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def prompt(q: str, tools: bool = False) -> dict:
    out: dict = {"messages": [SYSTEM, {"role": "user", "content": q}]}
    if tools:
        out["tools"] = TOOLS
    return out


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def report_row(n: int, outputs: dict, *, verdict: str | None = None, exact: dict | None = None,
               tools: bool = False) -> dict:
    verdicts = [{"grader": "judge", "a": "student", "b": "answers", "winner": verdict, "identical": False,
                 "consistent": True, "judgments": []}] if verdict else []
    grades = {"exact": {m: {"score": s, "detail": None} for m, s in exact.items()}} if exact else {}
    return {"index": n, "test_set": "t.jsonl", "row": n, "prompt": prompt(f"q{n}", tools), "meta": {},
            "reference": None, "outputs": outputs, "grades": grades, "verdicts": verdicts}


def report() -> dict:
    call = {"type": "function", "function": {"name": "lookup", "arguments": "{\"id\": 1}"}}
    rows = [
        report_row(0, {"student": {"text": "bad"}, "answers": {"text": "good"}}, verdict="answers",
                   exact={"student": 0.0, "answers": 1.0}),
        report_row(1, {"student": {"text": "x"}, "answers": {"text": "y"}}, verdict="tie",
                   exact={"student": 1.0, "answers": 1.0}),
        report_row(2, {"student": {"text": "", "error": "refused"}, "answers": {"text": "z"}}, verdict="answers",
                   exact={"student": 0.0, "answers": 1.0}),
        report_row(3, {"student": {"text": "```\nsame\n```"}, "answers": {"text": "same"}}, verdict="student",
                   exact={"student": 1.0, "answers": 0.0}),
        report_row(4, {"student": {"text": "", "tool_calls": [call]}, "answers": {"text": "no call"}},
                   verdict="student", exact={"student": 0.5, "answers": 0.0}, tools=True),
    ]
    return {"judge": {"label": "judge", "model": "m"}, "rows": rows}


def test_pairs_from_a_report_by_the_judge_skip_ties_errors_and_identical_answers():
    found = pairs_from_report(report(), "judge")
    assert [p.lineage for p in found] == [
        {"row": 0, "test_set": "t.jsonl", "by": "judge", "preferred": "answers", "rejected": "student"},
        {"row": 4, "test_set": "t.jsonl", "by": "judge", "preferred": "student", "rejected": "answers"},
    ]
    assert found[0].row == {"input": prompt("q0"), "preferred_output": [assistant("good")],
                            "non_preferred_output": [assistant("bad")]}
    tool_pair = found[1].row
    assert tool_pair["input"]["tools"] == TOOLS
    assert tool_pair["preferred_output"] == [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "lookup", "arguments": "{\"id\": 1}"}}]}]
    assert all(normalized(p.row) == p.row for p in found)


def test_pairs_from_a_report_by_a_grader_pass_against_fail_or_a_gap():
    by_exact = pairs_from_report(report(), "exact")
    assert [(p.lineage["row"], p.lineage["preferred"]) for p in by_exact] == [(0, "answers")]
    gap = pairs_from_report(report(), "exact", min_gap=0.5)
    assert [(p.lineage["row"], p.lineage["preferred"], p.lineage["rejected"]) for p in gap] == [
        (0, "answers", "student"), (4, "student", "answers")]
    with pytest.raises(UserError, match="judge, exact") as err:
        pairs_from_report(report(), "json")
    assert err.value.param == "by"


def graded(*scores: float | None) -> list[Grade]:
    return [Grade(s) for s in scores]


ROW = {"messages": [SYSTEM, {"role": "user", "content": "2+2"}, assistant("4")]}


def test_pairs_from_samples_pass_with_fail_reference_fallback_and_no_pair_when_all_pass():
    answers = [Output("4"), Output("5"), Output(" 4 "), Output("22"), Output("")]
    found = pairs_from_samples(ROW, answers, graded(1, 0, 1, 0, 0))
    assert len(found) == 1 and found[0].lineage == {"samples": [0, 1], "grades": [1, 0], "preferred": "sample"}
    assert found[0].row == {"input": {"messages": ROW["messages"][:2]}, "preferred_output": [assistant("4")],
                            "non_preferred_output": [assistant("5")]}
    two = pairs_from_samples(ROW, answers, graded(1, 0, 1, 0, 0), per_prompt=3)  # "4" and " 4 " are one answer
    assert [p.lineage["samples"] for p in two] == [[0, 1], [0, 3]]

    wrong = [Output("5"), Output("5"), Output("6")]
    fallback = pairs_from_samples(ROW, wrong, graded(0, 0, 0))
    assert [p.lineage for p in fallback] == [{"samples": [None, 0], "grades": [1.0, 0], "preferred": "reference"}]
    assert fallback[0].row["preferred_output"] == [assistant("4")]
    assert pairs_from_samples(ROW, wrong, graded(0, 0, 0), use_reference=False) == []
    assert pairs_from_samples(ROW, [Output("4"), Output("4.")], graded(1, 1)) == []
    assert pairs_from_samples(ROW, wrong, graded(None, None, None)) == []
    assert all(normalized(p.row) for p in found + two + fallback)


def test_pairs_from_samples_with_a_gap_take_the_best_over_the_worst():
    answers = [Output("{\"a\": 1}"), Output("{\"a\": 1, \"b\": 2}"), Output("nothing")]
    found = pairs_from_samples(ROW, answers, graded(0.5, 0.9, 0.2), min_gap=0.5)
    assert [p.lineage for p in found] == [{"samples": [1, 2], "grades": [0.9, 0.2], "preferred": "sample"}]
    alike = pairs_from_samples(ROW, answers[:2], graded(0.5, 0.6), min_gap=0.5)  # none right, none far below
    assert [p.lineage["preferred"] for p in alike] == ["reference"]


def test_sampling_k_answers_is_repeatable_per_seed(tiny_model):
    from tuneforge.inference.generate import Generator

    prompts = [prompt("hello"), prompt("world")]
    with Generator(str(tiny_model), max_batch=8) as generator:
        first = sample(generator, prompts, k=3, temperature=1.0, max_tokens=4, seed=7)
        again = sample(generator, prompts[1:], k=3, temperature=1.0, max_tokens=4, seed=7)
        with pytest.raises(UserError, match="1 to 16"):
            sample(generator, prompts, k=17, temperature=1.0, max_tokens=4)
    assert len(first) == 2 and all(len(answers) == 3 for answers in first)
    assert [a.text for a in again[0]] == [a.text for a in first[1]]  # seed + j, whatever else is in the batch
    assert len({a.text for a in first[0]}) > 1


def test_preference_dataset_round_trip_and_export(db):
    from tuneforge.store import datasets, projects

    rows = [pairs_from_report(report(), "judge")[i] for i in (0, 1)]
    with db.session() as s:
        project = projects.get_or_create(s, "p")
        ds = datasets.create_preference(s, project.id, name="prefs", source={"eval_run": "evalrun_x"},
                                        pairs=[(p.row, {"eval_run": "evalrun_x", **p.lineage}) for p in rows])
        datasets.set_pruning_rules(s, ds, ["Answer briefly."])
        ds_id = ds.id
    with db.session() as s:
        ds = datasets.get(s, ds_id, project.id)
        assert (ds.kind, ds.status, ds.counts) == ("preference", "ready", {"train": 2, "test": 0})
        first = datasets.entries(s, ds_id)[0]
        assert first.messages[-1] == assistant("good") and first.rejected == assistant("bad")
        assert first.lineage["eval_run"] == "evalrun_x" and first.lineage["preferred"] == "answers"
        lines = [json.loads(line) for line in datasets.export_lines(s, ds, "train")]
        as_chat = [json.loads(line) for line in datasets.export_lines(s, ds, chat=True)]
        with pytest.raises(UserError, match="preference pairs"):
            datasets.start_relabel(s, project.id, ds_id, model="gpt-4o")
    assert lines[0] == {"input": {"messages": [{"role": "user", "content": "q0"}]},  # the system prompt pruned
                        "preferred_output": [assistant("good")], "non_preferred_output": [assistant("bad")]}
    assert lines[1]["input"]["tools"] == TOOLS and all(normalized(line) == line for line in lines)
    assert as_chat[0]["messages"][-1] == assistant("good") and "rejected" not in as_chat[0]


def test_a_generating_preference_dataset_is_filled_once_per_position(db):
    from tuneforge.store import datasets, projects

    pair = pairs_from_report(report(), "judge")[0]
    with db.session() as s:
        project = projects.get_or_create(s, "p")
        ds = datasets.start_preference(s, project.id, name="sp", source={"self_play": {}}, params={},
                                       pruning_rules=[], prompts=5)
        ds_id = ds.id
        with pytest.raises(Conflict, match="generating"):
            datasets.export_lines(s, ds)
    for _attempt in range(2):  # a requeued job stores its chunk again: nothing is doubled
        with db.session() as s:
            assert datasets.add_pairs(s, ds_id, [(0, pair.row, {"n": 0}), (3, pair.row, {"n": 3})], sampled=4) == 2
    with db.session() as s:
        datasets.finish_filling(s, ds_id, "ready")
    with db.session() as s:
        ds = datasets.get(s, ds_id, project.id)
        assert ds.status == "ready" and ds.counts == {"prompts": 5, "sampled": 4, "pairs": 2, "train": 2, "test": 0}
        assert [e.position for e in datasets.entries(s, ds_id)] == [0, 3]


def test_self_play_job_resumes_after_its_last_stored_chunk(data_dir, tiny_model, monkeypatch):
    """A job that died in its second chunk is run again: it samples only the prompts not yet done."""
    from tuneforge.evals import pairs
    from tuneforge.jobs import self_play
    from tuneforge.jobs.context import JobContext
    from tuneforge.server.capture_protocol import SelfPlayCreate
    from tuneforge.store import datasets, files, projects
    from tuneforge.store.db import Database
    from tuneforge.store.tables import Job

    monkeypatch.setenv("TUNEFORGE_BASES", f"tiny={tiny_model}")
    monkeypatch.setattr(self_play, "CHUNK", 2)
    db = Database()
    db.migrate()
    content = "".join(json.dumps({"messages": [SYSTEM, {"role": "user", "content": f"say {i}"},
                                               assistant(f"GOOD {i}")]}) + "\n" for i in range(5))
    with db.session() as s:
        project = projects.get_or_create(s, "p")
        f = files.create(s, project_id=project.id, filename="t.jsonl", purpose="fine-tune", content=content.encode())
        job = self_play.KIND.accept(s, project, SelfPlayCreate(model="tiny", training_file=f.id, k=2, max_tokens=3))
        ds_id, job_id = self_play.KIND.spec(job).dataset, job.id
    asked, real = [], pairs.sample

    def dies_in_chunk_two(generator, prompts, **kw):
        asked.append(len(prompts))
        if len(asked) == 2:
            raise RuntimeError("worker died")
        return real(generator, prompts, **kw)

    def run() -> dict:
        with db.session() as s:
            job = s.get(Job, job_id)
            s.expunge(job)
        return self_play.KIND.run(JobContext(job=job, db=db, worker_id="w", lease_s=600))

    monkeypatch.setattr(pairs, "sample", dies_in_chunk_two)
    with pytest.raises(RuntimeError, match="worker died"):
        run()
    with db.session() as s:
        assert datasets.get(s, ds_id, project.id).counts["sampled"] == 2
    asked.clear()
    monkeypatch.setattr(pairs, "sample", lambda *a, **kw: (asked.append(len(a[1])), real(*a, **kw))[1])
    result = run()
    assert asked == [2, 1] and result == {"dataset": ds_id, "prompts": 5, "pairs": 5}
    with db.session() as s:
        assert [e.position for e in datasets.entries(s, ds_id)] == [0, 1, 2, 3, 4]
    db.dispose()
