"""The console's settings page over plain HTTP (in-process): keys are managed within the signed-in project only,
prices are checked and wrong input is shown next to its field with what was typed, and the upstream view shows
where models go but never a key."""

from __future__ import annotations

import json
import re

import pytest
from console_kit import ORIGIN, console_client
from fastapi.testclient import TestClient

from tuneforge.store import prices, projects
from tuneforge.store.db import Database
from tuneforge.store.tables import ApiKey


def key_ids(db: Database, project: str) -> list[str]:
    with db.session() as s:
        return [row.id for row, _ in projects.list_keys(s, project=project)]


def post(client: TestClient, path: str, **data):
    return client.post(path, data={"csrf_token": client.csrf, **data}, headers=ORIGIN, follow_redirects=False)


def test_a_key_is_shown_once_and_only_this_projects_keys_are_listed_or_revoked(console_store, acme):
    db, keys, _ = console_store
    made = post(acme, "/settings/keys")
    assert made.status_code == 201 and made.headers["cache-control"] == "no-store"
    new_key = re.search(r'id="new-key" type="text" value="([^"]+)"', made.text).group(1)
    with db.session() as s:
        assert projects.authenticate(s, new_key).name == "acme"
    assert new_key not in acme.get("/settings").text  # shown once

    globex_key = key_ids(db, "globex")[0]
    listed = acme.get("/settings").text
    assert globex_key not in listed and keys["globex"][:10] not in listed
    assert acme.get(f"/settings/keys/{globex_key}/revoke").status_code == 404
    refused = post(acme, f"/settings/keys/{globex_key}/revoke")
    assert refused.status_code == 404 and "No API key" in refused.text
    with db.session() as s:
        assert s.get(ApiKey, globex_key).revoked_at is None

    with db.session() as s:
        made_id = projects.key_of(s, new_key).id
    assert "signs you out" not in acme.get(f"/settings/keys/{made_id}/revoke").text
    done = post(acme, f"/settings/keys/{made_id}/revoke")
    assert done.status_code == 303
    assert "revoked: calls with it are refused" in acme.get(done.headers["location"]).text
    with db.session() as s:
        with pytest.raises(Exception, match="revoked"):
            projects.authenticate(s, new_key)


def test_revoking_the_sessions_own_key_signs_it_out(console_store, acme):
    db, _, _ = console_store
    own = key_ids(db, "acme")[0]
    assert "signs you out" in acme.get(f"/settings/keys/{own}/revoke").text
    done = post(acme, f"/settings/keys/{own}/revoke")
    assert done.status_code == 303 and done.headers["location"] == "/signin"
    assert acme.get("/settings", follow_redirects=False).headers["location"].startswith("/signin")


def test_forms_need_the_csrf_token(acme):
    refused = acme.post("/settings/keys", data={}, headers=ORIGIN)
    assert refused.status_code == 403
    assert "security token" in refused.text


@pytest.mark.parametrize(("form", "field", "says"), [
    ({"model": "gpt-4o", "input": "cheap", "output": "1"}, "input", "a number of USD"),
    ({"model": "gpt-4o", "input": "1", "output": "-2"}, "output", "from 0 to"),
    ({"model": "gpt-4o", "input": "1", "output": "1e9"}, "output", "from 0 to"),
    ({"model": "gpt-4o", "input": "nan", "output": "1"}, "input", "from 0 to"),
    ({"model": "  ", "input": "1", "output": "1"}, "model", "name the model"),
])
def test_a_bad_price_is_shown_next_to_its_field_with_what_was_typed(console_store, acme, form, field, says):
    db, _, _ = console_store
    r = post(acme, "/settings/prices", **form)
    assert r.status_code == 422
    error = re.search(rf'<p class="error" id="f-{field}-error" role="alert">([^<]+)</p>', r.text)
    assert error and says in error.group(1)
    for name, value in form.items():
        assert re.search(rf'id="f-{name}" name="{name}" type="text" value="{re.escape(value)}"', r.text), name
    with db.session() as s:
        assert prices.list_(s, _project_id(s, "acme")) == []


def _project_id(s, name: str) -> str:
    return projects.get_or_create(s, name).id


def test_a_price_is_set_listed_and_deleted_for_this_project_only(console_store, acme):
    db, keys, _ = console_store
    r = post(acme, "/settings/prices", model="OpenAI/GPT-4o", input="1.25", output="5")
    assert r.status_code == 303
    page = acme.get(r.headers["location"]).text
    assert "Price for gpt-4o saved" in page and "$1.25" in page and "$5.00" in page
    with db.session() as s:
        assert [(p.model, p.input, p.output) for p in prices.list_(s, _project_id(s, "acme"))] == [("gpt-4o", 1.25, 5)]
        assert prices.list_(s, _project_id(s, "globex")) == []
    with console_client(db, keys["globex"], app=acme.app) as globex:
        assert "$1.25" not in globex.get("/settings").text
        post(globex, "/settings/prices/delete", model="gpt-4o")  # not globex's: nothing to delete
    with db.session() as s:
        assert len(prices.list_(s, _project_id(s, "acme"))) == 1
    assert post(acme, "/settings/prices/delete", model="gpt-4o").status_code == 303
    with db.session() as s:
        assert prices.list_(s, _project_id(s, "acme")) == []


def test_the_upstream_view_shows_routes_but_never_a_secret(console_store, tmp_path, monkeypatch):
    secret, other = "sk-operator-7f3a9c1e5b2d8046", "sk-anthropic-0c4e8a2f6b1d9357"
    config = tmp_path / "upstreams.json"
    config.write_text(json.dumps({"upstreams": [
        {"models": ["claude-*"], "url": "https://user:hunter2@api.example.com/v1/?api-key=qs-secret-123",
         "api_key_env": "TF_TEST_ANTHROPIC_KEY"},
        {"models": ["llama-*"], "url": "https://llama.example.com/v1", "api_key_env": "TF_TEST_UNSET_KEY"},
    ]}))
    monkeypatch.setenv("TUNEFORGE_UPSTREAMS", str(config))
    monkeypatch.setenv("TUNEFORGE_UPSTREAM_URL", "https://api.openai.example/v1")
    monkeypatch.setenv("TUNEFORGE_UPSTREAM_API_KEY", secret)
    monkeypatch.setenv("TF_TEST_ANTHROPIC_KEY", other)
    monkeypatch.delenv("TF_TEST_UNSET_KEY", raising=False)
    db, keys, _ = console_store
    with console_client(db, keys["acme"]) as acme:  # the server reads its upstreams when it starts
        html = acme.get("/settings").text
    for hidden in (secret, other, "hunter2", "qs-secret-123", "TF_TEST_ANTHROPIC_KEY", "TUNEFORGE_UPSTREAM_API_KEY"):
        assert hidden not in html
    upstreams = html[html.index('id="upstreams"'):html.index('id="prices"')]
    assert "https://api.example.com/v1/" in upstreams and "claude-*" in upstreams
    assert "https://api.openai.example/v1" in upstreams and "every other model" in upstreams
    assert upstreams.count(">set<") == 2 and "not set" in upstreams
    assert "cannot be changed from here" in upstreams
