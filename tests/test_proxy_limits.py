"""The logging proxy lends the operator's provider key only within limits, and relays nothing it should not:
model allowlists, "callers bring their own key", per-project rate and spend limits, billing and account
headers, hop-by-hop and cookie headers, key fragments in error bodies and logs, and body limits however the
body is sent. (A revoked key stops working through the proxy within a second: tests/test_keys.py.)

The platform runs in-process (starlette's TestClient); the provider is a small ASGI app on a uvicorn thread
that records what it received and can echo the key it was sent.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from types import SimpleNamespace

import anyio
import openai
import pytest
import uvicorn
from live_server import free_port
from sqlalchemy import select
from starlette.testclient import TestClient

from tuneforge import limits as limits_
from tuneforge.capture import upstreams as upstreams_
from tuneforge.capture.upstreams import Upstream, Upstreams
from tuneforge.server import proxy
from tuneforge.server.app import create_app
from tuneforge.server.deps import Settings
from tuneforge.store import projects
from tuneforge.store.db import Database
from tuneforge.store.tables import RequestLog

OPERATOR_ENV = "TF_TEST_OPERATOR_KEY"
OPERATOR = "sk-operator-5b1e9d0c7a3f2e8d"  # the server's provider key
CALLER = "sk-caller-9a4c2e7b1d6f3a0c"  # a caller's own, sent in X-Upstream-Authorization
USER = [{"role": "user", "content": "Convert: name=Ada"}]
UPSTREAM_HEADERS = [  # what the provider answers with, besides content-type
    ("set-cookie", "session=abc; Path=/"), ("set-cookie2", "old=1"), ("keep-alive", "timeout=5"),
    ("proxy-authenticate", "Basic"), ("connection", "x-hop"), ("x-hop", "1"), ("trailer", "x-checksum"),
    ("openai-organization", "org-operator"), ("openai-project", "proj_operator"),
    ("anthropic-organization-id", "org-anthropic"), ("openai-processing-ms", "12"), ("x-upstream-custom", "kept"),
    ("x-request-id", "req_upstream_1"),
]


class Provider:
    """A provider stand-in: answers `model` with a completion using `tokens` prompt tokens (from the request
    body), except `echo-key`, a 401 quoting the key it was sent whole and as OpenAI masks it."""

    def __init__(self):
        self.seen: list[dict[str, str]] = []  # each request's headers

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            return await send({"type": "lifespan.shutdown.complete"})
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        req = json.loads(body)
        self.seen.append({**headers, "model": req["model"]})
        if req["model"] == "echo-key":
            key = headers.get("authorization", "")[7:]
            answer = {"error": {"message": f"Incorrect API key provided: {key[:6]}***{key[-4:]}. You sent {key}, "
                                           f"ending {key[-9:]}.", "type": "invalid_request_error",
                                "param": None, "code": "invalid_api_key"}}
            return await self._send(send, 401, answer, [])
        tokens = int(req.get("tokens", 10))
        if req.get("stream"):
            return await self._stream(send, req, tokens)
        answer = {"id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": req["model"],
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": tokens, "completion_tokens": 1, "total_tokens": tokens + 1}}
        await self._send(send, 200, answer, UPSTREAM_HEADERS)

    @staticmethod
    async def _stream(send, req: dict, tokens: int) -> None:
        """Two content chunks, then a usage-only chunk when `stream_options.include_usage` asks for it."""
        chunk = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0, "model": req["model"]}
        events = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "o"}}]},
                  {**chunk, "choices": [{"index": 0, "delta": {"content": "k"}, "finish_reason": "stop"}]}]
        if (req.get("stream_options") or {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": {"prompt_tokens": tokens, "completion_tokens": 1,
                                                             "total_tokens": tokens + 1}})
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for part in (body[:50], body[50:130], body[130:]):  # events split across reads, as a network does
            await send({"type": "http.response.body", "body": part.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _send(send, status: int, body: dict, headers: list[tuple[str, str]]) -> None:
        raw = [(b"content-type", b"application/json")] + [(k.encode(), v.encode()) for k, v in headers]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


@pytest.fixture(scope="module")
def provider():
    """(the Provider, its /v1 URL), on a uvicorn thread for the module."""
    app, port = Provider(), free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.01)
    yield app, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def operator_key(monkeypatch):
    monkeypatch.setenv(OPERATOR_ENV, OPERATOR)


@contextlib.contextmanager
def platform(upstreams: Upstreams, **limits):
    """(TestClient, the key of project "shop", the key of project "other", the database)."""
    db = Database()
    db.migrate()
    with db.session() as s:
        shop, other = projects.create_key(s, project="shop"), projects.create_key(s, project="other")
    app = create_app(db, settings=Settings(limits=limits_.Limits(**limits)), upstreams=upstreams)
    try:
        with TestClient(app) as client:
            yield client, shop, other, db
    finally:
        db.dispose()


def one_upstream(url: str) -> Upstreams:
    return Upstreams(default=Upstream(url, OPERATOR_ENV))


def call(client: TestClient, key: str, model: str = "gpt-4o", caller_key: str | None = None, headers=None, **body):
    extra = {"X-Upstream-Authorization": f"Bearer {caller_key}"} if caller_key else {}
    return client.post("/v1/chat/completions", json={"model": model, "messages": USER, **body},
                       headers={"authorization": f"Bearer {key}", **extra, **(headers or {})})


def logged(db: Database, n: int) -> list[RequestLog]:
    """The proxy's records once `n` are written (its log writer runs in the background), oldest first."""
    for _ in range(200):
        with db.session() as s:
            rows = list(s.scalars(select(RequestLog).order_by(RequestLog.started_at)))
        if len(rows) >= n:
            return rows
        time.sleep(0.02)
    raise AssertionError(f"{len(rows)} logs, expected {n}")


