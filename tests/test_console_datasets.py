"""Datasets in the browser: a JSONL upload with a bad line shows that line's number and problem beside the file
field and makes nothing (the name typed stays); the fixed file makes a dataset whose page lists its entries with
their lineage; a pruning rule is saved and the export applies it; a relabel by the scripted teacher `echo` is
followed live until its new dataset is ready, with every answer rewritten."""

from __future__ import annotations

import json
import re

import httpx
from console_kit import console
from helpers import chat_row
from playwright.sync_api import expect

pytestmark = console
ROWS = [chat_row(f"what is {i} plus {i}?", f"{2 * i}", system="You are a calculator.") for i in range(6)]


def jsonl(rows: list) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def dataset_ids(server) -> set[str]:
    r = httpx.get(server.url + "/v1/datasets", headers={"authorization": f"Bearer {server.keys['acme']}"})
    return {d["id"] for d in r.json()["data"]}


def test_upload_prune_relabel_and_export_a_dataset(page, console_server, shot):
    before = dataset_ids(console_server)
    page.goto("/datasets")
    page.get_by_label("Dataset name").fill("calculator")
    page.get_by_label("Test fraction").fill("0.34")
    bad = [ROWS[0], {"messages": [{"role": "user", "content": "no answer"}]}, *ROWS[1:]]
    page.get_by_label("JSONL file", exact=True).set_input_files(
        {"name": "calc.jsonl", "mimeType": "application/jsonl", "buffer": jsonl(bad)})
    page.get_by_role("button", name="Upload and create dataset").click()
    expect(page.locator("#f-file-error")).to_contain_text("1 line of calc.jsonl cannot be used")
    expect(page.locator(".problems li")).to_have_text(
        ["line 2: messages: no assistant message to learn from (add an assistant reply)"])
    expect(page.get_by_label("Dataset name")).to_have_value("calculator")  # nothing typed is lost
    expect(page.get_by_label("Test fraction")).to_have_value("0.34")
    assert dataset_ids(console_server) == before  # and nothing was made

    page.get_by_label("JSONL file", exact=True).set_input_files(
        {"name": "calc.jsonl", "mimeType": "application/jsonl", "buffer": jsonl(ROWS)})
    page.get_by_role("button", name="Upload and create dataset").click()
    page.wait_for_url(re.compile(r".*/datasets/ds-[^/]+$"))
    entries = page.locator("table.entries tbody tr")
    expect(entries).to_have_count(6)
    expect(entries.first).to_contain_text("what is 0 plus 0?")
    expect(entries.first).to_contain_text(re.compile(r"file-\S+ line 1"))
    dataset_url = page.url

    page.get_by_label("A rule").fill("You are a calculator.\n")
    page.get_by_role("button", name="Save pruning rules").click()
    expect(page.get_by_role("status")).to_have_text("Pruning rules saved.")
    expect(page.get_by_label("Rule 1")).to_have_value("You are a calculator.")
    with page.expect_download() as download:
        page.get_by_role("link", name="All entries").click()
    exported = [json.loads(line) for line in open(download.value.path())]
    assert len(exported) == 6 and all(m["role"] != "system" for row in exported for m in row["messages"])

    page.get_by_label("Teacher model").fill("echo")  # the scripted upstream: answers with the question upper-cased
    page.get_by_role("button", name="Relabel", exact=True).click()
    page.wait_for_url(lambda url: url != dataset_url and "/datasets/ds-" in url)
    expect(page.locator("#ds-status")).to_have_text("ready", timeout=60_000)  # followed live, then reloaded
    expect(page.locator("table.entries tbody tr")).to_have_count(6)
    expect(page.locator("table.entries")).to_contain_text("WHAT IS 5 PLUS 5?")
    expect(page.locator("table.entries tbody tr").first).to_contain_text("relabeled by echo")
    expect(page.get_by_label("Rule 1")).to_have_value("You are a calculator.")  # the parent's rules carried over
    page.evaluate("window.scrollTo(0, 0)")  # (sticky table headers follow the scroll)
    shot(page, "dataset-detail")

    page.goto("/datasets")
    expect(page.locator("table")).to_contain_text("calculator (relabeled by echo)")
    page.evaluate("window.scrollTo(0, 0)")  # (sticky table headers follow the scroll)
    shot(page, "datasets")
