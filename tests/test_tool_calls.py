"""Tool calls: the parser (whole and streamed), and the chat route through the official `openai` SDK on an
in-process server: OpenAI's validation errors, replies parsed into `tool_calls` (streamed as deltas the SDK
accumulates), tool_choice none / auto / required / named and parallel_tool_calls. Scripted replies stand in for
a model where the test is about parsing; the tiny random model where it is about constrained decoding (it
always calls the function it is told to, with arguments that match the schema)."""

from __future__ import annotations

import json
import random
import sys
import threading
from pathlib import Path

import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState

from tuneforge.capture.record import parse_sse, reassemble
from tuneforge.inference.tool_calls import ToolCallParser, parse, plan

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = frozenset({"get_weather", "create_ticket"})
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\n</tool_call>'
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                     "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city", "unit"]}}}
TICKET = {"type": "function", "function": {"name": "create_ticket", "parameters": {
    "type": "object", "properties": {"title": {"type": "string", "maxLength": 12},
                                     "priority": {"type": "integer"}},
    "required": ["title", "priority"]}}}
TOOLS = [WEATHER, TICKET]
ASK = [{"role": "user", "content": "What's the weather in Oslo?"}]


# ------------------------------------------------------------------ the parser
def test_hermes_blocks_and_the_json_list_variant_become_calls():
    content, calls = parse("Let me check.\n" + CALL, NAMES)
    assert content == "Let me check."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Oslo", "unit": "celsius"})]
    assert calls[0].id.startswith("call_") and isinstance(calls[0].arguments, str)
    listed = ('<tool_call>[{"name": "get_weather", "arguments": {"city": "Rome"}}, '
              '{"name": "create_ticket", "arguments": "{\\"title\\": \\"x\\"}"}]</tool_call>')
    content, calls = parse(listed, NAMES)
    assert content is None
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Rome"}),
                                                                  ("create_ticket", {"title": "x"})]
    assert len({c.id for c in calls}) == 2
    assert len(parse(CALL + CALL, NAMES, single=True)[1]) == 1


@pytest.mark.parametrize("text", [
    '<tool_call>{"name": "delete_everything", "arguments": {}}</tool_call>',  # not one of the request's tools
    '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>',  # malformed JSON
    '<tool_call>{"name": "get_weather", "arguments": [1]}</tool_call>',  # arguments not an object
    "I like <tool_ and < tool_call> as words",
])
def test_anything_but_a_well_formed_call_of_a_known_tool_stays_text(text):
    assert parse(text, NAMES) == (text, [])


def test_streamed_in_any_pieces_the_parser_gives_what_the_whole_text_gives():
    text = "Sure, one moment.\n" + CALL + "\n and <tool_c" + "ookie> " + CALL.replace("Oslo", "Lima") + "\n"
    whole_content, whole_calls = parse(text, NAMES)
    rng = random.Random(0)
    for _ in range(30):
        parser, cuts = ToolCallParser(NAMES), sorted(rng.sample(range(1, len(text)), rng.randint(1, 40)))
        events = []
        for a, b in zip([0, *cuts], [*cuts, len(text)]):
            piece = parser.feed(text[a:b])
            assert not any(getattr(e, "text", "").endswith("<tool_c") for e in piece)  # a possible tag is held back
            events += piece
        events += parser.finish()
        assert "".join(getattr(e, "text", "") for e in events) == whole_content
        assert [(c.name, c.arguments) for c in parser.calls] == [(c.name, c.arguments) for c in whole_calls]
    assert whole_content == "Sure, one moment.\n\n and <tool_cookie>" and len(whole_calls) == 2


def test_plans_for_each_tool_choice():
    assert plan(TOOLS, "none", None).names == frozenset() and plan(TOOLS, "none", None).tools is None
    auto = plan(TOOLS, None, False)
    assert auto.names == NAMES and auto.schema() is None and auto.stops() == ["</tool_call>"] and not auto.prefix
    named = plan(TOOLS, "create_ticket", None)
    assert named.prefix == "<tool_call>\n" and named.schema()["properties"]["name"] == {"const": "create_ticket"}
    assert [o["properties"]["name"]["const"] for o in plan(TOOLS, "required", None).schema()["anyOf"]] == [
        "get_weather", "create_ticket"]


