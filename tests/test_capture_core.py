"""Capture's pure parts: pricing, stream reassembly, request bodies, log -> example, pruning, dedupe, splits,
the spool, upstream routes."""

from __future__ import annotations

import json
import os

import openai
import pytest

from tuneforge.capture import pricing, record, upstreams
from tuneforge.capture.spool import Spool
from tuneforge.data import dedupe, split
from tuneforge.data.prune import prune
from tuneforge.errors import ConfigError


def test_pricing_prices_snapshots_as_their_family_and_takes_user_overrides(tmp_path, monkeypatch):
    table = pricing.load()
    assert table.cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.5)
    assert table.cost("gpt-4o-2024-08-06", 0, 1_000_000) == pytest.approx(10.0)
    assert table.price("gpt-4o-mini-2024-07-18") == table.price("gpt-4o-mini") != table.price("gpt-4o")
    assert table.price("openai/gpt-4.1-nano") == table.price("gpt-4.1-nano")
    assert table.cost("my-own-model", 10, 10) is None
    haiku = table.price("claude-haiku-4-5")
    assert table.price("claude-haiku-4-5-20251001") == haiku != table.price("claude-3-5-haiku")
    assert table.price("o1-mini-2024-09-12") == table.price("o1-mini") != table.price("o1")
    assert table.price("o3-deep-research") is None  # a variant we do not list is unpriced, not priced as o3

    user = tmp_path / "prices.json"
    user.write_text(json.dumps({"models": {"gpt-4o": {"input": 1.0, "output": 2.0}, "acme-7b": {"input": 0.1,
                                                                                              "output": 0.2}}}))
    monkeypatch.setenv("TUNEFORGE_PRICING", str(user))
    table = pricing.load()
    assert table.cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert table.cost("acme-7b", 2_000_000, 0) == pytest.approx(0.2)
    assert table.cost("gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)  # the shipped rest is still there

    user.write_text('{"models": {"x": {"input": "cheap"}}}')
    os.utime(user, (1, 1))
    with pytest.raises(ConfigError, match="prices.json: not a pricing table"):
        pricing.load()


def test_reassemble_puts_content_tool_calls_logprobs_and_usage_back_together():
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 5, "model": "gpt-4o-2024"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "Hel"}, "logprobs": {"content": [{"token": "Hel"}]}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "lo"}, "logprobs": {"content": [{"token": "lo"}]}}]},
        {**base, "choices": [{"index": 1, "delta": {"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_", "arguments": '{"ci'}}]}}]},
        {**base, "choices": [{"index": 1, "delta": {"tool_calls": [
            {"index": 0, "function": {"name": "weather", "arguments": 'ty": "Oslo"}'}}]}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"},
                             {"index": 1, "delta": {}, "finish_reason": "tool_calls"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}},
    ]
    out = record.reassemble(chunks)
    assert out["object"] == "chat.completion" and out["model"] == "gpt-4o-2024" and out["id"] == "c1"
    first, second = out["choices"]
    assert first["message"] == {"role": "assistant", "content": "Hello"} and first["finish_reason"] == "stop"
    assert first["logprobs"] == {"content": [{"token": "Hel"}, {"token": "lo"}]}
    assert second["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    assert second["finish_reason"] == "tool_calls"
    assert out["usage"]["total_tokens"] == 10
    assert record.usage_of(out) == (7, 3)
    raw = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    assert record.parse_sse(raw.encode()) == chunks


def test_request_body_is_what_the_sdk_sends():
    kwargs = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": openai.NOT_GIVEN,
              "extra_body": {"top_k": 3}, "extra_headers": {"x": "y"}, "timeout": 5}
    assert record.request_body(kwargs) == {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                                           "top_k": 3}


def test_a_log_becomes_a_fine_tuning_example_only_with_a_usable_reply():
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a=1"}], "tools": [{"type": "function"}]}
    reply = {"choices": [{"message": {"role": "assistant", "content": '{"a": 1}', "refusal": None,
                                      "annotations": []}}]}
    assert record.example(request, reply) == {
        "messages": [{"role": "user", "content": "a=1"}, {"role": "assistant", "content": '{"a": 1}'}],
        "tools": [{"type": "function"}]}
    assert record.example(request, None) is None
    assert record.example(request, {"choices": [{"message": {"role": "assistant", "content": ""}}]}) is None


def test_pruning_cuts_the_fixed_text_and_drops_emptied_system_messages():
    system = "You are ACME's converter. " * 20
    messages = [{"role": "system", "content": system}, {"role": "user", "content": f"{system}\nConvert: a=1"},
                {"role": "assistant", "content": "{}"}]
    assert prune(messages, [system]) == [{"role": "user", "content": "Convert: a=1"},
                                         {"role": "assistant", "content": "{}"}]
    assert messages[0]["content"] == system  # not changed in place
    assert prune(messages, []) is messages


def test_exact_and_near_duplicates():
    texts = ["Convert: name=Ada; city=London", "convert:  NAME=ada;  city=london", "Convert: name=Bob; city=Paris",
             "Please convert the following record for me now: name=Ada; city=London; year=1843; field=maths!",
             "Please convert the following record for me now: name=Ada; city=London; year=1843; field=maths",
             "Something entirely different about the weather in Oslo today"]
    assert dedupe.exact_duplicates(texts) == [1]
    assert dedupe.near_duplicates(texts, threshold=0.8) == [1, 4]


def test_split_is_seeded_and_stratified():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 2
    sides = split.split(len(labels), 0.2, seed=1, labels=labels)
    assert sides == split.split(len(labels), 0.2, seed=1, labels=labels)
    for label, n_test in (("a", 2), ("b", 1), ("c", 1)):
        assert sum(1 for s, lab in zip(sides, labels) if lab == label and s == "test") == n_test
    assert split.split(10, 0.2, seed=2).count("test") == 2
    assert split.sample(10, 3, seed=0) == sorted(split.sample(10, 3, seed=0)) and len(split.sample(10, 3, 0)) == 3
    assert split.sample(5, None, 0) == [0, 1, 2, 3, 4]


def test_spool_claims_each_batch_once_and_keeps_rejected_ones(tmp_path):
    spool = Spool(tmp_path / "spool")
    first = spool.write([{"id": "log-1"}])
    spool.write([{"id": "log-2"}, {"id": "log-3"}])
    assert spool.pending()[0] == first
    claimed, records = spool.claim(first)
    assert records == [b'{"id":"log-1"}'] and spool.claim(first) is None  # a second sender gets nothing
    spool.release(claimed)
    assert len(spool.pending()) == 2
    claimed, _ = spool.claim(spool.pending()[0])
    spool.done(claimed)
    claimed, _ = spool.claim(spool.pending()[0])
    kept = spool.reject(claimed)
    assert spool.pending() == [] and json.loads(kept.read_text().splitlines()[1]) == {"id": "log-3"}
    # a batch claimed by a process that died is picked up again
    orphan = spool.write([{"id": "log-4"}])
    os.rename(orphan, orphan.with_name(orphan.name + ".sending-999999"))
    assert Spool(tmp_path / "spool").pending() == [orphan]


def test_upstream_routes(tmp_path):
    routes = tmp_path / "upstreams.json"
    routes.write_text(json.dumps({"upstreams": [
        {"models": ["claude-*"], "url": "https://anthropic.example/v1/", "api_key_env": "ANTHROPIC_KEY"}]}))
    ups = upstreams.from_env({"TUNEFORGE_UPSTREAM_URL": "https://openai.example/v1",
                              "TUNEFORGE_UPSTREAMS": str(routes)})
    assert ups.find("claude-sonnet-4").endpoint("chat/completions") == "https://anthropic.example/v1/chat/completions"
    assert ups.find("gpt-4o").url == "https://openai.example/v1"
    assert not upstreams.from_env({})
    routes.write_text(json.dumps({"upstreams": [{"models": ["x"], "url": "u", "api_key": "sk-live"}]}))
    with pytest.raises(ConfigError, match=r"upstreams\[0\]: write the key's environment variable"):
        upstreams.from_env({"TUNEFORGE_UPSTREAMS": str(routes)})