def test_only_models_an_upstream_allows_are_proxied(provider, operator_key, tmp_path):
    app, url = provider
    routes = tmp_path / "upstreams.json"
    routes.write_text(json.dumps({"upstreams": [{"models": ["claude-*"], "url": url, "api_key_env": OPERATOR_ENV}]}))
    env = {"TUNEFORGE_UPSTREAM_URL": url, "TUNEFORGE_UPSTREAM_MODELS": "gpt-4o*, o3,",
           "TUNEFORGE_UPSTREAMS": str(routes)}
    upstreams = upstreams_.from_env(env)
    assert upstreams.find("gpt-5") is None and upstreams.find("claude-x").api_key_env == OPERATOR_ENV
    assert upstreams_.from_env({"TUNEFORGE_UPSTREAM_URL": url}).find("gpt-5") is not None  # no allowlist: as before
    app.seen.clear()
    with platform(upstreams) as (client, key, _, _):
        for model in ("gpt-4o-mini", "o3", "claude-x"):
            assert call(client, key, model).status_code == 200, model
        for model in ("gpt-5", "o3-mini"):  # not on any allowlist: our own 404, the operator's key unused
            r = call(client, key, model)
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text
    assert [s["model"] for s in app.seen] == ["gpt-4o-mini", "o3", "claude-x"]


def test_callers_must_bring_their_own_key_when_the_operator_says_so(provider, operator_key):
    app, url = provider
    app.seen.clear()
    with platform(one_upstream(url), proxy_require_caller_key=True) as (client, key, _, _):
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as refused:
            sdk.chat.completions.create(model="gpt-4o", messages=USER)
        assert refused.value.code == "upstream_key_required" and "X-Upstream-Authorization" in refused.value.message
        reply = sdk.chat.completions.create(model="gpt-4o", messages=USER,
                                            extra_headers={"X-Upstream-Authorization": f"Bearer {CALLER}"})
        assert reply.choices[0].message.content == "ok"
    assert [s["authorization"] for s in app.seen] == [f"Bearer {CALLER}"]


def test_each_project_has_its_own_request_rate(provider, operator_key):
    _, url = provider
    with platform(one_upstream(url), proxy_requests_per_minute=3) as (client, shop, other, _):
        assert [call(client, shop).status_code for _ in range(3)] == [200, 200, 200]
        over = call(client, shop, caller_key=CALLER)  # the caller's own key counts towards the rate too
        assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(over.headers["retry-after"]) <= 20
        assert call(client, other).status_code == 200  # another project is not slowed


def test_rate_limiter_refills_at_the_rate():
    from tuneforge.server.rate import RateLimiter

    now = [0.0]
    rates = RateLimiter(clock=lambda: now[0])
    assert [rates.take("p", 60) for _ in range(60)] == [0] * 60
    assert rates.take("p", 60) == 1 and rates.take("q", 60) == 0
    now[0] += 1.0
    assert rates.take("p", 60) == 0 and rates.take("p", 60) == 1
    assert rates.take("p", 0) == 60  # 0: no calls at all


def test_spend_meter_adds_finished_calls_to_the_last_read_without_counting_them_twice():
    from tuneforge.server.rate import SpendMeter

    in_logs = [1.0]
    meter = SpendMeter(lambda project: in_logs[0], refresh_s=3600)
    assert anyio.run(meter.spent, "p") == 1.0
    meter.add("p", 2.0)  # a call finished; its log is not read yet
    assert anyio.run(meter.spent, "p") == 3.0 and anyio.run(meter.spent, "q") == 1.0
    in_logs[0] = 3.0  # now it is
    meter._projects["p"].next_read = 0.0
    assert anyio.run(meter.spent, "p") == 3.0


