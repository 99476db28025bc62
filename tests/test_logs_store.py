"""Request logs and datasets in the store, on SQLite and Postgres: idempotent ingest, filters, costs,
datasets with dedupe, split, lineage and pruning."""

from __future__ import annotations

import json

import pytest

from tuneforge.errors import UserError
from tuneforge.store import datasets, logs, projects

SYSTEM = "You are ACME's record converter. Reply with one JSON object and nothing else. " * 5


def rec(i: int, *, model="gpt-4o", user=None, answer=None, status=200, tags=None, started=None, usage=True):
    user = user or f"Convert: name=n{i}; city=c{i % 3}"
    answer = answer or json.dumps({"name": f"n{i}", "city": f"c{i % 3}"})
    response = None if status != 200 else {
        "id": f"c{i}", "object": "chat.completion", "model": model + "-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        **({"usage": {"prompt_tokens": 1000, "completion_tokens": 100}} if usage else {}),
    }
    return {"id": f"log-{i}", "source": "sdk", "model": model, "started_at": started or 1_795_000_000 + i,
            "latency_ms": 12.5, "request": {"model": model, "messages": [{"role": "system", "content": SYSTEM},
                                                                        {"role": "user", "content": user}]},
            "response": response, "status": status,
            "error": None if status == 200 else {"message": "rate limited", "code": "rate_limit_exceeded"},
            "tags": tags if tags is not None else {"team": f"t{i % 2}", "feature": "convert"}}


def test_ingest_is_idempotent_and_filters_work(db):
    with db.session() as s:
        pid = projects.get_or_create(s, "p").id
        other = projects.get_or_create(s, "q").id
        batch = [rec(i) for i in range(6)] + [rec(6, status=429), rec(7, model="claude-haiku-4-5", user="weather?",
                                                                    answer="Sunny in Oslo")]
        assert logs.ingest(s, pid, batch) == 8
    with db.session() as s:
        assert logs.ingest(s, pid, batch[:3] + [rec(8), rec(8)]) == 1  # redelivered ids are skipped
        assert logs.ingest(s, other, [rec(0)]) == 1  # ids are per project: another's log-0 is a log of its own

    def ids(**kw) -> list[str]:
        with db.session() as s:
            rows, _ = logs.list_(s, pid, logs.LogFilter(**kw), limit=100)
            return sorted(r.id for r in rows)

    assert len(ids()) == 9
    assert ids(model="claude-haiku-4-5") == ["log-7"]
    assert ids(tags=["team=t1"]) == ["log-1", "log-3", "log-5", "log-7"]
    assert ids(tags=["team=t1", "feature~conv"]) == ["log-1", "log-3", "log-5", "log-7"]
    assert ids(tags=["team~t"]) == ids()
    assert ids(status="error") == ids(status="429") == ["log-6"]
    assert "log-6" not in ids(status="ok")
    assert ids(since=1_795_000_006, until=1_795_000_008) == ["log-6", "log-7"]
    assert ids(search="WEATHER") == ["log-7"]
    assert ids(search="sunny") == ["log-7"]  # in the reply
    assert ids(since="1h") == []  # these logs are from 2026-11-18
    with db.session() as s:
        first, more = logs.list_(s, pid, logs.LogFilter(), limit=4)
        rest, _ = logs.list_(s, pid, logs.LogFilter(), after=first[-1].id, limit=100)
        assert more and [r.id for r in first + rest] == [f"log-{i}" for i in range(8, -1, -1)]  # newest first
        assert logs.get(s, "log-7", pid).cost_usd == pytest.approx((1000 * 1.0 + 100 * 5.0) / 1e6)
    for bad in ({"tags": ["team"]}, {"status": "fine"}, {"since": "yesterday"}):
        with pytest.raises(UserError):
            ids(**bad)


def test_costs_by_model_day_and_tag(db):
    with db.session() as s:
        pid = projects.get_or_create(s, "p").id
        day = 1_795_000_000  # 2026-11-18 UTC
        logs.ingest(s, pid, [rec(0, started=day), rec(1, started=day + 86400), rec(2, started=day + 86400),
                             rec(3, model="mystery-model"), rec(4, usage=False)])
        by_model = {r["key"]: r for r in logs.costs(s, pid, logs.LogFilter(), "model")}
        assert by_model["gpt-4o"]["calls"] == 4 and by_model["gpt-4o"]["unpriced_calls"] == 1  # no usage reported
        assert by_model["gpt-4o"]["cost_usd"] == pytest.approx(3 * (1000 * 2.5 + 100 * 10.0) / 1e6)
        assert by_model["mystery-model"]["unpriced_calls"] == 1 and by_model["mystery-model"]["cost_usd"] == 0
        by_day = {r["key"]: r["calls"] for r in logs.costs(s, pid, logs.LogFilter(model="gpt-4o"), "day")}
        assert by_day == {"2026-11-18": 2, "2026-11-19": 2}
        by_team = {r["key"]: r["calls"] for r in logs.costs(s, pid, logs.LogFilter(), "tag:team")}
        assert by_team == {"t0": 3, "t1": 2}
        with pytest.raises(UserError, match="tag:KEY"):
            logs.costs(s, pid, logs.LogFilter(), "week")
        daily = {(r["day"], r["model"]): (r["calls"], r["errors"]) for r in logs.daily(s, pid, day - 1)}
        assert daily[("2026-11-18", "gpt-4o")] == (2, 0) and daily[("2026-11-18", "mystery-model")] == (1, 0)
        assert daily[("2026-11-19", "gpt-4o")] == (2, 0)
        assert logs.daily(s, pid, day + 86400 * 400) == []


