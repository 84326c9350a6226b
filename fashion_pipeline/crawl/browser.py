"""Requests rendered by Chromium through scrapy-playwright, for listings that only exist after JavaScript."""

from __future__ import annotations

from typing import Any

from scrapy_playwright.page import PageMethod

# Resource kinds the browser need not fetch to render a listing's markup.
_SKIPPED_RESOURCES = frozenset({"image", "media", "font"})


def skip_heavy_resources(request: Any) -> bool:
    """PLAYWRIGHT_ABORT_REQUEST: product images are downloaded once, by the ImagesPipeline, not the browser."""
    return request.resource_type in _SKIPPED_RESOURCES


def browser_meta(*, wait_for: str | None = None, **meta: Any) -> dict[str, Any]:
    """Request meta that sends the request through Chromium, waiting for `wait_for` (a CSS selector)."""
    methods = (
        [PageMethod("wait_for_selector", wait_for)] if wait_for else [PageMethod("wait_for_load_state", "networkidle")]
    )
    return {**meta, "playwright": True, "playwright_page_methods": methods}