def test_spend_limit_counts_only_the_operators_key(provider, operator_key):
    from tuneforge.store import logs

    _, url = provider
    million = {"tokens": 1_000_000}  # $2.50 on gpt-4o
    with platform(one_upstream(url), proxy_usd_per_day=1.0) as (client, shop, other, db):
        with db.session() as s:  # "other" spent $2.50 earlier today (another server process, before a restart)
            logs.ingest(s, projects.authenticate(s, other).id, [{
                "id": "earlier", "source": "proxy", "model": "gpt-4o", "request": {}, "status": 200,
                "response": {"model": "gpt-4o", "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 0}},
                "started_at": time.time(), "tags": {}}])
        assert call(client, other, caller_key=CALLER).status_code == 200  # its own key: no limit
        assert call(client, other).status_code == 429

        assert call(client, shop, caller_key=CALLER, **million).status_code == 200  # the caller pays: not counted
        assert call(client, shop, **million).status_code == 200  # $0 so far
        over = call(client, shop)  # counted as soon as the call finished, not once its log is written
        assert over.status_code == 429, over.text
        error = over.json()["error"]
        assert error["code"] == "insufficient_quota" and "$2.50" in error["message"]
        assert 0 < int(over.headers["retry-after"]) <= 86400
        assert call(client, shop, caller_key=CALLER).status_code == 200  # with its own key it goes on
        rows = logged(db, 5)
    own = [r for r in rows if r.tags.get("tuneforge.upstream_key") == "caller"]
    assert len(own) == 3 and sum(r.cost_usd for r in rows if r not in own) > 5


def test_a_stream_on_the_operators_key_is_priced_though_the_caller_did_not_ask_for_usage(provider, operator_key):
    _, url = provider
    million = {"tokens": 1_000_000}  # $2.50 on gpt-4o
    with platform(one_upstream(url), proxy_usd_per_day=1.0) as (client, shop, _, db):
        plain = call(client, shop, stream=True, **million)
        assert plain.status_code == 200 and plain.text.count("data: ") == 3  # two chunks and [DONE]: no usage
        assert '"usage": {' not in plain.text
        over = call(client, shop, stream=True)
        assert over.status_code == 429 and over.json()["error"]["code"] == "insufficient_quota", over.text
        asked = call(client, shop, caller_key=CALLER, stream=True, stream_options={"include_usage": True})
        assert '"choices": [], "usage": {' in asked.text  # asked for: relayed as sent
        rows = logged(db, 2)
    assert rows[0].cost_usd > 2 and rows[0].stream


def test_the_spend_tag_cannot_be_forged_by_the_caller(provider, operator_key):
    _, url = provider
    forged = {"X-Tuneforge-Tags": json.dumps({"tuneforge.upstream_key": "caller", "team": "a"})}
    with platform(one_upstream(url)) as (client, shop, _, db):
        assert call(client, shop, headers=forged).status_code == 200
        assert logged(db, 1)[0].tags == {"team": "a"}


def test_billing_headers_follow_the_key_and_hop_by_hop_headers_stay(provider, operator_key):
    app, url = provider
    billing = {"OpenAI-Organization": "org-caller", "OpenAI-Project": "proj_caller", "OpenAI-Beta": "assistants=v2"}
    app.seen.clear()
    with platform(one_upstream(url)) as (client, key, _, _):
        lent = call(client, key, headers=billing)
        own = call(client, key, caller_key=CALLER, headers=billing)
    sent_lent, sent_own = app.seen
    assert "openai-organization" not in sent_lent and "openai-project" not in sent_lent  # the operator's bill
    assert sent_lent["openai-beta"] == "assistants=v2" and sent_lent["authorization"] == f"Bearer {OPERATOR}"
    assert sent_own["openai-organization"] == "org-caller" and sent_own["openai-project"] == "proj_caller"
    never = ("set-cookie", "set-cookie2", "keep-alive", "proxy-authenticate", "x-hop", "trailer")
    for reply in (lent, own):
        assert reply.status_code == 200 and reply.headers["x-upstream-custom"] == "kept"
        assert reply.headers["openai-processing-ms"] == "12"
        assert not [h for h in never if h in reply.headers], reply.headers
        # ours names the call here; the provider's, kept beside it, names it to the provider's support
        assert reply.headers["x-request-id"].startswith("req_") and reply.headers.get_list("x-request-id") == [
            reply.headers["x-request-id"]] and reply.headers["x-upstream-request-id"] == "req_upstream_1"
    account = ("openai-organization", "openai-project", "anthropic-organization-id")
    assert not [h for h in account if h in lent.headers]  # the operator's account is not the caller's business
    assert own.headers["openai-organization"] == "org-operator"  # the caller's own key: the upstream's answer


def test_no_piece_of_the_operators_key_reaches_the_caller_or_the_log(provider, operator_key):
    _, url = provider
    with platform(one_upstream(url)) as (client, key, _, db):
        lent = call(client, key, "echo-key")
        own = call(client, key, "echo-key", caller_key=CALLER)
        rows = logged(db, 2)
    assert lent.status_code == 401 and "Incorrect API key provided" in lent.json()["error"]["message"]
    assert OPERATOR[:4] not in lent.text and OPERATOR[-4:] not in lent.text, lent.text
    assert f"{CALLER[:6]}***{CALLER[-4:]}" in own.text  # a caller's own key: its error as the provider wrote it
    stored = " ".join(json.dumps(r.error) for r in rows)
    assert "Incorrect API key provided" in stored
    for secret in (OPERATOR, CALLER):
        assert secret[:4] not in stored and secret[-4:] not in stored, stored


def test_spent_today_sums_the_operators_proxied_calls_of_one_project_since_midnight_utc(db):
    from tuneforge.store import logs, spend

    now = 86400.0 * 20_000 + 3600  # 01:00 UTC
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 0, "total_tokens": 1_000_000}

    def rec(i: int, *, source="proxy", tags=None, started=now - 60) -> dict:
        return {"id": f"log-{i}", "source": source, "model": "gpt-4o", "request": {}, "status": 200,
                "response": {"model": "gpt-4o", "usage": usage}, "started_at": started, "tags": tags or {}}

    with db.session() as s:
        shop, other = projects.get_or_create(s, "shop").id, projects.get_or_create(s, "other").id
        logs.ingest(s, shop, [rec(1), rec(2), rec(3, tags={"tuneforge.upstream_key": "caller"}),
                              rec(4, source="sdk"), rec(5, started=now - 7200)])  # counted: 1 and 2
        logs.ingest(s, other, [rec(1), rec(6)])
    with db.session() as s:
        assert spend.proxied_usd_today(s, shop, now) == pytest.approx(5.0)
        assert spend.proxied_usd_today(s, other, now) == pytest.approx(5.0)
        assert spend.proxied_usd_today(s, "proj_none", now) == 0.0


