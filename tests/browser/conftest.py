"""Fixtures for the browser tests: ComfyUI's frontend in a real headless chromium, against the real server
of the host fixtures (tests/host/fixtures.py, registered for all of tests/ by tests/conftest.py).

- ``chromium``: Debian's chromium, installed by scripts/browser.py when missing (the test command does it
  first; this makes a bare ``pytest tests/browser`` in the host's Python work too);
- ``frontend_url``: the server's address, once its user has the settings of a returning user and its input
  folder holds the image the shipped workflows load;
- ``chromium_browser``: one browser per test module (playwright's sync API), closed before any later
  module runs: while playwright's sync API is up it keeps an event loop running in this thread, and
  ``asyncio.run`` (the in-process ComfyUI of tests/host calls it) refuses to run;
- ``frontend``: a fresh context and page per test, opened at the server and waited on until the app is ready;
- ``artifacts``: where screenshots go, ``$TIPAI_ARTIFACTS/browser`` or ``out/browser`` in the checkout.

Like the host tests, these fail (never skip) when something they need is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import browser as browser_setup  # scripts/browser.py
import pytest
from host import StepFailed

from tests.browser.frontend import USER_SETTINGS, launch, open_frontend

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def chromium() -> Path:
    try:
        path, _version = browser_setup.ensure_chromium()
    except StepFailed as exc:
        pytest.fail(str(exc), pytrace=False)
    return path


@pytest.fixture(scope="session")
def frontend_url(comfy_server, example_image) -> str:
    comfy_server.post_json("/settings", USER_SETTINGS)
    return comfy_server.url


@pytest.fixture(scope="session")
def pack_display_names(comfy_server, pack_node_ids) -> dict[str, str]:
    """{node id: display name} of the pack's nodes, as /object_info gives them to the frontend."""
    info = comfy_server.get_json("/object_info")
    missing = [n for n in pack_node_ids if n not in info]
    assert not missing, f"/object_info lacks pack nodes {missing}"
    return {n: info[n]["display_name"] for n in pack_node_ids}


@pytest.fixture(scope="module")
def chromium_browser(chromium, pack_display_names):
    # pack_display_names first: the in-process ComfyUI behind pack_node_ids calls asyncio.run (see above).
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"playwright is not installed in the host ({exc}); run `python3 scripts/test.py`", pytrace=False)
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def frontend(chromium_browser, frontend_url):
    with open_frontend(chromium_browser, frontend_url) as front:
        yield front


@pytest.fixture(scope="session")
def artifacts() -> Path:
    root = Path(os.environ["TIPAI_ARTIFACTS"]) if os.environ.get("TIPAI_ARTIFACTS") else REPO / "out"
    folder = root / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
