"""What every catalog spider shares: its site's configuration, product bookkeeping and failure accounting.

A spider subclasses `CatalogSpider`, sets `name` (the spider name in crawl/sites.yaml) and yields
`self.product(...)` items; product pages are requested with `self.product_request(...)` so that a page that
fails still counts its product as dropped, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import scrapy
from scrapy.http import Response
from twisted.python.failure import Failure

from fashion_pipeline.crawl.items import ProductItem
from fashion_pipeline.crawl.report import DROPPED, EMPTY_LISTINGS, LISTED, PAGES_FAILED, PRODUCT_META, failure_reason
from fashion_pipeline.lib.catalog.catalog import SiteConfig, load_sites


class CatalogSpider(scrapy.Spider):
    def __init__(
        self,
        *args: Any,
        site: str | None = None,
        start_url: str = "",
        max_pages: str | int | None = None,
        categories: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # `-a site=...` lets one spider crawl several configured shops (say, two Amazon domains).
        self.site_name = site or self.name
        sites = load_sites()
        if self.site_name not in sites:
            raise ValueError(f"site {self.site_name!r} is not in crawl/sites.yaml (configured: {sorted(sites)})")
        self.site: SiteConfig = sites[self.site_name]
        # Overrides (`-a start_url=... -a max_pages=... -a categories=dress,skirt`) for a trial run or a test
        # against a loopback copy of the shop.
        self.start_url = (start_url or self.site.start_url).rstrip("/")
        self.max_pages = int(max_pages) if max_pages else self.site.max_pages
        wanted = {c.strip() for c in categories.split(",") if c.strip()}
        self.keywords = {c: k for c, k in self.site.keywords.items() if not wanted or c in wanted}
        # Product pages that failed, named in the crawl report beside the products the pipelines dropped.
        self.failed_products: list[dict[str, str]] = []

    @property
    def default_currency(self) -> str:
        """Currency of prices shown without a symbol (read by the PricePipeline)."""
        return self.site.currency

    # --- bookkeeping --------------------------------------------------------------------------------------
    def count(self, key: str, value: int = 1) -> None:
        self.crawler.stats.inc_value(key, value)

    def listed(self, n: int = 1) -> None:
        """Count products found on a listing; each must end scraped or dropped."""
        self.count(LISTED, n)

    def empty_listing(self, response: Response) -> None:
        self.logger.warning("no products on listing page %s", response.url)
        self.count(EMPTY_LISTINGS)

    def product(self, **fields: Any) -> ProductItem:
        return ProductItem(site=self.site_name, crawled_at=datetime.now(UTC).isoformat(), **fields)

    # --- requests -------------------------------------------------------------------------------------------
    def product_request(
        self, response: Response, url: str, callback: Callable, meta: dict | None = None
    ) -> scrapy.Request:
        """A request for one product's page; if it fails, the product is dropped with the failure's reason."""
        return response.follow(url, callback, errback=self.page_failed, meta={**(meta or {}), PRODUCT_META: True})

    def page_failed(self, failure: Failure) -> None:
        reason = failure_reason(failure)
        request = failure.request
        self.logger.warning("page failed (%s): %s", reason, request.url)
        if request.meta.get(PRODUCT_META):
            self.count(DROPPED + f"page failed: {reason}")
            self.failed_products.append({"url": request.url, "reason": f"page failed: {reason}"})
        else:
            self.count(PAGES_FAILED + reason)