def test_a_body_over_the_limit_is_refused_without_reading_the_rest():
    """Sent in chunks with no Content-Length: refused once the limit is passed, even by its last chunk."""
    state = SimpleNamespace(settings=Settings(limits=limits_.Limits(max_body_mb=1)))
    reached = []

    async def app(scope, receive, send):
        reached.append(True)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = proxy.ProxyMiddleware(app, state=state, upstreams=one_upstream("http://127.0.0.1:9/v1"), sink=None,
                                       forwarder=None)
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}

    def answer(messages) -> tuple[int, int]:
        """(status, how many body messages were read)."""
        read, sent = [0], []

        async def receive():
            read[0] += 1
            return next(messages)

        async def send(message):
            sent.append(message)

        anyio.run(middleware, scope, receive, send)
        return sent[0]["status"], read[0]

    endless = ({"type": "http.request", "body": b"x" * (64 << 10), "more_body": True} for _ in iter(int, 1))
    assert answer(endless) == (413, 17)  # 1 MB is 16 chunks: the 17th is one too many
    just_over = iter([{"type": "http.request", "body": b"x" * (1 << 20), "more_body": True},
                      {"type": "http.request", "body": b"x", "more_body": False}])
    assert answer(just_over) == (413, 2) and not reached


def test_jobs_asking_an_upstream_never_show_a_piece_of_the_operators_key(provider, operator_key):
    """Relabel jobs (the teacher) and evals (candidates, judges) call upstreams with the operator's key too: an
    upstream that quotes the key in its error must not put it in a job's error or events."""
    import asyncio

    import httpx

    from tuneforge.capture import teacher
    from tuneforge.evals.chat import ChatError, OpenAIChatClient

    _, url = provider
    question = teacher.Question("q", USER)

    async def ask():
        async with httpx.AsyncClient() as client:
            await teacher.ask(client, Upstream(url, OPERATOR_ENV), "echo-key", question, max_attempts=1)

    with pytest.raises(teacher.TeacherError) as relabel:
        asyncio.run(ask())
    with pytest.raises(ChatError) as judge:
        OpenAIChatClient(url, OPERATOR, "echo-key", max_attempts=1).complete(USER, max_tokens=5, temperature=0)
    for message in (str(relabel.value), str(judge.value)):
        assert "401" in message and "[redacted]" in message
        assert OPERATOR[:6] not in message and OPERATOR[-4:] not in message, message