# ------------------------------------------------------------------ the bundled task
def test_the_tool_calling_task_is_generated_and_well_formed(tmp_path):
    import subprocess

    subprocess.run([sys.executable, str(EXAMPLES / "generate.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for split, count in (("train", 300), ("test", 60)):
        committed = EXAMPLES / "tool_calling" / f"{split}.jsonl"
        assert (tmp_path / "tool_calling" / f"{split}.jsonl").read_bytes() == committed.read_bytes()
        rows = [json.loads(line) for line in committed.read_text().splitlines()]
        assert len(rows) == count
        kinds = {"call": 0, "text": 0}
        for row in rows:
            names = {t["function"]["name"] for t in row["tools"]}
            reply = row["messages"][2]
            kinds["call" if reply.get("tool_calls") else "text"] += 1
            for call in reply.get("tool_calls", []):
                assert call["function"]["name"] in names and isinstance(json.loads(call["function"]["arguments"]),
                                                                        dict)
        assert kinds["call"] > count / 2 and kinds["text"] > count / 10
    users = [[json.loads(line)["messages"][1]["content"] for line in (EXAMPLES / "tool_calling" / f"{s}.jsonl")
              .read_text().splitlines()] for s in ("train", "test")]
    assert not set(users[0]) & set(users[1])


# ------------------------------------------------------------------ the server
@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """The app in this process on the tiny model (as the operator's base "tiny"), and an SDK client for it."""
    from fastapi.testclient import TestClient

    from tuneforge.server.app import create_app
    from tuneforge.store import projects
    from tuneforge.store.db import Database

    root = tmp_path_factory.mktemp("tools")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEFORGE_BASES", f"tiny={tiny_model}")
        mp.setenv("TUNEFORGE_DATA_DIR", str(root))
        db = Database(f"sqlite:///{root}/db.sqlite")
        db.migrate()
        with db.session() as s:
            key = projects.create_key(s, project="acme")
        app = create_app(db, upstreams=None)
        with TestClient(app) as http:
            client = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)
            engine = app.state.tuneforge.engines.get(str(tiny_model))
            yield client, engine, http, key
        db.dispose()


@pytest.fixture
def scripted(served, monkeypatch):
    """Make the engine "generate" given replies (in 3-character deltas); returns the requests it got."""
    from tuneforge.inference.engine import Delta, Handle

    engine = served[1]
    replies: list[str] = []
    requests: list = []

    def submit(request):
        requests.append(request)
        text = replies[(len(requests) - 1) % len(replies)]

        def run():
            for k in range(0, len(text), 3):
                request.on_output(Delta(text=text[k:k + 3], prompt_tokens=len(request.prompt_ids),
                                        completion_tokens=k // 3 + 1))
            request.on_output(Delta(finish_reason="stop", prompt_tokens=len(request.prompt_ids),
                                    completion_tokens=len(text) // 3 + 1))

        threading.Thread(target=run, daemon=True).start()
        return Handle(request)

    monkeypatch.setattr(engine, "submit", submit)

    def script(*texts: str) -> list:
        replies[:] = texts
        return requests

    return script


def _streamed(client, **kw):
    state = ChatCompletionStreamState()
    for chunk in client.chat.completions.create(stream=True, **kw):
        state.handle_chunk(chunk)
    return state.get_final_completion()


def test_bad_tool_requests_get_openai_400s(served):
    client = served[0]
    named = {"type": "function", "function": {"name": "send_email"}}
    for kw, param in [({"tools": TOOLS, "tool_choice": named}, "tool_choice"),
                      ({"tool_choice": "required"}, "tool_choice"),
                      ({"tools": TOOLS, "tool_choice": "any"}, "tool_choice"),
                      ({"tools": [{"type": "code_interpreter"}]}, "tools"),
                      ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools")]:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="tiny", messages=ASK, max_tokens=2, **kw)
        body = err.value.body
        assert body["param"] == param and "\n" not in body["message"], body


def test_a_reply_with_calls_comes_back_as_tool_calls_streamed_or_not(served, scripted):
    client = served[0]
    scripted("Checking both.\n" + CALL + "\n" + CALL.replace("Oslo", "Lima"))
    for reply in (client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, max_tokens=50),
                  _streamed(client, model="tiny", messages=ASK, tools=TOOLS, max_tokens=50)):
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Checking both."
        calls = choice.message.tool_calls
        assert [(c.type, c.function.name, json.loads(c.function.arguments)["city"]) for c in calls] == [
            ("function", "get_weather", "Oslo"), ("function", "get_weather", "Lima")]
        assert all(c.id.startswith("call_") for c in calls) and calls[0].id != calls[1].id


def test_stream_deltas_are_shaped_as_openai_sends_them(served, scripted):
    client = served[0]
    scripted("Sure " + CALL)
    chunks = list(client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, stream=True))
    deltas = [c.choices[0].delta for c in chunks]
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert calls[0].id and calls[0].type == "function" and calls[0].function.name == "get_weather"
    assert all(c.index == 0 and c.id is None and c.function.name is None for c in calls[1:])
    assert json.loads("".join(c.function.arguments for c in calls))["city"] == "Oslo"
    text = "".join(d.content or "" for d in deltas)
    assert text == "Sure" and "<" not in text
    assert [c.choices[0].finish_reason for c in chunks][-1] == "tool_calls"
    _client, _engine, http, key = served  # what capture/record.py makes of the same stream
    raw = http.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json={
        "model": "tiny", "messages": ASK, "tools": TOOLS, "stream": True}).content
    message = reassemble(parse_sse(raw))["choices"][0]["message"]
    assert message["content"] == "Sure" and message["tool_calls"][0]["function"]["name"] == "get_weather"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"])["city"] == "Oslo"


def test_plain_text_with_tools_and_tool_choice_none(served, scripted):
    client = served[0]
    requests = scripted("It is sunny, " + CALL)
    reply = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="none")
    assert reply.choices[0].message.content == "It is sunny, " + CALL and not reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "stop"
    engine = served[1]
    assert "get_weather" not in engine.tokenizer.decode(requests[-1].prompt_ids)  # no tools offered
    scripted("Hello! How can I help?")
    for reply in (client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS),
                  _streamed(client, model="tiny", messages=ASK, tools=TOOLS)):
        assert reply.choices[0].message.content == "Hello! How can I help?"
        assert not reply.choices[0].message.tool_calls and reply.choices[0].finish_reason == "stop"
    assert "get_weather" in engine.tokenizer.decode(requests[-1].prompt_ids)  # offered in the system message


def test_parallel_tool_calls_false_returns_one_call_and_stops_at_its_end(served, scripted):
    client = served[0]
    requests = scripted(CALL + CALL.replace("Oslo", "Lima"))
    for reply in (client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, parallel_tool_calls=False),
                  _streamed(client, model="tiny", messages=ASK, tools=TOOLS, parallel_tool_calls=False)):
        assert [json.loads(c.function.arguments)["city"] for c in reply.choices[0].message.tool_calls] == ["Oslo"]
    assert "</tool_call>" in requests[-1].params.stop


def _valid(arguments: str, tool: dict) -> bool:
    params = tool["function"]["parameters"]
    args = json.loads(arguments)
    types = {"string": str, "integer": int}
    return set(args) == set(params["required"]) and all(
        isinstance(args[k], types[s["type"]]) and args[k] in s.get("enum", [args[k]])
        and len(str(args[k])) <= s.get("maxLength", 99) for k, s in params["properties"].items())


def test_a_named_tool_choice_is_always_honoured_by_the_tiny_random_model(served):
    client = served[0]
    history = [*ASK, {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Oslo", "unit": "c"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
        {"role": "user", "content": "Thanks! Anything else?"}]
    for name, tool in (("create_ticket", TICKET), ("get_weather", WEATHER)):
        choice = {"type": "function", "function": {"name": name}}
        kw = {"model": "tiny", "tools": TOOLS, "tool_choice": choice, "temperature": 1.0, "max_tokens": 200}
        replies = [client.chat.completions.create(messages=ASK, n=3, seed=5, **kw),
                   _streamed(client, messages=history, seed=6, **kw)]
        for reply in replies:
            for c in reply.choices:
                assert c.finish_reason == "tool_calls", c
                (call,) = c.message.tool_calls
                assert call.function.name == name and _valid(call.function.arguments, tool), call
    required = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required",
                                              n=4, seed=1, max_tokens=200)
    for c in required.choices:
        (call,) = c.message.tool_calls
        assert _valid(call.function.arguments, {"get_weather": WEATHER, "create_ticket": TICKET}[call.function.name])


def test_in_process_answerers_return_tool_calls_as_the_server_does():
    """A local eval of a tool-calling model grades `tool_calls`, not the raw `<tool_call>` text."""
    from tuneforge.evals.answerers import generator_answerer
    from tuneforge.evals.runner import Sampling

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    reply = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'

    class Fake:
        def complete(self, prompts, params, batch_size):
            return [reply, "Just text."]

    with_tools, without = generator_answerer(Fake())(
        [{"messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": tools},
         {"messages": [{"role": "user", "content": "Hi"}]}], Sampling(max_tokens=20, temperature=0.0))
    assert with_tools.text == "" and [c["function"]["name"] for c in with_tools.tool_calls] == ["get_weather"]
    assert json.loads(with_tools.tool_calls[0]["function"]["arguments"]) == {"city": "Oslo"}
    assert without.text == "Just text." and not without.tool_calls
