"""Headless Chromium for the tests: Debian's /usr/bin/chromium driven by Playwright.

Playwright never downloads a browser here: it launches the system Chromium (installed by
`.ci/run` when missing). Where Chromium or Playwright is absent the tests skip with a reason.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def screenshot_path(name: str) -> Path:
    """Where a test keeps a screenshot: ``test-artifacts/screenshots/NAME.png`` at the project
    root (git-ignored; ``TEST_ARTIFACTS`` moves it), kept after the run for a person to look at."""
    root = Path(os.environ.get("TEST_ARTIFACTS", ARTIFACTS))
    return root / "screenshots" / f"{name}.png"


def chromium_path() -> str:
    """The system Chromium, or skip the calling test with the reason."""
    path = (os.environ.get("CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser"))
    if not path:
        pytest.skip("no chromium on PATH (Debian's package 'chromium'; .ci/run installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (it is in the lock's dev extra)")
    return path


@dataclass
class PageCheck:
    """What a page did when it loaded."""

    url: str
    title: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    text: str = ""

    @property
    def broken_images(self) -> list[str]:
        """Images that did not load (not complete, or zero natural width)."""
        return [i["src"][:120] for i in self.images if not i["complete"] or i["width"] == 0]


def open_page(url: str, screenshot: Path | None = None, *, wait_for: str | None = None,
              timeout_ms: int = 30_000, wait_until: str = "networkidle") -> PageCheck:
    """Open `url` in headless Chromium; record console errors, failed requests and images.

    ``wait_until="load"`` (with ``wait_for``) for an app whose requests never all settle:
    MLflow's UI starts a telemetry web worker whose request Chromium sometimes never reports
    finished, so "networkidle" never comes (seen 2 times in 6 loads)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            check = PageCheck(url=url, title="")
            page.on("console", lambda m: check.console_errors.append(m.text)
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: check.page_errors.append(str(e)))
            page.on("requestfailed", lambda r: check.failed_requests.append(r.url))
            page.goto(url, wait_until=wait_until, timeout=timeout_ms)
            if wait_for:
                page.wait_for_selector(wait_for, timeout=timeout_ms)
            check.title = page.title()
            check.images = page.evaluate(
                "Array.from(document.images).map(i => ({src: i.src, complete: i.complete,"
                " width: i.naturalWidth}))")
            check.text = page.inner_text("body")
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
            return check
        finally:
            browser.close()
