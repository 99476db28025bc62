"""The server's API surface with the real SmolLM2 base model: structured output, logprobs, text completions,
and OpenAI-shaped errors for bad input (nothing stored is lost). Through the `openai` SDK where it can go."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import httpx
import openai
import pytest
from live_server import Server

MODEL = "smollm2-135m-instruct"
ASK = [{"role": "user", "content": "Give me a person as JSON."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, smollm2):
    with Server(tmp_path_factory.mktemp("api") / "data", workers=0) as srv:
        srv.api_key = srv.key("acme")
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return server.client(server.api_key)


def http(server, method: str, path: str, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.api_key}", **kw.pop("headers", {})}
    return httpx.request(method, server.url + path, headers=headers, timeout=120, **kw)


def assert_openai_error(r: httpx.Response, status: int, param: str | None = None, code: str | None = None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if param:
        assert body["error"]["param"] == param
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def test_json_schema_output_is_always_valid(client):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, temperature=1.0, seed=1, n=3, max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    for choice in reply.choices:
        assert choice.finish_reason == "stop"
        value = json.loads(choice.message.content)
        assert set(value) == {"name", "age"} and isinstance(value["age"], int)
    ask = [{"role": "system", "content": "Reply with a short JSON object."}, {"role": "user", "content": "2+2?"}]
    obj = client.chat.completions.create(model=MODEL, messages=ask, temperature=0, max_tokens=100,
                                         response_format={"type": "json_object"})
    assert obj.choices[0].finish_reason == "stop"  # only running out of max_tokens can leave JSON unfinished
    assert isinstance(json.loads(obj.choices[0].message.content), dict)


def test_chat_logprobs_stop_and_seed(client):
    reply = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=8, logprobs=True,
                                           top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for item in content:
        assert len(item.top_logprobs) == 3 and item.logprob <= 0
        assert item.top_logprobs[0].logprob == pytest.approx(item.logprob, abs=1e-4)  # greedy: the best token
    a, b = (client.chat.completions.create(model=MODEL, messages=ASK, temperature=1.0, seed=11, max_tokens=12)
            for _ in range(2))
    assert a.choices[0].message.content == b.choices[0].message.content
    full = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=30).choices[0]
    cut = full.message.content[5:8]
    stopped = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=30, stop=[cut])
    assert stopped.choices[0].message.content == full.message.content[: full.message.content.index(cut)]
    assert stopped.choices[0].finish_reason == "stop"


def test_completions_echo_logprobs_score_the_prompt(client, smollm2_tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.models import registry

    ids = smollm2_tokenizer("The capital of France is Paris", add_special_tokens=False).input_ids
    out = client.completions.create(model=MODEL, prompt=[ids], max_tokens=1, echo=True, logprobs=1, temperature=0)
    lp = out.choices[0].logprobs
    assert len(lp.token_logprobs) == len(ids) + 1 and lp.token_logprobs[0] is None
    assert out.choices[0].text.startswith("The capital of France is Paris")
    model = AutoModelForCausalLM.from_pretrained(registry.materialized_path(MODEL))
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    for i in range(1, len(ids)):
        assert lp.token_logprobs[i] == pytest.approx(float(ref[i - 1, ids[i]]), abs=2e-3)
        assert max(lp.top_logprobs[i].values()) >= lp.token_logprobs[i] - 1e-6
    text = client.completions.create(model=MODEL, prompt=["1, 2, 3, 4,", "a, b, c,"], max_tokens=6, temperature=0)
    assert [c.index for c in text.choices] == [0, 1] and all(c.text for c in text.choices)


def test_bad_requests_get_openai_errors(server, client):
    assert_openai_error(http(server, "POST", "/v1/chat/completions", content=b"{not json",
                             headers={"Content-Type": "application/json"}), 400)
    err = assert_openai_error(http(server, "POST", "/v1/chat/completions", json={"model": MODEL, "messages": ASK,
                                                                                   "temperature": 7}), 400)
    assert err["param"] == "temperature"
    assert_openai_error(http(server, "POST", "/v1/chat/completions", json={"model": MODEL}), 400, param="messages")
    assert_openai_error(http(server, "POST", "/v1/chat/completions", json={"model": "gpt-9", "messages": ASK}), 404,
                        param="model", code="model_not_found")
    huge = {"model": MODEL, "messages": [{"role": "user", "content": "word " * 10_000}]}
    assert_openai_error(http(server, "POST", "/v1/chat/completions", json=huge), 400, code="context_length_exceeded")
    assert_openai_error(http(server, "POST", "/v1/chat/completions", content=b"x" * (9 << 20),
                             headers={"Content-Type": "application/json"}), 413)
    assert_openai_error(http(server, "GET", "/v1/nowhere"), 404)
    assert_openai_error(httpx.get(server.url + "/v1/models"), 401, code="missing_api_key")
    assert_openai_error(http(server, "POST", "/v1/fine_tuning/jobs", json={
        "model": MODEL, "training_file": "file-nope"}), 404, param="training_file")
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=ASK, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}})
    assert bad.value.body["param"] == "response_format"


def test_bad_upload_is_rejected_line_by_line_and_stores_nothing(server, client):
    good = client.files.create(file=("ok.jsonl", io.BytesIO(json.dumps({"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}).encode() + b"\n")),
        purpose="fine-tune")
    before = [f.id for f in client.files.list().data]
    bad = b'{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n'
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("bad.jsonl", io.BytesIO(bad)), purpose="fine-tune")
    message = refused.value.body["message"]
    assert "bad.jsonl:1: messages" in message and "bad.jsonl:2:" in message
    assert refused.value.body["code"] == "invalid_file_format"
    assert [f.id for f in client.files.list().data] == before
    assert client.files.retrieve(good.id).bytes > 0
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(model=MODEL, training_file=good.id, hyperparameters={"n_epochs": 0})
    with pytest.raises(openai.BadRequestError) as unknown:
        client.fine_tuning.jobs.create(model=MODEL, training_file=good.id, hyperparameters={"lr_schedule": "x"})
    assert unknown.value.body["param"] == "hyperparameters.lr_schedule"
    assert client.fine_tuning.jobs.list().data == []  # refused jobs leave nothing behind


@pytest.mark.slow
def test_fuzzing_the_openapi_schema_finds_no_server_error(server):
    """schemathesis generates requests from the server's own OpenAPI schema: none may get a 5xx."""
    proc = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json", "--checks",
         "not_a_server_error", "-H", f"Authorization: Bearer {server.api_key}", "--max-examples", "25",
         "--seed", "1", "--request-timeout", "120", "--generation-deterministic"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def _chat_bodies():
    from hypothesis import strategies as st

    text = st.text(max_size=40)
    content = st.one_of(text, st.none(), st.integers(), st.lists(st.fixed_dictionaries({"type": st.just("text"),
                                                                                          "text": text}), max_size=2))
    message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", "developer",
                                                              "robot"]), "content": content})
    fmt = st.one_of(st.none(), st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object", "bogus"])}),
                    st.fixed_dictionaries({"type": st.just("json_schema"), "json_schema": st.fixed_dictionaries(
                        {"name": st.just("x"), "schema": st.sampled_from([{"type": "object"}, {"type": 3}, {}])})}))
    return st.fixed_dictionaries({
        "model": st.sampled_from([MODEL, MODEL, "nope"]), "messages": st.lists(message, max_size=3),
        "max_tokens": st.integers(-1, 5), "temperature": st.one_of(st.none(), st.floats(-1, 3)),
        "top_p": st.one_of(st.none(), st.floats(-0.5, 1.5)), "n": st.integers(0, 3),
        "stop": st.one_of(st.none(), text, st.lists(st.text(max_size=3), max_size=5)), "logprobs": st.booleans(),
        "top_logprobs": st.one_of(st.none(), st.integers(-1, 25)), "response_format": fmt,
        "seed": st.one_of(st.none(), st.integers(-(2**70), 2**70)), "stream": st.booleans(),
    })


