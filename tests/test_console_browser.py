"""The web console in headless Chromium: signing in and out, and the request logs (filter, a call's detail, a
dataset built from picked rows). Calls are captured for real: through the logging proxy to the scripted
upstream's `echo` model."""

from __future__ import annotations

import json
import time

import httpx
from console_kit import assert_no_server_errors, console, sign_in

pytestmark = console


def capture(server, n_search: int = 8, n_billing: int = 4) -> None:
    """Calls through the proxy (tagged by team), then wait until the log sink has stored them."""
    key = server.keys["acme"]
    client = server.client(key)
    auth = {"Authorization": f"Bearer {key}"}
    before = httpx.get(server.url + "/v1/logs", headers=auth, params={"limit": 1}).json()["total"]
    for i in range(n_search + n_billing):
        team = "search" if i < n_search else "billing"
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": f"ticket {i} for {team}"}],
                                       extra_headers={"X-Tuneforge-Tags": json.dumps({"team": team})})
    deadline = time.time() + 30
    while httpx.get(server.url + "/v1/logs", headers=auth, params={"limit": 1}).json()["total"] < before + 12:
        assert time.time() < deadline, "the proxy's calls were not logged"
        time.sleep(0.2)


def report_history(server, days: int = 14) -> None:
    """Two weeks of captured calls to two hosted models, as the SDK wrapper reports them (POST /v1/logs)."""
    now, logs = time.time(), []
    for day in range(days):
        for i, (model, tokens) in enumerate([("gpt-4o", 1800), ("gpt-4o", 2400), ("gpt-4o-mini", 900)] * (1 + day % 3)):
            reply = {"model": model, "choices": [{"message": {"role": "assistant", "content": "routed: billing"}}],
                     "usage": {"prompt_tokens": tokens, "completion_tokens": tokens // 6}}
            logs.append({"id": f"hist-{day}-{i}", "model": model, "status": 200, "latency_ms": 800 + 40 * i,
                         "started_at": now - day * 86400 - i * 60, "response": reply, "tags": {"team": "support"},
                         "request": {"model": model, "messages": [{"role": "user", "content": f"ticket {day}.{i}"}]}})
    r = httpx.post(server.url + "/v1/logs", json={"logs": logs},
                   headers={"Authorization": f"Bearer {server.keys['acme']}"})
    assert r.status_code == 200 and r.json()["stored"] == len(logs)


def test_the_overview_shows_spend_by_model_and_day_and_the_savings(page, console_server, shot):
    report_history(console_server)
    page.goto("/")
    assert page.locator(".chart svg rect").count() >= 14  # a bar segment per day and model
    assert "gpt-4o-mini" in page.locator(".chart .legend").first.inner_text()
    page.get_by_label("Teacher (captured model)").fill("gpt-4o")
    page.get_by_label("Student (model id)").fill("tiny")
    page.get_by_role("button", name="Show savings").click()
    page.wait_for_url("**/?teacher=gpt-4o*")
    headline = page.locator("#savings-headline").inner_text()
    assert "gpt-4o costs" in headline and "tiny would cost" in headline and "% less" in headline
    shot(page, "overview")


def test_sign_in_shows_the_overview_and_sign_out_ends_the_session(browser, console_server, shot):
    page = sign_in(browser, console_server)
    assert page.get_by_role("navigation", name="Main").is_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")
    shot(page, "signin")
    page.goto("/logs")
    page.wait_for_url("**/signin?next=%2Flogs")
    assert_no_server_errors(page)
    page.context.close()


def test_filter_logs_open_one_and_make_a_dataset_from_picked_rows(page, console_server, shot):
    capture(console_server)
    page.goto("/logs")
    rows = page.locator("input[name=log_id]")
    assert rows.count() >= 12
    page.get_by_label("Tag").fill("team=billing")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/logs?*tag=team%3Dbilling*")  # htmx swapped the table in and pushed the URL
    page.wait_for_function("document.querySelectorAll('input[name=log_id]').length === 4")
    assert "for billing" in page.locator("#results tbody").inner_text()
    assert "for search" not in page.locator("#results tbody").inner_text()
    shot(page, "logs")

    page.locator("#results tbody a").first.click()
    page.wait_for_url("**/logs/*")
    assert "ECHO" in page.locator("pre").nth(1).inner_text() or "TICKET" in page.locator("pre").nth(1).inner_text()
    shot(page, "log-detail")
    page.go_back()

    page.wait_for_function("document.querySelectorAll('input[name=log_id]').length === 4")
    picked = [rows.nth(i).get_attribute("value") for i in (0, 2)]
    for i in (0, 2):
        rows.nth(i).check()
    page.get_by_label("Name").fill("billing picks")
    page.get_by_label("Test share").fill("0")
    page.get_by_role("button", name="Create dataset").click()
    page.wait_for_url("**/datasets/ds-*")
    dataset_id = page.url.rsplit("/", 1)[1]
    entries = httpx.get(f"{console_server.url}/v1/datasets/{dataset_id}/entries",
                        headers={"Authorization": f"Bearer {console_server.keys['acme']}"}).json()["data"]
    assert sorted(e["lineage"]["log"] for e in entries) == sorted(picked)
