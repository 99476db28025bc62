"""Log ids are unique per project: a tenant cannot pre-claim another tenant's ids (their logs would be dropped
as redeliveries). Ingest stays idempotent within a project; lookups, tags and costs keep to the project; the
migration keeps existing logs and their tags."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tuneforge.capture.upstreams import Upstreams
from tuneforge.errors import NotFound
from tuneforge.server.app import create_app
from tuneforge.store import logs, projects
from tuneforge.store.db import Database


def record(log_id: str, who: str, started: float = 1_795_000_000) -> dict:
    return {"id": log_id, "source": "sdk", "model": "gpt-4o", "started_at": started, "status": 200,
            "request": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"hello from {who}"}]},
            "response": {"id": "c", "object": "chat.completion", "model": "gpt-4o",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": who}}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 1}},
            "tags": {"team": who}}


def test_two_projects_may_use_the_same_log_id(db):
    with db.session() as s:
        a, b = projects.get_or_create(s, "a").id, projects.get_or_create(s, "b").id
        assert logs.ingest(s, b, [record("log-x", "b"), record("log-y", "b", started=1_795_000_001)]) == 2
    with db.session() as s:  # b came first and claimed log-x: a's log-x is still its own, new log
        assert logs.ingest(s, a, [record("log-x", "a")]) == 1
    with db.session() as s:
        assert logs.ingest(s, a, [record("log-x", "a")]) == 0  # redelivery within a project: skipped
        assert logs.ingest(s, b, [record("log-x", "b")]) == 0
    with db.session() as s:
        assert "hello from a" in logs.get(s, "log-x", a).request
        assert "hello from b" in logs.get(s, "log-x", b).request
        with pytest.raises(NotFound):
            logs.get(s, "log-y", a)
        assert [r.id for r in logs.list_(s, a, logs.LogFilter())[0]] == ["log-x"]
        assert [r.id for r in logs.list_(s, a, logs.LogFilter(tags=["team=a"]))[0]] == ["log-x"]
        assert logs.list_(s, a, logs.LogFilter(tags=["team=b"]))[0] == []  # b's tag on the same id is b's
        assert [r.id for r in logs.list_(s, b, logs.LogFilter(), after="log-y")[0]] == ["log-x"]  # b's anchor
        by_team = logs.costs(s, a, logs.LogFilter(), "tag:team")
        assert [(r["key"], r["calls"]) for r in by_team] == [("a", 1)]

    with TestClient(create_app(db, upstreams=Upstreams())) as client:
        with db.session() as s:
            keys = {p: projects.create_key(s, project=p) for p in ("a", "b")}
        for p in ("a", "b"):
            got = client.get("/v1/logs/log-x", headers={"authorization": f"Bearer {keys[p]}"}).json()
            assert got["tags"] == {"team": p} and got["response"]["choices"][0]["message"]["content"] == p
        sent = client.post("/v1/logs", json={"logs": [record("log-z", "b")]},
                           headers={"authorization": f"Bearer {keys['b']}"}).json()
        assert sent["stored"] == 1
        sent = client.post("/v1/logs", json={"logs": [record("log-z", "a"), record("log-z", "a")]},
                           headers={"authorization": f"Bearer {keys['a']}"}).json()
        assert sent["stored"] == 1


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_the_migration_keeps_existing_logs_and_their_tags(store, request):
    from alembic import command
    from alembic.config import Config

    from tuneforge.store.db import MIGRATIONS

    db = Database(request.getfixturevalue("postgres_url") if store == "postgres" else None)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        conn.execute(text("INSERT INTO projects VALUES ('p1', 'a', 1), ('p2', 'b', 1)"))
        conn.execute(text("INSERT INTO request_logs VALUES ('old-1', 'p1', 'sdk', 'm', 200, true, NULL, '{}', NULL, "
                          "1.0, 1.0, NULL, false, 1, 1, NULL, '{\"team\": \"x\"}', 1)"))
        conn.execute(text("INSERT INTO log_tags VALUES ('old-1', 'team', 'x')"))
    db.migrate()
    with db.session() as s:
        assert logs.get(s, "old-1", "p1").tags == {"team": "x"}
        assert [r.id for r in logs.list_(s, "p1", logs.LogFilter(tags=["team=x"]))[0]] == ["old-1"]
        assert logs.ingest(s, "p2", [record("old-1", "b")]) == 1  # the id was p1's alone
        assert logs.ingest(s, "p1", [record("old-1", "a")]) == 0
    db.dispose()