def _completion_bodies():
    from hypothesis import strategies as st

    prompt = st.one_of(st.text(max_size=40), st.lists(st.integers(-5, 60_000), max_size=8),
                       st.lists(st.text(max_size=10), max_size=3))
    return st.fixed_dictionaries({
        "model": st.sampled_from([MODEL, "nope"]), "prompt": prompt, "max_tokens": st.integers(-1, 4),
        "echo": st.booleans(), "logprobs": st.one_of(st.none(), st.integers(-1, 6)), "n": st.integers(0, 2),
        "temperature": st.one_of(st.none(), st.floats(0, 2)), "stream": st.booleans(),
        "seed": st.one_of(st.none(), st.integers(-(2**70), 2**70)),
    })


def _check_response(r: httpx.Response, body: dict) -> None:
    assert r.status_code < 500, (json.dumps(body), r.text[-300:])
    if r.status_code >= 400:
        assert_openai_error(r, r.status_code)
    elif body.get("stream"):
        assert r.text.rstrip().endswith("data: [DONE]"), (json.dumps(body), r.text[-300:])
    else:
        assert len(r.json()["choices"]) >= 1


@pytest.mark.slow
def test_random_generation_requests_never_fail_the_server(server):
    """Hypothesis over the generation endpoints with the real model (schemathesis rarely names a real model)."""
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(_chat_bodies())
    def chat(body):
        _check_response(http(server, "POST", "/v1/chat/completions", json=body), body)

    @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(_completion_bodies())
    def completions(body):
        _check_response(http(server, "POST", "/v1/completions", json=body), body)

    chat()
    completions()
    assert http(server, "GET", "/health").status_code == 200


def test_a_client_that_disconnects_mid_stream_stops_its_generation(server):
    import time

    # greedy counting goes on and on (checked: no end within 300 tokens), so only a cancel can end it soon
    body = {"model": MODEL, "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "max_tokens": 3000, "temperature": 0,
            "stream": True}
    headers = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, headers=headers, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(4):
            next(lines)
        assert httpx.get(server.url + "/health").json()["engines"][MODEL] == 1
    deadline = time.time() + 20
    while httpx.get(server.url + "/health").json()["engines"][MODEL] and time.time() < deadline:
        time.sleep(0.2)
    assert httpx.get(server.url + "/health").json()["engines"][MODEL] == 0