def test_dataset_from_logs_dedupes_splits_prunes_and_keeps_lineage(db):
    with db.session() as s:
        pid = projects.get_or_create(s, "p").id
        batch = [rec(i, tags={"kind": "a" if i % 4 else "b"}) for i in range(40)]
        batch.append(rec(100, user="Convert: name=n1; city=c1", answer=json.dumps({"name": "n1", "city": "c1"})))
        batch.append(rec(101, user="Convert:   name=N1;  city=C1", answer=json.dumps({"name": "n1", "city": "c1"})))
        batch.append(rec(102, status=429))  # errors never become examples
        logs.ingest(s, pid, batch)
    recipe = datasets.Recipe(dedupe="near", test_fraction=0.25, label="tag.kind", seed=3, pruning_rules=[SYSTEM])
    with db.session() as s:
        ds = datasets.create(s, pid, name="convert", recipe=recipe, log_filter=logs.LogFilter(tags=["kind~"]))
        ds_id = ds.id
        assert ds.counts["candidates"] == 40  # rec 100/101 have other tags; 102 failed
    with db.session() as s:
        ds = datasets.create(s, pid, name="all", recipe=recipe, log_filter=logs.LogFilter())
        assert ds.counts["candidates"] == 42 and ds.counts["exact_duplicates"] == 2  # case and spaces ignored
        assert ds.counts["train"] + ds.counts["test"] == 40
    with db.session() as s:
        entries = datasets.entries(s, ds_id)
        assert len(entries) == 40 and {e.lineage["log"] for e in entries} == {f"log-{i}" for i in range(40)}
        test = [e for e in entries if e.split == "test"]
        assert len(test) == 10 and sum(e.label == "b" for e in test) == round(10 * 0.25)  # stratified
        lines = [json.loads(line) for line in datasets.export_lines(s, datasets.get(s, ds_id, pid), "train")]
        assert len(lines) == 30
        assert lines[0]["messages"][0]["role"] == "user"  # the system prompt is pruned away
        assert SYSTEM not in json.dumps(lines)
        assert entries[0].messages[0]["content"] == SYSTEM  # stored as captured; pruned on the way out
    with db.session() as s:  # no pruning rule: the shared system prompt alone must not make calls look alike
        unpruned = datasets.create(s, pid, name="raw", recipe=datasets.Recipe(dedupe="near"),
                                   log_filter=logs.LogFilter(tags=["kind~"]))
        assert unpruned.counts["near_duplicates"] == 0 and unpruned.counts["train"] == 32
    with db.session() as s:
        sampled = datasets.create(s, pid, name="small", recipe=datasets.Recipe(sample=10, seed=1),
                                  log_filter=logs.LogFilter())
        assert sampled.counts["train"] == 8 and sampled.counts["test"] == 2
        with pytest.raises(UserError, match="no usable conversations"):
            datasets.create(s, pid, name="none", recipe=recipe, log_filter=logs.LogFilter(model="nope"))


def test_relabel_target_records_who_answered_and_skips_what_is_done(db):
    with db.session() as s:
        pid = projects.get_or_create(s, "p").id
        logs.ingest(s, pid, [rec(i) for i in range(5)])
        parent = datasets.create(s, pid, name="p", recipe=datasets.Recipe(dedupe="none"), log_filter=logs.LogFilter())
        child = datasets.start_relabel(s, pid, parent.id, model="teacher-1")
        first = datasets.entries(s, parent.id)[0]
        answer = {"role": "assistant", "content": "better"}
        datasets.add_relabeled(s, child.id, first, answer, "teacher-1-2026")
        datasets.add_relabeled(s, child.id, first, answer, "teacher-1-2026")  # a second attempt: no duplicate
        datasets.finish_relabel(s, child.id, "ready")
    with db.session() as s:
        (entry,) = datasets.entries(s, child.id)
        assert entry.answer_model == "teacher-1-2026" and entry.messages[-1] == answer
        assert entry.lineage == {"log": first.lineage["log"], "relabel": {"from": first.id, "model": "teacher-1-2026"}}
        counts = datasets.get(s, child.id, pid).counts
        assert counts["train"] + counts["test"] == 1
