"""Browser fixtures for e2e tests: Debian's chromium through Playwright's async API."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.e2e.portal_helpers import chromium_unavailable_reason, launch_chromium


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """A browser per test (about half a second to start; no state shared between tests)."""
    reason = chromium_unavailable_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the browser cannot run: {reason}")
        pytest.skip(reason)
    async with launch_chromium() as browser:
        yield browser


@pytest.fixture
async def page(chromium: Any) -> AsyncIterator[Any]:
    """A page 1440×900; an uncaught script error in it fails the test."""
    context = await chromium.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        await context.close()
    assert not errors, f"script errors in the page: {errors}"
