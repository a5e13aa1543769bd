"""The browser tests' fixtures: the tiny app (one per test module), a headless Chromium, a new visitor's page.

Needs `pip install playwright` and a Chromium binary (Debian: `apt-get install -y chromium`; or set
STEADYDANCER_CHROMIUM). The tests skip, saying which is missing, when either is absent."""

import os

import pytest
from helpers.app_launcher import launch_tiny_app
from helpers.browser_page import CHROMIUM, CHROMIUM_ARGS, open_page


@pytest.fixture(scope="module")
def app(tmp_path_factory, request):
    yield from launch_tiny_app(tmp_path_factory, f"app_{request.module.__name__.rsplit('.', 1)[-1]}")


@pytest.fixture(scope="module")
def browser(app):
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set STEADYDANCER_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(app, browser):
    """A new visitor for each test (its own browser context, so its own session and history): no test depends on
    what another left on the page."""
    page = open_page(browser, app.url)
    yield page
    page.context.close()
