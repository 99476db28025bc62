"""The web console in headless Chromium: signing in and out, the request logs (filter, build a dataset from
selected rows), and a screenshot of each page."""

from __future__ import annotations

from console_kit import assert_no_server_errors, console, sign_in

pytestmark = console


def test_sign_in_shows_the_overview_and_sign_out_ends_the_session(browser, console_server, shot):
    page = sign_in(browser, console_server)
    assert page.get_by_role("navigation", name="Main").is_visible()
    shot(page, "overview")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/signin")
    page.goto("/logs")
    page.wait_for_url("**/signin?next=%2Flogs")
    assert_no_server_errors(page)
    page.context.close()
