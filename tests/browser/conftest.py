"""A real browser for the browser tests: Playwright (PyPI) driving Debian's Chromium, headless.

Chromium comes from the system (`apt-get install -y chromium`, which .ci/run
does), never from Playwright's own download. Each test gets a fresh profile
directory. Playwright's sync API runs an event loop in this thread, which
Django's async-safety check would take for async code calling the ORM; the
tests allow it (the ORM is still called from plain synchronous code).
"""

import json
import os
import time
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(autouse=True)
def _async_unsafe_allowed(monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def browser_context(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's Chromium (apt-get install -y chromium) or set CHROMIUM_PATH"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser_context, live_server):
    page = browser_context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: _console_error(msg, errors))
    # A Content-Security-Policy violation is an error of the page like any other.
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => console.error("
        "`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'} in ${e.sourceFile || "
        "e.documentURI}`));"
    )
    page.base_url = live_server.url
    page.js_errors = errors
    yield page
    page.close()


def _console_error(message, errors: list[str]) -> None:
    # Browsers ask for /favicon.ico on their own; the site has none, and that is not a page error.
    if message.type == "error" and not (message.location or {}).get("url", "").endswith("/favicon.ico"):
        errors.append(message.text)


def wait_for_js(page, expression: str, *, arg=None, timeout: float = 15_000):
    """Wait until `expression` (or function of `arg`) is truthy in the page, and return its value.

    Playwright's `wait_for_function` compiles its predicate with eval inside
    the page, which the site's Content-Security-Policy refuses; `evaluate`
    runs through the DevTools protocol, which the policy does not govern.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    deadline = time.monotonic() + timeout / 1000
    while True:
        value = page.evaluate(expression, arg)
        if value:
            return value
        if time.monotonic() >= deadline:
            raise PlaywrightTimeout(f"{expression!r} was still falsy after {timeout} ms")
        page.wait_for_timeout(50)


def screenshot(page, name: str) -> Path:
    """Keep what the browser saw as a test artifact (test-artifacts/, ignored by git)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def shown_numbers(page, panel_selector: str) -> tuple[str, list[dict]]:
    """The panel's API URL and every number it shows, read in one go (a refresh cannot interleave)."""
    return tuple(
        page.evaluate(
            """(selector) => {
                const panel = document.querySelector(selector);
                const items = [...panel.querySelectorAll('[data-api]')].map(el => ({
                    path: el.dataset.api, format: el.dataset.format, text: el.textContent.trim()}));
                return [panel.dataset.apiUrl, items];
            }""",
            panel_selector,
        )
    )


def api_json(page, url: str) -> dict:
    response = page.request.get(page.base_url + url)
    assert response.ok, (url, response.status, response.text())
    return json.loads(response.text())


def json_path(document, path: str):
    value = document
    for part in path.split("."):
        if value is None:  # the panel prints "—" for anything under a missing object
            return None
        value = value[int(part)] if isinstance(value, list) else value.get(part)
    return value


def formatted(value, kind: str) -> str:
    """What the panels print for an API value (independent of the template tag, on purpose)."""
    if value is None or value == "":
        return "—"
    return {
        "ms": lambda v: f"{v:.2f}",
        "percent": lambda v: f"{v * 100:.2f} %",
        "rate": lambda v: f"{v:.3f}",
        "int": lambda v: str(int(v)),
    }.get(kind, str)(value)


def assert_panel_matches_api(page, panel_selector: str) -> int:
    url, items = shown_numbers(page, panel_selector)
    document = api_json(page, url)
    assert items, f"{panel_selector} shows no numbers"
    for item in items:
        expected = formatted(json_path(document, item["path"]), item["format"])
        assert item["text"] == expected, f"{item['path']}: page shows {item['text']!r}, API says {expected!r}"
    return len(items)
