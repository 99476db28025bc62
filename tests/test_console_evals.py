"""The evals pages in headless Chromium: make an eval of the tiny base against a hosted `echo` model (the scripted
upstream, which answers the question upper-cased) with the scripted `marker` judge, watch its progress arrive,
read the results, open the rows side by side and filter them to disagreements."""

from __future__ import annotations

import io
import json
import re

from console_kit import console
from helpers import chat_row

pytestmark = console

# (question, reference): echo's answer is the question upper-cased; the judge prefers an answer with GOOD
ROWS = [("say GOOD things", "SAY GOOD THINGS"),  # echo exact and the judge's pick
        ("hello there", "HELLO THERE"),  # echo exact, a tie for the judge
        ("what is two plus two", "four"),  # neither: no disagreement
        ("GOOD morning", "hi")]  # the judge's pick


def test_run_an_eval_and_read_it_side_by_side(page, console_server, shot):
    client = console_server.client(console_server.keys["acme"])
    body = "".join(json.dumps(chat_row(q, a)) + "\n" for q, a in ROWS).encode()
    test_file = client.files.create(file=("greetings.jsonl", io.BytesIO(body)), purpose="evals")

    page.goto("/evals")
    page.get_by_label("Name", exact=True).fill("tiny vs echo")
    page.get_by_label("An uploaded file").check()
    page.get_by_label("File", exact=True).select_option(test_file.id)
    page.locator("input[name=models][value=tiny]").check()
    page.get_by_label("Hosted models (through the upstream)").fill("echo")
    page.get_by_label("Judge model (head-to-heads)").fill("marker+slow")
    page.get_by_label("Max tokens an answer (optional)").fill("6")
    page.get_by_role("button", name="Create and run").click()

    page.wait_for_url(re.compile(r".*/evals/eval_[^/]+/runs/evalrun_[^/]+$"))
    assert page.locator("#run-live progress").is_visible()  # the run was queued: its progress comes live
    page.locator("#run-events li").first.wait_for()
    page.get_by_role("heading", name="Results").wait_for(timeout=90_000)
    assert page.locator("#run-live").get_attribute("data-status") == "succeeded"
    assert page.locator("#run-events li").count() >= 3  # phases and progress, as they were written
    assert page.get_by_role("heading", name="Win rates").is_visible()
    assert page.get_by_role("heading", name="Ranking").is_visible()
    assert page.locator("#run-progress").evaluate("p => p.value === p.max")
    shot(page, "eval-run")

    page.get_by_role("link", name="Side-by-side rows").click()
    page.wait_for_url(re.compile(r".*/rows$"))
    assert page.locator(".eval-rows .row").count() == len(ROWS)
    assert page.locator(".eval-rows li").filter(has_text="has the marker").count() >= 2
    shot(page, "eval-side-by-side")
    page.get_by_label("Show").select_option("differ")
    page.wait_for_url(re.compile(r".*show=differ.*"))
    assert page.locator(".eval-rows .row").count() == 3
    assert "what is two plus two" not in page.locator(".eval-rows").inner_text()
    assert page.get_by_text("Rows 1–3 of the 3 that match (4 in the run).").is_visible()

    page.goto("/evals")
    assert page.get_by_role("link", name="tiny vs echo").first.is_visible()
    shot(page, "evals")
