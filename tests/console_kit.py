"""Fixtures for the web console's browser tests (a plugin of conftest.py).

One real `tuneforge serve` for all of them (a worker, the tiny random llama as base `tiny`, a scripted judge as
the upstream for `judge-*` models and the relabel teacher), one headless Chromium from Debian's `chromium` package
driven by Playwright (never a browser download), and a signed-in page per test. Every browser test belongs to the
xdist group "console", so they share that one server and browser.

`shot(page, name)` saves a screenshot of the page to $TUNEFORGE_SCREENSHOTS (`scripts/screenshots` points it at
docs/screenshots/), else to the run's temporary folder.

For the console's tests over plain HTTP (FastAPI's TestClient on the real app, in-process): `console_store` (a fresh
migrated store with keys for projects acme and globex), `console_client(db, key)` (a client signed in with `key`,
its `.csrf` and `.key` at hand), the `acme` fixture (that client for acme), and `post_signin`, `csrf_of` and `ORIGIN`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from httpx import Response

    from tuneforge.server.deps import Settings
    from tuneforge.store.db import Database

CHROMIUM = os.environ.get("TUNEFORGE_CHROMIUM", "/usr/bin/chromium")
console = pytest.mark.xdist_group("console")


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            raise AssertionError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium (scripts/chromium)")
        pytest.skip(f"no Chromium at {CHROMIUM}: run scripts/chromium (installs Debian's chromium)")


@pytest.fixture(scope="session")
def judge():
    from fake_judge import FakeJudge

    with FakeJudge() as fake:
        yield fake


@pytest.fixture(scope="session")
def console_server(tmp_path_factory, tiny_model, judge):
    """`tuneforge serve` with one worker; base model `tiny` is the tiny random llama."""
    from live_server import Server

    data_dir = tmp_path_factory.mktemp("console-data")
    with Server(data_dir, workers=1, extra=("--base", f"tiny={tiny_model}"),
                env={"TUNEFORGE_UPSTREAM_URL": judge.url}) as server:
        server.keys = {"acme": server.key("acme"), "globex": server.key("globex")}
        yield server


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module. Not for the session: Playwright's sync API keeps an event loop running in
    the thread while it is started, and the tests that run in the same process afterwards (xdist puts other
    modules there too) could not call asyncio.run()."""
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def sign_in(browser, server, project: str = "acme"):
    """A new browser context signed in with `project`'s key; returns its page. Every response the context gets is
    watched: `assert_no_server_errors(page)` (the `page` fixture calls it) fails on any 5xx."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1360, "height": 900})
    context.set_default_timeout(30_000)
    context.server_errors = []
    context.on("response", lambda r: r.status >= 500 and context.server_errors.append(f"{r.status} {r.url}"))
    page = context.new_page()
    page.goto("/signin")
    page.get_by_label("API key").fill(server.keys[project])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(server.url + "/")
    return page


def assert_no_server_errors(page) -> None:
    assert not page.context.server_errors, f"the console answered 5xx: {page.context.server_errors}"


@pytest.fixture
def page(browser, console_server):
    """A page signed in as project `acme`; the test fails if any response was a 5xx."""
    page = sign_in(browser, console_server)
    yield page
    errors = list(page.context.server_errors)
    page.context.close()
    assert not errors, f"the console answered 5xx: {errors}"


@pytest.fixture(scope="session")
def shots_dir(tmp_path_factory) -> Path:
    target = os.environ.get("TUNEFORGE_SCREENSHOTS")
    folder = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(el => el.type !== 'hidden' && el.offsetParent !== null)
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.innerText.trim())
                && !(el.type === 'submit' && el.value))
  .map(el => el.outerHTML.slice(0, 120))"""


LOW_CONTRAST = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const linear = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.offsetParent === null || el.closest("svg")) continue;
    const style = getComputedStyle(el);
    if (el.disabled || parseFloat(style.opacity) < 1) continue;
    const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) bad.push(`${ratio.toFixed(2)} < ${need}: ${el.tagName} "${el.textContent.trim().slice(0, 40)}"`);
  }
  return bad;
}"""


def assert_readable(page) -> None:
    """Every visible text has WCAG AA contrast against its background (4.5:1, 3:1 for large text)."""
    low = page.evaluate(LOW_CONTRAST)
    assert not low, f"{page.url}: text with too little contrast: {low[:10]}"


def assert_labelled(page) -> None:
    """Every visible control has a label (a <label>, aria-label or aria-labelledby; a button its text)."""
    missing = page.evaluate(UNLABELLED)
    assert not missing, f"{page.url}: controls without a label: {missing}"


@pytest.fixture
def shot(shots_dir):
    """Save a screenshot of the page (checking first that every control on it has a label and every text is
    readable)."""

    def save(page, name: str) -> Path:
        assert_labelled(page)
        assert_readable(page)
        page.evaluate("window.scrollTo(0, 0)")  # (sticky table headers land mid-page in a full shot taken scrolled)
        path = shots_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000, f"{path} looks blank (no fonts? install fonts-dejavu-core)"
        return path

    return save


# --- the console over plain HTTP (in-process) ---

ORIGIN = {"origin": "http://testserver"}  # a form sent from the TestClient's own site
CSRF = re.compile(r'X-CSRF-Token": "([^"]+)"|name="csrf_token" value="([^"]+)"')


class ConsoleStore(NamedTuple):
    db: Database
    keys: dict[str, str]  # project name -> an API key of it
    ids: dict[str, str]  # project name -> project id


@pytest.fixture
def console_store(data_dir) -> Iterator[ConsoleStore]:
    """A fresh migrated store in the test's data dir, with a key for each of projects acme and globex."""
    from tuneforge.store import projects
    from tuneforge.store.db import Database

    db = Database()
    db.migrate()
    with db.session() as s:
        keys = {p: projects.create_key(s, project=p) for p in ("acme", "globex")}
        ids = {p: projects.get_or_create(s, p).id for p in ("acme", "globex")}
    yield ConsoleStore(db, keys, ids)
    db.dispose()


def post_signin(client: TestClient, key: str, next_page: str | None = None) -> Response:
    """POST /signin with `key` (and `next_page`) from the client's own origin; asserts the 303 and returns it."""
    form = {"key": key} if next_page is None else {"key": key, "next": next_page}
    origin = {"origin": str(client.base_url).rstrip("/")}
    r = client.post("/signin", data=form, headers=origin, follow_redirects=False)
    assert r.status_code == 303, r.text
    return r


def csrf_of(client: TestClient, path: str = "/") -> str:
    """The session's CSRF token, as the page at `path` carries it (`<body hx-headers>` or a hidden csrf_token)."""
    found = CSRF.search(client.get(path).text)
    assert found, f"no CSRF token on {path}"
    return found.group(1) or found.group(2)


@contextmanager
def console_client(db: Database, key: str, settings: Settings | None = None, *,
                   app: FastAPI | None = None) -> Iterator[TestClient]:
    """A started TestClient on `app` (else a new `create_app(db, settings=settings)`) signed in with `key`; the
    session's CSRF token is its `.csrf`, the key its `.key`. Stopped when the `with` block ends."""
    from fastapi.testclient import TestClient

    from tuneforge.server.app import create_app

    with TestClient(app if app is not None else create_app(db, settings=settings)) as client:
        post_signin(client, key)
        client.csrf = csrf_of(client)
        client.key = key
        yield client


@pytest.fixture
def acme(console_store) -> Iterator[TestClient]:
    """A client signed in as project acme on `console_store`."""
    with console_client(console_store.db, console_store.keys["acme"]) as client:
        yield client
