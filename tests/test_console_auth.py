"""The web console over HTTP (FastAPI's TestClient on the real app and store): signing in and out, the session
cookie's flags, CSRF and origin checks, two projects that never see each other's data, and the request-log page
(keyset pages both ways, bad filters shown by their field, a dataset from picked rows)."""

from __future__ import annotations

import re
import time

import pytest
from console_kit import csrf_of, post_signin
from fastapi.testclient import TestClient
from sqlalchemy import select

from tuneforge.server.app import create_app
from tuneforge.store import datasets, logs, projects
from tuneforge.store.tables import ConsoleSession

BASE = "http://127.0.0.1:8000"
T0 = time.time() - 4 * 3600  # the logs are from the last few hours (the overview shows 30 days)


def _log(i: int, model: str = "gpt-4o", team: str = "search", at: float | None = None) -> dict:
    return {"id": f"log-{i:04d}", "model": model, "status": 200, "started_at": at or T0 + i,
            "latency_ms": 120, "tags": {"team": team},
            "request": {"model": model, "messages": [{"role": "user", "content": f"question {i}"}]},
            "response": {"model": model, "choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 2}}}


@pytest.fixture
def app_db(console_store):
    db, keys, ids = console_store
    with db.session() as s:
        logs.ingest(s, ids["acme"], [_log(i) for i in range(120)])
        logs.ingest(s, ids["globex"], [_log(1000 + i, model="claude-sonnet-4-5", team="secret-team")
                                       for i in range(5)])
    return create_app(db), db, keys


def signed_in(app, key: str) -> TestClient:
    client = TestClient(app, base_url=BASE)
    assert post_signin(client, key, next_page="/logs").headers["location"] == "/logs"
    return client


def test_the_session_cookie_is_httponly_samesite_and_holds_neither_the_key_nor_a_stored_secret(app_db):
    app, db, keys = app_db
    client = TestClient(app, base_url=BASE)
    r = client.post("/signin", data={"key": keys["acme"]}, follow_redirects=False)
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie and "Secure" not in cookie
    token = client.cookies["tf_session"]
    assert keys["acme"] not in cookie and token != keys["acme"]
    with db.session() as s:
        stored = s.scalars(select(ConsoleSession)).all()
        assert len(stored) == 1 and token not in (stored[0].id, stored[0].csrf)
    https = TestClient(app, base_url="https://console.example")
    assert "Secure" in https.post("/signin", data={"key": keys["acme"]}, follow_redirects=False).headers["set-cookie"]


def test_a_wrong_key_is_shown_by_the_field_and_pages_need_a_session(app_db):
    app, _, keys = app_db
    client = TestClient(app, base_url=BASE)
    r = client.post("/signin", data={"key": "tf-wrong-key-123456"}, follow_redirects=False)
    assert r.status_code == 401 and 'id="key-error"' in r.text and "Incorrect API key" in r.text
    assert "tf_session" not in client.cookies
    r = client.get("/logs?model=x", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin?next=%2Flogs%3Fmodel%3Dx"
    r = client.get("/logs", headers={"HX-Request": "true"}, follow_redirects=False)
    assert r.headers["HX-Redirect"].startswith("/signin")
    r = client.post("/signin", data={"key": keys["acme"], "next": "//evil.example/x"}, follow_redirects=False)
    assert r.headers["location"] == "/"  # never off-site


def test_each_project_sees_only_its_own_logs(app_db):
    app, _, keys = app_db
    acme, globex = signed_in(app, keys["acme"]), signed_in(app, keys["globex"])
    page = acme.get("/logs?limit=100").text
    assert page.count('name="log_id"') == 100 and "secret-team" not in page and "claude" not in page
    assert "secret-team" in globex.get("/logs").text
    r = acme.get("/logs/log-1000")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"] and "answer 1000" not in r.text
    assert "claude" not in acme.get("/").text
    assert acme.get("/logs/log-0001").status_code == 200


def test_state_changing_requests_need_the_sessions_csrf_token_and_this_origin(app_db):
    app, db, keys = app_db
    acme, globex = signed_in(app, keys["acme"]), signed_in(app, keys["globex"])
    token = csrf_of(acme)
    form = {"name": "picked", "scope": "selected", "log_id": ["log-0001", "log-0002"], "test_fraction": "0"}
    assert acme.post("/logs/dataset", data=form).status_code == 403
    assert acme.post("/logs/dataset", data={**form, "csrf_token": csrf_of(globex)}).status_code == 403
    r = acme.post("/logs/dataset", data={**form, "csrf_token": token}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    with db.session() as s:
        assert datasets.list_(s, projects.authenticate(s, keys["acme"]).id) == []
    r = acme.post("/logs/dataset", data={**form, "csrf_token": token}, headers={"Origin": BASE},
                  follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/datasets/")


def test_the_api_accepts_a_console_session_only_with_its_csrf_header(app_db):
    app, _, keys = app_db
    acme = signed_in(app, keys["acme"])
    assert acme.get("/v1/logs").status_code == 401  # the cookie alone is not enough (no cross-site use)
    r = acme.get("/v1/logs?limit=5", headers={"X-CSRF-Token": csrf_of(acme)})
    assert r.status_code == 200 and {d["model"] for d in r.json()["data"]} == {"gpt-4o"}
    assert acme.get("/v1/logs", headers={"X-CSRF-Token": "forged"}).status_code == 401


def test_signing_out_or_revoking_the_key_ends_the_session(app_db):
    app, db, keys = app_db
    client = signed_in(app, keys["acme"])
    cookie = client.cookies["tf_session"]
    r = client.post("/signout", data={"csrf_token": csrf_of(client)}, headers={"Origin": BASE},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin"
    stale = TestClient(app, base_url=BASE, cookies={"tf_session": cookie})
    assert stale.get("/logs", follow_redirects=False).status_code == 303
    client = signed_in(app, keys["acme"])
    with db.session() as s:
        key_id = projects.key_of(s, keys["acme"]).id
        projects.revoke_key(s, key_id)
    assert client.get("/logs", follow_redirects=False).status_code == 303


def test_log_pages_walk_every_log_once_both_ways_by_keyset(app_db):
    app, _, keys = app_db
    client = signed_in(app, keys["acme"])
    seen, url, pages = [], "/logs?limit=25", []
    while url:
        html = client.get(url).text
        ids = re.findall(r'name="log_id" value="([^"]+)"', html)
        seen += ids
        pages.append(ids)
        m = re.search(r'href="/logs\?([^"]+)" rel="next"', html)
        url = "/logs?" + m.group(1).replace("&amp;", "&") if m else None
    assert seen == [f"log-{i:04d}" for i in range(119, -1, -1)] and len(pages) == 5
    m = re.search(r'href="/logs\?([^"]+)" rel="prev"', html)
    back = client.get("/logs?" + m.group(1).replace("&amp;", "&")).text
    assert re.findall(r'name="log_id" value="([^"]+)"', back) == pages[3]


def test_a_bad_filter_is_shown_by_its_field_and_filters_combine(app_db):
    app, _, keys = app_db
    client = signed_in(app, keys["acme"])
    r = client.get("/logs?since=yesterday-ish")
    assert r.status_code == 400 and 'id="f-since-error"' in r.text and "is not a time" in r.text
    assert 'value="yesterday-ish"' in r.text  # what was typed is kept
    r = client.get("/logs?tag=team&q=question")
    assert r.status_code == 400 and 'id="f-tag-error"' in r.text
    r = client.get("/logs?tag=team%3Dsearch&q=question+7&status=ok&model=gpt-4o&limit=100")
    ids = re.findall(r'name="log_id" value="([^"]+)"', r.text)
    assert sorted(ids) == sorted(["log-0007"] + [f"log-{i:04d}" for i in range(70, 80)])


def test_a_dataset_from_picked_rows_holds_exactly_them_and_a_bad_form_keeps_the_picks(app_db):
    app, db, keys = app_db
    client = signed_in(app, keys["acme"])
    token = csrf_of(client)
    r = client.post("/logs/dataset", data={"csrf_token": token, "name": " ", "log_id": ["log-0003", "log-0009"],
                                           "test_fraction": "half"}, headers={"Origin": BASE})
    assert r.status_code == 400
    assert 'id="f-name-error"' in r.text and 'id="f-test_fraction-error"' in r.text and 'value="half"' in r.text
    assert re.findall(r'value="(log-\d+)"[^>]*checked', r.text) == ["log-0009", "log-0003"]
    r = client.post("/logs/dataset", data={"csrf_token": token, "name": "two", "log_id": ["log-0003", "log-0009"],
                                           "test_fraction": "0", "dedupe": "none"}, headers={"Origin": BASE},
                    follow_redirects=False)
    assert r.status_code == 303
    with db.session() as s:
        ds = datasets.get(s, r.headers["location"].rsplit("/", 1)[1], projects.authenticate(s, keys["acme"]).id)
        assert sorted(e.lineage["log"] for e in datasets.entries(s, ds.id)) == ["log-0003", "log-0009"]
    r = client.post("/logs/dataset", data={"csrf_token": token, "name": "none picked"}, headers={"Origin": BASE})
    assert r.status_code == 400 and 'id="pick-error"' in r.text


def test_the_overview_totals_this_projects_spend_and_prices_the_student(app_db):
    app, _, keys = app_db
    client = signed_in(app, keys["acme"])
    html = client.get("/").text
    assert re.search(r'class="stat">120<', html) and "<rect" in html and "gpt-4o" in html
    r = client.get("/?teacher=gpt-4o&student=ft:tiny:acme:x&usd_per_hour=0&tokens_per_second=100")
    assert r.status_code == 200 and 'id="savings-headline"' in r.text and "100% less" in r.text
    r = client.get("/?teacher=gpt-4o&student=s&usd_per_hour=1&tokens_per_second=-3")
    assert r.status_code == 200 and 'id="f-tokens_per_second-error"' in r.text


def test_a_key_keeps_at_most_its_newest_sessions(app_db, monkeypatch):
    from tuneforge.store import console_sessions

    app, db, keys = app_db
    monkeypatch.setattr(console_sessions, "MAX_PER_KEY", 3)
    tokens = []
    with db.session() as s:
        for _ in range(5):
            tokens.append(console_sessions.sign_in(s, keys["acme"])[0])
        assert len(s.scalars(select(ConsoleSession)).all()) == 3
        assert [console_sessions.resolve(s, t) is not None for t in tokens] == [False, False, True, True, True]
