"""The playground in headless Chromium: two columns, the served base model `tiny` and the upstream's `echo`
(through the proxy), stream their replies at the same time (more than one chunk each), show the call's figures,
keep their conversations, show an error in the column it belongs to, and clear."""

from __future__ import annotations

from console_kit import console, console_client
from playwright.sync_api import expect

pytestmark = console


def replies(page):
    return page.locator(".pg-col:not([hidden]) .pg-msg.assistant")


def test_chat_in_the_playground_streams_into_both_columns(page, shot):
    page.goto("/playground")
    page.get_by_label("Columns").select_option("2")
    page.locator("#pg-model-0").select_option("tiny")  # served here
    page.locator("#pg-custom-1").fill("echo")  # a hosted model, through the proxy (signed in by the session)
    page.get_by_label("Temperature").fill("1")  # (greedy, the random model says only newlines)
    page.get_by_label("Max tokens").fill("12")
    page.get_by_label("System prompt").fill("You are terse.")
    page.get_by_label("Message").fill("Say hello.")
    page.get_by_label("Message").press("Control+Enter")  # the keyboard way to send
    expect(page.locator('.pg-msg.assistant[data-done]')).to_have_count(2, timeout=60_000)  # the engine loads first
    expect(page.locator("#pg-status")).to_contain_text("All replies in")
    for i in range(2):
        reply = replies(page).nth(i)
        assert reply.get_attribute("data-done") == "ok", reply.inner_text()
        assert int(reply.get_attribute("data-chunks")) > 1  # streamed, not one piece at the end
        assert reply.locator(".pg-text").inner_text().strip()
        expect(reply.locator(".pg-stats")).to_contain_text("completion tokens")
        expect(reply.locator(".pg-stats")).to_contain_text("first token")
    assert replies(page).nth(1).locator(".pg-text").inner_text().strip() == "SAY HELLO."  # the upstream's answer

    # the conversation goes on; a column whose model does not exist says so in that column only
    missing = "ft:tiny:acme:none:ftjob-missing"  # a name in this server's form (an upstream name would be forwarded)
    page.locator("#pg-custom-1").fill(missing)
    page.get_by_label("Message").fill("And again?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator('.pg-msg.assistant[data-done]')).to_have_count(4)
    assert replies(page).nth(2).get_attribute("data-done") == "ok"
    expect(page.locator(".pg-col").nth(0).locator(".pg-msg.user")).to_have_count(2)
    failed = page.locator(".pg-col").nth(1).locator(".pg-msg.assistant").nth(1)
    expect(failed.get_by_role("alert")).to_contain_text(f"The model `{missing}` does not exist")
    shot(page, "playground")

    page.get_by_role("button", name="Clear the conversations").click()
    expect(page.locator(".pg-msg")).to_have_count(0)
    page.get_by_role("button", name="Send").click()  # nothing to send: said next to the message box
    expect(page.locator("#pg-message-error")).to_have_text("Write a message first.")


def test_the_columns_list_the_projects_models_and_start_on_those_asked_for(console_store, tmp_path):
    from tuneforge.store import jobs, models

    db, keys, ids = console_store
    with db.session() as s:
        for project, pid in ids.items():
            job = jobs.submit(s, project_id=pid, kind="fine_tune", spec={})
            models.add_fine_tune(s, model_id=f"ft:smollm2-135m-instruct:{project}::x", project_id=pid,
                                 job_id=job.id, base="smollm2-135m-instruct", path=str(tmp_path))
    with console_client(db, keys["acme"]) as client:
        html = client.get("/playground").text
        assert "ft:smollm2-135m-instruct:acme::x" in html and "globex" not in html
        assert '<option selected>ft:smollm2-135m-instruct:acme::x</option>' in html  # the newest first
        asked = client.get("/playground", params=[("model", "smollm2-135m-instruct"), ("model", "gpt-4o-mini"),
                                                  ("model", "ft:smollm2-135m-instruct:acme::x")]).text
    assert '<option value="3" selected>' in asked  # three columns
    assert 'id="pg-custom-1" class="pg-custom" type="text" maxlength="300" value="gpt-4o-mini"' in asked
