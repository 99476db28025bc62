"""Models and merges in the browser: the bases are listed, and the merge form's mergekit YAML preview follows the
form as it changes (the method, a model, t), with what the method still needs said beside it."""

from __future__ import annotations

from console_kit import console
from playwright.sync_api import expect

pytestmark = console


def test_the_merge_preview_follows_the_form(page, shot):
    page.goto("/models")
    expect(page.locator("table").first).to_contain_text("tiny")
    preview = page.get_by_test_id("merge-yaml")
    expect(preview).to_contain_text("merge_method: slerp")
    expect(page.locator("#merge-preview")).to_contain_text("needs a base model")

    page.get_by_label("Name of the merged model").fill("blend")
    page.get_by_role("combobox", name="Base model").fill("tiny")
    page.get_by_label("Model 1", exact=True).fill("smollm2-135m-instruct")
    page.get_by_label("t (SLERP, NearSwap)").fill("0.3")
    expect(preview).to_contain_text("base_model: tiny")
    expect(preview).to_contain_text("t: 0.3")
    expect(page.locator("#merge-preview")).to_contain_text("ready to start")

    page.get_by_label("Method").select_option("ties")
    expect(preview).to_contain_text("merge_method: ties")
    expect(preview).not_to_contain_text("t: 0.3")
    expect(preview).to_contain_text("weight: 1.0")
    page.get_by_label("Density 1", exact=True).fill("0.5")
    expect(preview).to_contain_text("density: 0.5")

    page.get_by_label("Method").select_option("lora:ties")
    expect(preview).to_contain_text("adapters:")
    expect(page.locator("#merge-preview")).to_contain_text("an adapter merge takes 2 to 8 adapters")
    page.get_by_label("Method").select_option("slerp")
    expect(preview).to_contain_text("merge_method: slerp")
    page.evaluate("window.scrollTo(0, 0)")  # (sticky table headers follow the scroll)
    shot(page, "models")
