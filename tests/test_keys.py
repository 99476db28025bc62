"""API keys: revoked keys are refused on the app's routes at once and through the proxy within a second; an
admin key manages every project's keys over the API, a project key may not; the CLI lists and revokes."""

from __future__ import annotations

import os
import time
import warnings

import fake_upstream
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tuneforge.capture.upstreams import Upstream, Upstreams
from tuneforge.errors import Unauthorized
from tuneforge.server.app import create_app
from tuneforge.store import projects
from tuneforge.store.db import Database
from tuneforge.store.tables import ApiKey

USER = [{"role": "user", "content": "Convert: name=Ada; city=London"}]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def app_client(db: Database, upstream: str | None = None) -> TestClient:
    upstreams = Upstreams(default=Upstream(upstream)) if upstream else Upstreams()
    return TestClient(create_app(db, upstreams=upstreams))


def test_a_revoked_key_is_refused_on_routes_at_once_and_by_the_proxy_within_a_second():
    db = Database()
    db.migrate()
    with db.session() as s:
        key, other = projects.create_key(s, project="shop"), projects.create_key(s, project="shop")
    chat = {"model": "gpt-4o", "messages": USER}
    caller = {"X-Upstream-Authorization": "Bearer sk-caller-own-key"}
    with fake_upstream.running(0) as upstream, app_client(db, upstream) as client:
        assert client.get("/v1/logs", headers=bearer(key)).status_code == 200
        proxied = client.post("/v1/chat/completions", json=chat, headers={**bearer(key), **caller})
        assert proxied.status_code == 200, proxied.text  # the proxy now knows (and may cache) this key

        with db.session() as s:
            key_id = s.scalar(select(ApiKey.id).where(ApiKey.prefix == key[:10]))
            projects.revoke_key(s, key_id)
        refused = client.get("/v1/logs", headers=bearer(key))
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "revoked_api_key"
        assert "revoked" in refused.json()["error"]["message"] and key not in refused.text
        assert client.get("/v1/logs", headers=bearer(other)).status_code == 200  # the project's other key works

        time.sleep(1.1)
        proxied = client.post("/v1/chat/completions", json=chat, headers={**bearer(key), **caller})
        assert proxied.status_code == 401, proxied.text
        assert client.post("/v1/chat/completions", json=chat, headers={**bearer(other), **caller}).status_code == 200
    db.dispose()


def test_an_admin_key_manages_keys_over_the_api_and_a_project_key_gets_403(db):
    with db.session() as s:
        admin = projects.create_key(s, project="ops", admin=True)
        tenant = projects.create_key(s, project="shop")
    with app_client(db) as client:
        for method, path in (("GET", "/v1/admin/keys"), ("POST", "/v1/admin/keys"),
                             ("POST", "/v1/admin/keys/key_x/revoke")):
            r = client.request(method, path, headers=bearer(tenant), json={"project": "shop"})
            assert r.status_code == 403 and r.json()["error"]["code"] == "admin_key_required", r.text
            assert "admin key" in r.json()["error"]["message"]
        assert client.get("/v1/admin/keys").status_code == 401

        made = client.post("/v1/admin/keys", headers=bearer(admin), json={"project": "newco"}).json()
        assert made["key"].startswith("tf-") and made["project"] == "newco" and made["revoked_at"] is None
        assert not made["admin"]
        new_key = made.pop("key")
        assert client.get("/v1/logs", headers=bearer(new_key)).status_code == 200

        listed = client.get("/v1/admin/keys", headers=bearer(admin))
        rows = {k["id"]: k for k in listed.json()["data"]}
        assert rows[made["id"]] == made and {k["project"] for k in rows.values()} == {"ops", "shop", "newco"}
        assert {k["project"]: k["admin"] for k in rows.values()} == {"ops": True, "shop": False, "newco": False}
        assert all(key not in listed.text for key in (admin, tenant, new_key))  # never the keys themselves
        assert client.get("/v1/admin/keys", headers=bearer(admin), params={"project": "shop"}).json()["data"][0][
            "prefix"] == tenant[:10]

        revoked = client.post(f"/v1/admin/keys/{made['id']}/revoke", headers=bearer(admin)).json()
        assert revoked["revoked_at"] is not None
        assert client.post(f"/v1/admin/keys/{made['id']}/revoke", headers=bearer(admin)).json() == revoked
        assert client.get("/v1/logs", headers=bearer(new_key)).status_code == 401
        missing = client.post("/v1/admin/keys/key_nope/revoke", headers=bearer(admin))
        assert missing.status_code == 404 and "tuneforge keys list" in missing.json()["error"]["message"]
    with db.session() as s:  # only hashes are stored
        stored = " ".join(" ".join(map(str, (k.id, k.hash, k.prefix))) for k in s.scalars(select(ApiKey)))
    assert all(key not in stored for key in (admin, tenant, new_key))


def tuneforge(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """The `tuneforge` executable's entry point, in this process (a subprocess costs seconds of imports); the
    data dir, umask and warning filters it sets for its process are put back after."""
    from tuneforge import paths
    from tuneforge.cli.app import main

    monkeypatch.setattr("sys.argv", ["tuneforge", *args])
    monkeypatch.setattr(paths, "_chosen", paths._chosen)
    umask = os.umask(0o022)
    try:
        with warnings.catch_warnings(), pytest.raises(SystemExit) as done:
            main()
    finally:
        os.umask(umask)
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


def test_keys_cli_lists_and_revokes(capsys, monkeypatch):
    def ok(*args: str) -> tuple[str, str]:
        code, out, err = tuneforge(capsys, monkeypatch, *args)
        assert code == 0, err
        return out, err

    plain = ok("keys", "create", "--project", "shop")[0].strip()
    admin = ok("keys", "create", "--project", "ops", "--admin")[0].strip()
    listed = ok("keys", "list")[0]
    assert plain not in listed and admin not in listed
    rows = {line.split()[1]: line.split() for line in listed.splitlines() if line.startswith("key_")}
    assert rows["shop"][2] == plain[:10] and rows["ops"][3] == "yes" and rows["shop"][3] != "yes"

    assert rows["shop"][0] in ok("keys", "revoke", rows["shop"][0])[1]
    listed = ok("keys", "list", "--project", "shop")[0]
    row = next(line.split() for line in listed.splitlines() if line.startswith("key_"))
    assert len(row) == 5  # id, project, prefix, the dates created and revoked (times on the next line)
    with Database().session() as s:
        with pytest.raises(Unauthorized, match="revoked"):
            projects.authenticate(s, plain)
        assert projects.authenticate(s, admin).name == "ops"

    for args, message in ((("revoke", "key_nope"), "No API key with id 'key_nope'"),
                          (("list", "--project", "nope"), "No project named 'nope'")):
        code, _, err = tuneforge(capsys, monkeypatch, "keys", *args)
        assert code == 1 and err.strip().count("\n") == 0 and message in err
