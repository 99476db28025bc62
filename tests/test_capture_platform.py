"""Capture against real processes: `tuneforge serve` as the proxy and log store, a fake provider upstream,
the official `openai` SDK and `tuneforge.OpenAI` as the apps."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import fake_upstream
import httpx
import openai
import pytest
from helpers import cli
from live_server import Server, start_worker
from pydantic import BaseModel
from sqlalchemy import MetaData, create_engine, select

import tuneforge

SERVER_KEY = "sk-server-config-7f3a9c1e5b2d"  # the provider key in the server's upstream config
CALLER_KEY = "sk-caller-header-4e8b2a6d0c1f"  # a provider key a caller sends in X-Upstream-Authorization
APP_KEY = "sk-app-direct-9d1c3e7a5f2b"  # the key an app using the SDK wrapper calls its provider with
USER = [{"role": "user", "content": "Convert: name=Ada; city=London"}]


@pytest.fixture(scope="module")
def upstream():
    with fake_upstream.running(0) as url:
        yield url


def proxy_server(tmp_path, upstream: str, **kw) -> Server:
    env = {"TUNEFORGE_UPSTREAM_URL": upstream, "TUNEFORGE_UPSTREAM_API_KEY": SERVER_KEY,
           "TUNEFORGE_UPSTREAM_TIMEOUT": "2"}
    return Server(tmp_path / "platform", env=env, **kw)


def logs(server: Server, key: str, **params) -> list[dict]:
    r = httpx.get(server.url + "/v1/logs", params={"limit": 1000, **params},
                  headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def full_log(server: Server, key: str, log_id: str) -> dict:
    return httpx.get(f"{server.url}/v1/logs/{log_id}", headers={"authorization": f"Bearer {key}"}).json()


def wait_logged(server: Server, key: str, n: int) -> list[dict]:
    """The proxy writes logs in the background (within ~50 ms); poll briefly."""
    import time

    for _ in range(100):
        rows = logs(server, key)
        if len(rows) >= n:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"{len(rows)} logs, expected {n}")


def assert_keys_never_written(keys: list[str], folders: list, database_url: str | None = None) -> None:
    """No byte of any file under the folders (SQLite's database and WAL included), nor any value in any table
    of the database, contains one of the keys."""
    checked = 0
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                checked += 1
                for key in keys:
                    assert key.encode() not in data, f"{key} found in {path}"
    assert checked > 0
    if database_url:
        engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            dump = "".join(str(row) for table in meta.sorted_tables for row in conn.execute(select(table)))
        engine.dispose()
        assert "Convert: name=Ada" in dump  # the logs are there...
        for key in keys:
            assert key not in dump  # ...and the keys are not


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_proxy_relays_replies_and_upstream_errors_unchanged_and_logs_them(tmp_path, upstream, store, request):
    database_url = request.getfixturevalue("postgres_url") if store == "postgres" else None
    with proxy_server(tmp_path, upstream, workers=0, database_url=database_url) as server:
        key = server.key("shop")
        proxy = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        direct = openai.OpenAI(base_url=upstream, api_key="sk-direct", max_retries=0)
        tags = {"X-Tuneforge-Tags": json.dumps({"feature": "convert", "user": 7})}

        via = proxy.chat.completions.create(model="gpt-4o", messages=USER, extra_headers=tags)
        same = direct.chat.completions.create(model="gpt-4o", messages=USER)
        assert via.model_dump(exclude={"created"}) == same.model_dump(exclude={"created"})
        streamed = [c.model_dump(exclude={"created"}) for c in proxy.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True},
            extra_headers={"X-Upstream-Authorization": f"Bearer {CALLER_KEY}"})]
        assert streamed == [c.model_dump(exclude={"created"}) for c in direct.chat.completions.create(
            model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True})]

        body = {"model": "", "messages": USER}
        for model, error in (("fail-401", openai.AuthenticationError), ("fail-429", openai.RateLimitError),
                             ("fail-500", openai.InternalServerError)):
            mine = httpx.post(server.url + "/v1/chat/completions", json={**body, "model": model},
                              headers={"authorization": f"Bearer {key}"})
            theirs = httpx.post(upstream + "/chat/completions", json={**body, "model": model})
            assert (mine.status_code, mine.content) == (theirs.status_code, theirs.content)
            assert mine.headers.get("retry-after") == theirs.headers.get("retry-after")
            with pytest.raises(error):
                proxy.chat.completions.create(model=model, messages=USER)
        assert mine.status_code == 500 and httpx.post(
            server.url + "/v1/chat/completions", json={**body, "model": "fail-429"},
            headers={"authorization": f"Bearer {key}"}).headers["retry-after"] == "0"

        with pytest.raises(openai.APIStatusError) as timeout:
            proxy.chat.completions.create(model="slow", messages=USER)
        assert timeout.value.status_code == 504 and timeout.value.code == "upstream_timeout"
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            for _ in proxy.chat.completions.create(model="broken-stream", messages=USER, stream=True):
                pass
        with pytest.raises(openai.AuthenticationError):  # no tuneforge key, no proxying
            openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0).chat.completions.create(
                model="gpt-4o", messages=USER)

        all_rows = wait_logged(server, key, 11)
        rows = {(r["model"], r["stream"]): r for r in all_rows}
        ok = rows[("gpt-4o", False)]
        assert ok["ok"] and ok["source"] == "proxy" and ok["tags"] == {"feature": "convert", "user": "7"}
        assert ok["prompt_tokens"] > 0 and ok["cost_usd"] > 0
        full = full_log(server, key, ok["id"])
        assert full["request"] == {"model": "gpt-4o", "messages": USER} and full["response"]["id"] == via.id
        stream_log = full_log(server, key, rows[("gpt-4o", True)]["id"])
        assert stream_log["response"]["choices"][0]["message"]["content"] == via.choices[0].message.content
        assert stream_log["ttft_ms"] is not None and stream_log["completion_tokens"] > 0
        for model, status in (("fail-401", 401), ("fail-429", 429), ("fail-500", 500)):
            assert rows[(model, False)]["status"] == status and not rows[(model, False)]["ok"]
        assert rows[("fail-429", False)]["error"]["code"] == "rate_limit_exceeded"
        assert rows[("slow", False)]["status"] is None and rows[("slow", False)]["error"]["type"] == "upstream_timeout"
        broken = full_log(server, key, rows[("broken-stream", True)]["id"])
        assert broken["error"]["type"] == "upstream_broken" and broken["response"]["choices"][0]["message"]["content"]
        assert len(all_rows) == 11 and {r["id"] for r in logs(server, key, status="error")} == {
            r["id"] for r in all_rows if r["model"] != "gpt-4o"}

        seen = httpx.get(upstream.removesuffix("/v1") + "/seen").json()["seen"]
        assert f"Bearer {CALLER_KEY}" in seen and f"Bearer {SERVER_KEY}" in seen
    assert_keys_never_written([SERVER_KEY, CALLER_KEY], [server.data_dir], database_url)


def test_sdk_wrapper_reports_calls_streams_and_errors_without_touching_them(tmp_path, upstream):
    with proxy_server(tmp_path, upstream, workers=0) as server:
        key = server.key("app")
        opts = {"base_url": server.url, "api_key": key, "tags": {"app": "checkout"}, "spool_dir": tmp_path / "spool"}
        client = tuneforge.OpenAI(base_url=upstream, api_key=APP_KEY, max_retries=0, tuneforge=opts)
        plain = openai.OpenAI(base_url=upstream, api_key=APP_KEY, max_retries=0)

        conversation = list(USER)
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=conversation,
                                               tuneforge={"tags": {"step": 1}})
        conversation.append(reply.choices[0].message.model_dump())  # what chat apps do next: not in the log
        assert reply.model_dump(exclude={"created"}) == plain.chat.completions.create(
            model="gpt-4o-mini", messages=USER).model_dump(exclude={"created"})
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, stream=True) if c.choices)
        assert text == reply.choices[0].message.content
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="fail-429", messages=USER)
        early = client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
        next(iter(early))
        early.close()  # the app stops reading after the first chunk
        client.chat.completions.create(model="m" * 400, messages=USER)  # a record the platform refuses (422)
        assert isinstance(client.with_options(timeout=30), tuneforge.OpenAI)

        class Record(BaseModel):
            name: str
            city: str

        parsed = client.chat.completions.parse(model="gpt-4o-mini", messages=USER, response_format=Record)
        assert parsed.choices[0].message.parsed == Record(name="Ada", city="London")

        async def app() -> str:
            aclient = tuneforge.AsyncOpenAI(base_url=upstream, api_key=APP_KEY, max_retries=0, tuneforge=opts)
            await aclient.chat.completions.create(model="gpt-4o-mini", messages=USER, tuneforge={"tags": {"step": 2}})
            stream = await aclient.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True,
                                                           stream_options={"include_usage": True})
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        assert asyncio.run(app()) == text
        assert client.flush(timeout=30) is True
        rows = logs(server, key)
        assert len(rows) == 7 and all(r["source"] == "sdk" and r["tags"]["app"] == "checkout" for r in rows)
        assert sorted(r["tags"].get("step", "-") for r in rows) == ["-", "-", "-", "-", "-", "1", "2"]
        rejected = list((tmp_path / "spool" / "rejected").glob("*.jsonl"))  # alone: the rest of its batch got in
        assert len(rejected) == 1 and len(rejected[0].read_text().splitlines()) == 1
        assert json.loads(rejected[0].read_text())["model"] == "m" * 400
        stopped = next(full_log(server, key, r["id"]) for r in rows if r["error"] and r["ok"] is False
                       and r["status"] == 200)
        assert stopped["error"]["type"] == "incomplete" and stopped["response"]["choices"][0]["message"]["role"]
        first = next(full_log(server, key, r["id"]) for r in rows if r["tags"].get("step") == "1")
        assert first["request"]["messages"] == USER
        parse_log = next(full_log(server, key, r["id"]) for r in rows
                         if "response_format" in full_log(server, key, r["id"])["request"])
        assert parse_log["request"]["response_format"]["json_schema"]["schema"]["required"] == ["name", "city"]
        error = next(r for r in rows if r["status"] == 429)
        assert error["status"] == 429 and error["error"]["code"] == "rate_limit_exceeded"
        streams = [full_log(server, key, r["id"]) for r in rows if r["stream"] and r["ok"]]
        assert [s["response"]["choices"][0]["message"]["content"] for s in streams] == [text, text]
        assert sorted(s["completion_tokens"] > 0 for s in streams) == [False, True]  # usage only when asked
        assert len(logs(server, key, tag="step=2")) == 1
    assert_keys_never_written([APP_KEY], [server.data_dir, tmp_path / "spool"])


APP_SCRIPT = """
import sys, tuneforge
client = tuneforge.OpenAI(base_url=sys.argv[1], api_key="sk-app", max_retries=0,
                          tuneforge={"base_url": sys.argv[2], "api_key": sys.argv[3], "spool_dir": sys.argv[4],
                                     "tags": {"process": "short-lived"}})
for i in range(5):
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"exit run {i}"}])
print(client.flush(timeout=0.5))
"""


def test_fail_open_while_the_platform_is_down_then_every_call_arrives_once(tmp_path, upstream):
    server = proxy_server(tmp_path, upstream, workers=0)
    spool = tmp_path / "app-spool"
    with server:
        key = server.key("app")
        client = tuneforge.OpenAI(base_url=upstream, api_key="sk-app", max_retries=0,
                                  tuneforge={"base_url": server.url + "/v1", "api_key": key, "spool_dir": spool})
        for i in range(3):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"up {i}"}])
        assert client.flush(timeout=30)
    # the platform is down: the app's calls still work, and their reports wait on disk
    for i in range(20):
        reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"down {i}"}])
        assert reply.choices[0].message.content == f"echo: down {i}"
    assert client.flush(timeout=1) is False
    # a short-lived process makes calls and exits while the platform is down: its reports stay spooled
    done = subprocess.run([sys.executable, "-c", APP_SCRIPT, upstream, server.url, key, str(spool)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
    assert list(spool.glob("*.jsonl"))
    with server:  # back, on the same address and store
        assert client.flush(timeout=60) is True
        rows = logs(server, key)
        contents = sorted(full_log(server, key, r["id"])["request"]["messages"][0]["content"] for r in rows)
        assert contents == sorted([f"up {i}" for i in range(3)] + [f"down {i}" for i in range(20)]
                                  + [f"exit run {i}" for i in range(5)])
        assert len({r["id"] for r in rows}) == 28 and not list(spool.glob("*.jsonl*"))
        # a redelivered batch changes nothing
        again = httpx.post(server.url + "/v1/logs", headers={"authorization": f"Bearer {key}"},
                           json={"logs": [full_log(server, key, rows[0]["id"]) | {"id": rows[0]["id"]}]})
        assert again.json() == {"object": "log.report", "received": 1, "stored": 0}
        assert len(logs(server, key)) == 28


def test_cli_and_relabel_job_with_retries_and_resume(tmp_path, upstream):
    from tuneforge.store import datasets as store_datasets
    from tuneforge.store.db import Database

    with proxy_server(tmp_path, upstream, workers=0) as server:
        key = server.key("cli")
        proxy = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        for i in range(10):
            proxy.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"Convert: n={i}"}],
                                          extra_headers={"X-Tuneforge-Tags": json.dumps({"batch": i % 2})})
        proxy.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Convert: n=0"}])
        wait_logged(server, key, 11)
        env = {"TUNEFORGE_BASE_URL": server.url, "TUNEFORGE_API_KEY": key}
        listed = cli("logs", "list", "--tag", "batch=1", env=env).stdout
        assert "5 of 5 matching calls" in listed and "gpt-4o" in listed
        out_file = tmp_path / "export.jsonl"
        cli("logs", "export", "--out", str(out_file), "--tag", "batch~0", env=env)
        assert len(out_file.read_text().splitlines()) == 5
        assert '"request"' in cli("logs", "show", logs(server, key)[0]["id"], env=env).stdout
        assert "gpt-4o" in cli("logs", "costs", "--by", "model", env=env).stdout
        bad = cli("logs", "list", "--status", "great", env=env, check=False)
        assert bad.returncode == 1 and "status filter 'great'" in bad.stderr and "Traceback" not in bad.stderr
        bad = cli("logs", "export", "--out", str(out_file), "--since", "yesterday", env=env, check=False)
        assert bad.returncode == 1 and "since: 'yesterday' is not a time" in bad.stderr

        missing = cli("datasets", "create", "x", "--file", str(tmp_path / "nope.jsonl"), env=env, check=False)
        assert missing.returncode == 1 and "no such file; give a local JSONL file" in missing.stderr
        made = cli("datasets", "create", "convert", "--dedupe", "exact", "--test-fraction", "0.2", env=env)
        ds_id = made.stdout.strip().splitlines()[-1]
        assert "8 train / 2 test" in made.stderr and "1 exact" in made.stderr
        assert ds_id in cli("datasets", "list", env=env).stdout
        assert '"log": "log-' in cli("datasets", "show", ds_id, env=env).stdout
        cli("datasets", "export", ds_id, "--split", "test", "--out", str(out_file), env=env)
        assert len(out_file.read_text().splitlines()) == 2

        # relabel with a teacher that fails every first attempt; an earlier attempt already answered 4
        started = httpx.post(f"{server.url}/v1/datasets/{ds_id}/relabel", headers={"authorization": f"Bearer {key}"},
                             json={"model": "flaky", "concurrency": 3, "max_attempts": 3}).json()
        assert started["status"] == "relabeling" and started["job"]["status"] == "queued"
        db = Database(f"sqlite:///{server.data_dir / 'tuneforge.db'}")
        with db.session() as s:
            for e in store_datasets.entries(s, ds_id)[:4]:
                store_datasets.add_relabeled(s, started["id"], e, {"role": "assistant", "content": "earlier"}, "flaky")
        seen_before = len(httpx.get(upstream.removesuffix("/v1") + "/seen").json()["seen"])
        worker = start_worker(server)
        try:
            import time

            deadline = time.time() + 120
            while (ds := httpx.get(f"{server.url}/v1/datasets/{started['id']}",
                                   headers={"authorization": f"Bearer {key}"}).json())["status"] == "relabeling":
                assert time.time() < deadline
                time.sleep(0.5)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        assert ds["status"] == "ready" and ds["counts"]["train"] + ds["counts"]["test"] == 10, ds
        asked = len(httpx.get(upstream.removesuffix("/v1") + "/seen").json()["seen"]) - seen_before
        assert asked == 2 * 6  # only the 6 missing entries, each failing once, then answered
        entries = httpx.get(f"{server.url}/v1/datasets/{started['id']}/entries",
                            headers={"authorization": f"Bearer {key}"}).json()["data"]
        assert all(e["answer_model"] == "flaky" and e["lineage"]["relabel"]["model"] == "flaky" for e in entries)
        assert sum(e["messages"][-1]["content"] == "earlier" for e in entries) == 4
        assert {e["lineage"]["log"] for e in entries} <= {r["id"] for r in logs(server, key)}
        db.dispose()

        # a relabel nobody has picked up yet is cancelled; cancelling twice is a conflict
        pending = httpx.post(f"{server.url}/v1/datasets/{ds_id}/relabel", headers={"authorization": f"Bearer {key}"},
                             json={"model": "gpt-4o"}).json()
        assert "cancelled" in cli("datasets", "cancel", pending["id"], env=env).stderr
        shown = httpx.get(f"{server.url}/v1/datasets/{pending['id']}", headers={"authorization": f"Bearer {key}"})
        assert shown.json()["status"] == "cancelled" and shown.json()["job"]["status"] == "cancelled"
        again = cli("datasets", "cancel", pending["id"], env=env, check=False)
        assert again.returncode == 1 and "only a dataset being relabeled" in again.stderr
