"""A project's own model prices, on SQLite and Postgres: checked, stored under the name the pricing table looks up,
scoped to their project, and used for the calls logged after they are set (earlier calls keep their cost)."""

from __future__ import annotations

import pytest

from tuneforge.capture import pricing
from tuneforge.errors import UserError
from tuneforge.store import logs, prices, projects
from tuneforge.store.logs import LogFilter


def call(i: int, model: str = "gpt-4o") -> dict:
    """A captured call of 1M prompt and 1M completion tokens: its cost is the price's input plus output."""
    response = {"id": f"c{i}", "object": "chat.completion", "model": f"{model}-2024-08-06", "choices": [],
                "usage": {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000}}
    return {"id": f"log-{i}", "source": "sdk", "model": model, "started_at": 1_795_000_000 + i, "latency_ms": 1.0,
            "request": {"model": model, "messages": []}, "response": response, "status": 200, "tags": {}}


def cost(db, project_id: str, log_id: str) -> float | None:
    with db.session() as s:
        return logs.get(s, log_id, project_id).cost_usd


def test_a_log_ingested_after_a_project_price_is_set_gets_that_price(db):
    shared = pricing.load().price("gpt-4o")
    with db.session() as s:
        acme, globex = projects.get_or_create(s, "acme").id, projects.get_or_create(s, "globex").id
        logs.ingest(s, acme, [call(0)])
    with db.session() as s:
        prices.set_(s, acme, "OpenAI/GPT-4o", 1.0, 2.0)  # stored as the table looks it up: gpt-4o
        prices.set_(s, acme, "my-local-model", 0.5, 0.5)  # a model the shared table lacks
    with db.session() as s:
        logs.ingest(s, acme, [call(1), call(2, "my-local-model")])
        logs.ingest(s, globex, [call(1)])
    assert cost(db, acme, "log-0") == pytest.approx(shared.input + shared.output)  # logged before: kept
    assert cost(db, acme, "log-1") == pytest.approx(3.0)  # a dated snapshot is priced as its model
    assert cost(db, acme, "log-2") == pytest.approx(1.0)
    assert cost(db, globex, "log-1") == pytest.approx(shared.input + shared.output)  # another project's price
    with db.session() as s:
        by_model = {row["key"]: row for row in logs.costs(s, acme, LogFilter())}
    assert by_model["my-local-model"]["unpriced_calls"] == 0

    with db.session() as s:
        prices.set_(s, acme, "gpt-4o", 4.0, 4.0)  # replaced, not added
        prices.remove(s, acme, "my-local-model")
        assert [(p.model, p.input) for p in prices.list_(s, acme)] == [("gpt-4o", 4.0)]
        logs.ingest(s, acme, [call(3), call(4, "my-local-model")])
    assert cost(db, acme, "log-3") == pytest.approx(8.0)
    assert cost(db, acme, "log-4") is None  # unpriced again


@pytest.mark.parametrize(("model", "usd", "param"), [
    ("", (1.0, 1.0), "model"), ("x" * 301, (1.0, 1.0), "model"), ("gpt-4o", (-0.01, 1.0), "input"),
    ("gpt-4o", (1.0, 10_000.5), "output"), ("gpt-4o", (float("inf"), 1.0), "input"),
    ("gpt-4o", (1.0, float("nan")), "output"),
])
def test_prices_are_bounded(db, model, usd, param):
    with db.session() as s:
        pid = projects.get_or_create(s, "acme").id
        with pytest.raises(UserError) as caught:
            prices.set_(s, pid, model, *usd)
        assert caught.value.param == param
        prices.set_(s, pid, "gpt-4o", 0.0, prices.MAX_USD)  # both ends are allowed


def test_a_project_may_set_a_bounded_number_of_prices(db, monkeypatch):
    monkeypatch.setattr(prices, "MAX_PER_PROJECT", 3)
    with db.session() as s:
        pid = projects.get_or_create(s, "acme").id
        for i in range(3):
            prices.set_(s, pid, f"m{i}", 1.0, 1.0)
        prices.set_(s, pid, "m0", 2.0, 2.0)  # replacing one is not one more
        with pytest.raises(UserError, match="at most 3"):
            prices.set_(s, pid, "m3", 1.0, 1.0)


def test_the_overview_shows_shared_and_own_prices_by_model(db):
    with db.session() as s:
        pid = projects.get_or_create(s, "acme").id
        prices.set_(s, pid, "gpt-4o", 1.0, 2.0)
        rows = {r.model: r for r in prices.overview(s, pid, ["gpt-4o-2024-08-06", "unknown-model"])}
    assert set(rows) == {"gpt-4o", "gpt-4o-2024-08-06", "unknown-model"}
    assert rows["gpt-4o"].own_set and rows["gpt-4o"].effective == pricing.Price(1.0, 2.0)
    snapshot = rows["gpt-4o-2024-08-06"]
    assert not snapshot.own_set and snapshot.own == pricing.Price(1.0, 2.0)
    assert snapshot.shared == pricing.load().price("gpt-4o")
    assert rows["unknown-model"].shared is None and rows["unknown-model"].effective is None


def test_a_project_price_does_not_lower_its_spend_on_the_operators_key(db):
    from tuneforge.store import spend

    proxied = {**call(0), "source": "proxy", "started_at": spend.day_start() + 1}
    with db.session() as s:
        pid = projects.get_or_create(s, "acme").id
        prices.set_(s, pid, "gpt-4o", 0.0, 0.0)
        logs.ingest(s, pid, [proxied])
    shared = pricing.load().price("gpt-4o")
    with db.session() as s:
        assert spend.proxied_usd_today(s, pid) == pytest.approx(shared.input + shared.output)
