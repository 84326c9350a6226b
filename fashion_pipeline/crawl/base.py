"""What every catalog spider shares: its site's configuration, product bookkeeping and failure accounting.

A spider subclasses `CatalogSpider`, sets `name` (the spider name in crawl/sites.yaml) and yields
`self.product(...)` items; product pages are requested with `self.product_request(...)` so that a page that
fails still counts its product as dropped, with the reason. Feed readers hand over `FeedRow`s through
`self.feed_products(...)`, which counts each entry and drops the unusable ones with their reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, ClassVar
from urllib.parse import urlsplit

import scrapy
from scrapy.http import Response
from twisted.python.failure import Failure

from fashion_pipeline.crawl.items import ProductItem
from fashion_pipeline.crawl.report import DROPPED, EMPTY_LISTINGS, LISTED, PAGES_FAILED, PRODUCT_META, failure_reason
from fashion_pipeline.lib.catalog.feeds import FeedRow
from fashion_pipeline.lib.catalog.sites import SiteConfig, load_sites
from fashion_pipeline.lib.catalog.urls import canonical_url


class CatalogSpider(scrapy.Spider):
    # Where this kind of shop keeps its images besides its own hosts, and the link schemes they may use.
    image_cdns: ClassVar[tuple[str, ...]] = ()
    image_schemes: ClassVar[tuple[str, ...]] = ("http", "https")

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
        self.max_pages = int(max_pages) if max_pages else self.site.max_pages  # 0: no limit
        wanted = {c.strip() for c in categories.split(",") if c.strip()}
        self.keywords = {c: k for c, k in self.site.keywords.items() if not wanted or c in wanted}
        # Product pages that failed, named in the crawl report beside the products the pipelines dropped.
        self.failed_products: list[dict[str, str]] = []

    @property
    def default_currency(self) -> str:
        """Currency of prices shown without a symbol (read by the PricePipeline)."""
        return self.site.currency

    def may_follow(self, page: int) -> bool:
        """Whether the page after `page` is within `max_pages` (0 means no limit)."""
        return not self.max_pages or page < self.max_pages

    def public(self, url: str) -> str:
        """The link users get for a page fetched at `url` (the same, unless the shop is served elsewhere)."""
        return url

    @cached_property
    def link_domains(self) -> tuple[str, ...]:
        """Hosts product links may point to: the entry's domains and the shop's own host as users see it."""
        urls = (self.start_url, getattr(self, "base_url", ""))
        own = {urlsplit(self.public(url)).hostname for url in urls if url}
        return tuple(sorted({*self.site.product_domains, *(host for host in own if host)}))

    @cached_property
    def image_domains(self) -> tuple[str, ...]:
        return tuple(sorted({*self.link_domains, *self.site.image_domains, *self.image_cdns}))

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

    def drop_listed(self, reason: str) -> None:
        """A listed entry that cannot become an item at all (a malformed feed row): dropped with `reason`."""
        self.count(DROPPED + reason)

    def feed_products(self, rows: Iterable[FeedRow]) -> Iterator[ProductItem]:
        """Items for the usable feed rows; every row counts as listed, the unusable ones as dropped."""
        for row in rows:
            self.listed()
            if row.problem:
                self.drop_listed(row.problem)
            else:
                yield self.product(**row.fields)

    def feed_unreadable(self, response: Response, problem: str) -> None:
        """A feed (page) that cannot be read: a failed listing page, so its products count as unseen."""
        self.logger.warning("unreadable feed %s: %s", response.url, problem)
        self.count(PAGES_FAILED + "unreadable feed")

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
            # Named by the link the catalog records for it, so its last good row can be found again.
            url = canonical_url(self.public(request.url))
            self.failed_products.append({"url": url, "reason": f"page failed: {reason}"})
        else:
            self.count(PAGES_FAILED + reason)
