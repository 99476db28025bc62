"""Fine-tunes in the browser: wrong input is shown next to its field with the rest kept; a fine-tune started
from the form shows its loss curve growing while it trains (points arrive over server-sent events, the page is
never reloaded), then its model id and checkpoints once it has succeeded."""

from __future__ import annotations

import json
import re

from console_kit import console
from helpers import toy_rows
from playwright.sync_api import expect

pytestmark = console
POINTS = "document.querySelectorAll('#ft-chart svg circle').length"


def test_start_a_fine_tune_and_watch_its_loss_curve_grow_live(page, console_server, shot):
    client = console_server.client(console_server.keys["acme"])
    content = "".join(json.dumps(r) + "\n" for r in toy_rows(40, seed=3)).encode()
    uploaded = client.files.create(file=("console-toy.jsonl", content), purpose="fine-tune")
    held_out = "".join(json.dumps(r) + "\n" for r in toy_rows(4, seed=4)).encode()
    validation = client.files.create(file=("console-held-out.jsonl", held_out), purpose="fine-tune")

    page.goto("/fine-tunes")
    page.get_by_label("Base model").select_option("tiny")
    page.get_by_label("Training data").select_option(uploaded.id)
    page.get_by_label("Epochs").fill("two")
    page.get_by_label("Batch size").fill("1")
    page.get_by_label("Suffix (optional)").fill("console")
    page.get_by_role("button", name="Start fine-tune").click()
    expect(page.locator("#f-n_epochs-error")).to_contain_text("Enter auto or a number")
    expect(page.get_by_label("Epochs")).to_have_value("two")  # what was typed stays, the rest too
    expect(page.get_by_label("Suffix (optional)")).to_have_value("console")
    expect(page.get_by_label("Training data")).to_have_value(uploaded.id)
    expect(page.get_by_label("Base model")).to_have_value("tiny")

    # 40 rows x 2 epochs at batch size 1: 80 steps, a few seconds (a job writes a metrics event a second at most)
    page.get_by_label("Epochs").fill("2")
    page.get_by_label("Validation data (optional)").select_option(validation.id)
    page.get_by_role("button", name="Start fine-tune").click()
    page.wait_for_url(re.compile(r".*/fine-tunes/ftjob-[^/]+$"))
    page.evaluate("window.notReloaded = true")
    page.wait_for_function(f"{POINTS} >= 1", timeout=60_000)
    first = page.evaluate(POINTS)
    page.wait_for_function(f"{POINTS} > {first}", timeout=60_000)
    assert page.evaluate("window.notReloaded"), "the page reloaded: points must arrive live"
    expect(page.locator("#ft-progress")).to_contain_text("of 80")

    expect(page.locator("#ft-status")).to_have_text("succeeded", timeout=120_000)
    model_id = page.get_by_label("Fine-tuned model")
    expect(model_id).to_have_value(re.compile(r"^ft:tiny:acme:console:"))
    expect(page.locator("#ft-checkpoints tbody tr").first).to_contain_text(":ckpt-step-80")
    expect(page.locator("#ft-events")).to_contain_text("The job has successfully completed")
    expect(page.locator("#ft-chart .legend")).to_contain_text("validation loss")  # the last step always has it
    assert page.evaluate(POINTS) > first and page.evaluate("window.notReloaded")
    page.get_by_role("button", name="Copy model id").click()
    expect(page.locator("[data-copied]")).not_to_be_empty()
    shot(page, "fine-tune-detail")

    made = model_id.input_value()
    page.goto("/fine-tunes")
    expect(page.get_by_role("row").filter(has_text=made)).to_contain_text("succeeded")
    shot(page, "fine-tunes")
