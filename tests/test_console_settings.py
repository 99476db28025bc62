"""Settings in headless Chromium: a new key is shown once and works, another is revoked after a confirmation and is
refused from then on; a wrong price is shown next to its field with what was typed, a right one is listed."""

from __future__ import annotations

import openai
import pytest
from console_kit import console
from playwright.sync_api import expect

pytestmark = console


def test_keys_and_prices_in_settings(page, console_server, shot):
    acme = console_server.client(console_server.keys["acme"])
    acme.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])  # a log to price

    page.goto("/settings")
    page.get_by_role("button", name="Create a key").click()
    new_key = page.get_by_label("New API key").input_value()
    assert new_key.startswith("tf-")
    assert console_server.client(new_key).models.list().data  # it works at once
    page.goto("/settings")
    expect(page.get_by_label("New API key")).to_have_count(0)  # shown once
    assert new_key not in page.content()

    page.get_by_role("link", name=f"Revoke key {new_key[:10]}").click()
    expect(page.get_by_role("heading", name="Revoke key")).to_be_visible()
    page.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_role("status")).to_contain_text(f"Key {new_key[:10]}… revoked")
    with pytest.raises(openai.AuthenticationError):
        console_server.client(new_key).models.list()

    for _ in range(20):  # the proxy's log of the call above is written within a moment
        if page.get_by_role("cell", name="echo", exact=True).count():
            break
        page.wait_for_timeout(250)
        page.reload()
    expect(page.get_by_role("cell", name="echo", exact=True)).to_be_visible()
    page.get_by_label("Model", exact=True).fill("echo")
    page.get_by_label("Input, USD per 1M tokens").fill("1,5")
    page.get_by_label("Output, USD per 1M tokens").fill("6")
    page.get_by_role("button", name="Save price").click()
    expect(page.locator("#f-input-error")).to_contain_text("a number of USD per million tokens")
    expect(page.get_by_label("Input, USD per 1M tokens")).to_have_value("1,5")  # nothing typed is lost
    expect(page.get_by_label("Model", exact=True)).to_have_value("echo")
    page.get_by_label("Input, USD per 1M tokens").fill("1.5")
    page.get_by_role("button", name="Save price").click()
    expect(page.get_by_role("status")).to_contain_text("Price for echo saved")
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name="echo", exact=True))
    expect(row).to_contain_text("$1.50")
    expect(row).to_contain_text("$6.00")
    shot(page, "settings")
    row.get_by_role("button", name="Delete your price for echo").click()  # leave the shared server as it was
    expect(page.get_by_role("row").filter(has_text="$1.50")).to_have_count(0)
