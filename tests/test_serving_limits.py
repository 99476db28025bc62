"""Serving stays bounded whatever one request asks: prompts checked against the context on every path, sequences
per request capped, engines in a capped LRU, a client that leaves cancels its work; and OpenAI's `logit_bias`
and streamed usage for text completions. A real `tuneforge serve` with two tiny operator bases."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time

import httpx
import pytest
from live_server import Server

from tuneforge.errors import UserError
from tuneforge.limits import Limits
from tuneforge.server import generation


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    other = tmp_path_factory.mktemp("tiny2") / "tiny2"
    shutil.copytree(tiny_model, other)
    env = {"TUNEFORGE_MAX_ENGINES": "1", "TUNEFORGE_PROJECT_REQUESTS_IN_FLIGHT": "4", "TUNEFORGE_ENGINE_QUEUE": "20"}
    with Server(tmp_path_factory.mktemp("limits") / "data", workers=0, env=env,
                extra=("--base", f"tiny={tiny_model}", "--base", f"tiny2={other}")) as srv:
        srv.api_key = srv.key("acme")
        yield srv


def post(server, path: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers={"Authorization": f"Bearer {server.api_key}"},
                      timeout=kw.pop("timeout", 120), **kw)


def engines(server) -> dict[str, int]:
    return httpx.get(server.url + "/health").json()["engines"]


def test_prompts_are_checked_against_the_context_on_every_path(server, tiny_model):
    # 2M tokens scored with echo: full logits would be 2M x 49k floats (~400 GB); refused before any work
    huge = {"model": "tiny", "prompt": [1] * 2_000_000, "max_tokens": 0, "echo": True, "logprobs": 1}
    r = post(server, "/v1/completions", huge)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
    assert r.json()["error"]["param"] == "prompt"
    too_many = {"model": "tiny", "prompt": ["hi"] * 5, "n": 16, "max_tokens": 1}  # 80 sequences > 64
    r = post(server, "/v1/completions", too_many)
    assert r.status_code == 400 and "80 sequences" in r.json()["error"]["message"], r.text
    # a prompt that fits, scored in memory-bounded chunks, still works
    ok = post(server, "/v1/completions", {"model": "tiny", "prompt": [1] * 1000, "max_tokens": 0, "echo": True,
                                          "logprobs": 0})
    assert ok.status_code == 200 and len(ok.json()["choices"][0]["logprobs"]["token_logprobs"]) == 1000
    big_schema = {"type": "object", "properties": {f"f{i}": {"type": "string", "description": "x" * 100}
                                                   for i in range(1000)}}
    r = post(server, "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                              "response_format": {"type": "json_schema", "json_schema": {
                                                  "name": "big", "schema": big_schema}}})
    assert r.status_code == 400 and "schema" in r.json()["error"]["message"], r.text
    slow = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(a|b|c|d){1,6000}"}}}  # 10 s
    r = post(server, "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                              "response_format": {"type": "json_schema", "json_schema": {
                                                  "name": "slow", "schema": slow}}})
    assert r.status_code == 400 and "repeats too much" in r.json()["error"]["message"], r.text


def test_logit_bias_steers_the_choice_and_bad_keys_are_refused(server, smollm2_tokenizer):
    client = server.client(server.api_key)
    ask = {"model": "tiny", "prompt": "Hello", "max_tokens": 4, "temperature": 0, "logprobs": 0}
    plain = post(server, "/v1/completions", ask).json()["choices"][0]["logprobs"]["tokens"]
    forced_id = smollm2_tokenizer.convert_tokens_to_ids("Ġyes")
    forced = client.completions.create(model="tiny", prompt="Hello", max_tokens=4, temperature=0,
                                       logit_bias={str(forced_id): 100})
    assert forced.choices[0].text == " yes" * 4 and plain != [" yes"] * 4
    first = smollm2_tokenizer.convert_tokens_to_ids(smollm2_tokenizer.tokenize(plain[0]))[0]
    banned = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}],
                                            max_tokens=4, temperature=0, logprobs=True, logit_bias={str(first): -100})
    assert all(lp.token != plain[0] for lp in banned.choices[0].logprobs.content)
    r = post(server, "/v1/completions", {**ask, "logit_bias": {"99999999": 5}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias", r.text


def test_streamed_completions_end_with_usage(server):
    client = server.client(server.api_key)
    chunks = list(client.completions.create(model="tiny", prompt="Hello there", max_tokens=5, n=2, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert chunks[-1].usage.prompt_tokens == 2 * chunks[-1].usage.prompt_tokens // 2 > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_a_client_that_leaves_a_non_streamed_request_cancels_it(server):
    # 16 choices of 1,000 tokens: tens of seconds of work, so only a cancel empties the engine soon
    body = {"model": "tiny", "prompt": "1, 2, 3", "max_tokens": 1000, "n": 16, "temperature": 1.0}
    with pytest.raises(httpx.ReadTimeout):
        post(server, "/v1/completions", body, timeout=1.5)
    deadline = time.time() + 10
    while sum(engines(server).values()) and time.time() < deadline:
        time.sleep(0.1)
    assert sum(engines(server).values()) == 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_full_engine_queue_is_a_429_streamed_or_not(server, stream):
    # 64 sequences: at most 32 decode at once (--max-batch), so over 20 wait: more than the queue holds
    body = {"model": "tiny", "prompt": ["a", "b", "c", "d"], "n": 16, "max_tokens": 4, "stream": stream}
    r = post(server, "/v1/completions", body)
    assert r.status_code == 429 and r.json()["error"]["code"] == "server_overloaded", r.text
    assert int(r.headers["retry-after"]) >= 1
    deadline = time.time() + 10  # what was submitted before the refusal was cancelled with it
    while sum(engines(server).values()) and time.time() < deadline:
        time.sleep(0.1)
    assert sum(engines(server).values()) == 0


def test_engines_are_a_capped_lru(server, tiny_model):
    client = server.client(server.api_key)
    for model, folder in (("tiny", tiny_model.name), ("tiny2", "tiny2"), ("tiny", tiny_model.name)):
        assert client.completions.create(model=model, prompt="Hi", max_tokens=2).choices[0].text is not None
        assert list(engines(server)) == [folder]  # TUNEFORGE_MAX_ENGINES=1: the other one was closed


def test_a_busy_engine_is_not_evicted_and_loading_happens_outside_the_lock(monkeypatch):
    from tuneforge.errors import RateLimited
    from tuneforge.server.serving import Engines

    class Fake:
        def __init__(self, base):
            self.base, self.running, self.held, self.closed = base, 0, 0, False

        @property
        def busy(self):
            return self.running

        def close(self):
            self.closed = True

    engines_ = Engines(max_engines=2)
    slow_load, loading = threading.Event(), threading.Event()

    def new(base):
        if base == "slow":
            loading.set()
            slow_load.wait(10)
        return Fake(base)

    monkeypatch.setattr(engines_, "_new", new)
    a = engines_.get("a")
    a.running = 1
    loader = threading.Thread(target=engines_.get, args=("slow",))
    loader.start()
    assert loading.wait(10)
    assert engines_.get("a") is a  # a loaded model is served while another loads
    with pytest.raises(RateLimited):  # "a" busy, "slow" loading: no room for a third
        engines_.get("b")
    slow_load.set()
    loader.join()
    engines_.get("slow").running = 1
    with pytest.raises(RateLimited):
        engines_.get("b")
    a.running = 0
    b = engines_.get("b", hold=True)  # the least recently used idle engine goes
    assert a.closed and not b.closed and set(engines_.load()) == {"slow", "b"}
    engines_.get("slow").running = 0
    engines_.get("c")  # "b" is held by a request still being prepared (nothing submitted yet): "slow" goes
    assert not b.closed and set(engines_.load()) == {"b", "c"}
    engines_.release(b)
    engines_.get("a")
    assert b.closed


def test_a_project_over_its_requests_in_flight_gets_429(server):
    other = server.key("other")
    body = {"model": "tiny", "prompt": "1, 2, 3", "max_tokens": 300, "n": 2}
    results: list[int] = []

    def flood():
        results.append(post(server, "/v1/completions", body).status_code)

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    r = httpx.post(server.url + "/v1/completions", json={"model": "tiny", "prompt": "Hi", "max_tokens": 2},
                   headers={"Authorization": f"Bearer {other}"}, timeout=120)
    for t in threads:
        t.join()
    assert r.status_code == 200, r.text  # the other project is not refused
    # 4 slots (TUNEFORGE_PROJECT_REQUESTS_IN_FLIGHT): none leaked by the earlier tests' clients that left
    assert results.count(429) >= 1 and results.count(200) >= 4 and set(results) <= {200, 429}


def test_a_project_over_its_sequences_in_flight_gets_429():
    """Requests are counted, and so are their sequences (prompts x n): a few requests of 64 sequences each must
    not fill an engine's queue. (On the tiny model a request ends too soon to hold it open over HTTP.)"""
    from tuneforge.errors import RateLimited
    from tuneforge.server.deps import InFlight, Slot

    limits, in_flight = Limits(project_requests_in_flight=3, project_sequences_in_flight=24), InFlight()

    def request(project: str, sequences: int) -> Slot:
        in_flight.take(project, limits)
        slot = Slot(in_flight, project, limits)
        try:
            slot.hold(sequences)
        except RateLimited:
            slot.release()
            raise
        return slot

    big = request("a", 64)  # alone, any request up to max_sequences is let through
    with pytest.raises(RateLimited, match="sequences"):
        request("a", 1)
    other = request("b", 16)  # another project's budget is its own
    big.release()
    first, second = request("a", 16), request("a", 8)
    with pytest.raises(RateLimited, match="sequences"):
        request("a", 1)
    first.release()
    third = request("a", 16)
    fourth = request("a", 0)  # a's third request
    with pytest.raises(RateLimited, match="requests in flight"):
        request("a", 0)
    for slot in (second, third, fourth, other):
        slot.release()
    assert in_flight["a"] == in_flight["b"] == 0 and not in_flight._sequences


def test_preparing_a_request_runs_off_the_event_loop_and_gives_up_in_time():
    limits = Limits(prepare_timeout_s=0.3)
    ticks = []

    async def main():
        async def tick():
            for _ in range(5):
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)

        ticker = asyncio.create_task(tick())
        with pytest.raises(UserError, match="took over 0.3 s"):
            await generation.prepare(limits, time.sleep, 2.0)
        await ticker

    asyncio.run(main())
    assert len(ticks) == 5  # the loop kept running while the slow work sat in a thread
