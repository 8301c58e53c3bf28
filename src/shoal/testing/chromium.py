"""Headless Chromium for the dashboard's browser tests and benchmark, via Playwright.

The browser is Debian's ``chromium`` package (``scripts/setup.sh`` installs
it), never one ``playwright install`` would download. :func:`skip_reason`
says why none can be driven here (no Chromium, no Playwright), else None;
:func:`browser` launches one with a fresh profile directory and quiet flags
(no sandbox, no GPU, no background networking, updates or sync), closed and
removed on exit::

    with browser() as chrome:
        page = chrome.new_page()
        page.goto(url)
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

#: Debian's Chromium.
CHROMIUM = "/usr/bin/chromium"
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
)


def skip_reason() -> str | None:
    """Why no browser can be driven here (None when one can)."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or scripts/setup.sh)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    return None


@contextlib.contextmanager
def browser(*, timeout_ms: float = 30_000) -> Iterator[Any]:
    """A launched headless Chromium (a Playwright persistent context), closed after."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="shoal-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=list(ARGS),
                viewport={"width": 1400, "height": 900},
                timeout=timeout_ms,
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
