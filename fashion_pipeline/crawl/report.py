"""Accounting for a crawl: every product listed ends up scraped or dropped with a reason, in one report.

Spiders count products as they find them (`catalog/listed`) and record pages that failed; pipelines drop
with `ProductDropped(reason)`; this extension gathers the counts from Scrapy's stats at the end of the crawl
and writes the report JSON (CATALOG_REPORT_PATH) beside the JSON-lines output.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scrapy import Request, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
    DropItem,
    IgnoreRequest,
    NotConfigured,
)
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet.error import ConnectionRefusedError, DNSLookupError, TCPTimedOutError, TimeoutError
from twisted.python.failure import Failure

from fashion_pipeline.lib.catalog.crawl_report import MAX_DROPS_LISTED, CrawlReport
from fashion_pipeline.lib.catalog.urls import canonical_url
from fashion_pipeline.lib.common.atomic import write_json

LISTED = "catalog/listed"
SCRAPED = "catalog/scraped"
DROPPED = "catalog/dropped/"
PAGES_FAILED = "catalog/pages_failed/"
IMAGES_FAILED = "catalog/images_failed"
IMAGE_BYTES_WRITTEN = "catalog/image_bytes_written"  # bytes new to the image store
PRICE_MISSING = "catalog/price_missing"
EMPTY_LISTINGS = "catalog/listing_pages_without_products"
# Request meta key marking a request whose page is one product: its failure drops that product.
PRODUCT_META = "catalog_product"


class ProductDropped(DropItem):
    """Drop a product with a short reason (the report's key) and an optional detail for the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def too_large(failure: Failure) -> bool:
    """Whether a download was cut off at its size cap (DOWNLOAD_MAXSIZE or the request's download_maxsize)."""
    return bool(failure.check(DownloadCancelledError)) and "max size" in str(failure.value)


def failure_reason(failure: Failure) -> str:
    """A short, countable reason for a failed request."""
    if too_large(failure):
        return "larger than the size cap"
    if failure.check(HttpError):
        return f"HTTP {failure.value.response.status}"
    if failure.check(DownloadTimeoutError, TimeoutError, TCPTimedOutError):
        return "timeout"
    if failure.check(IgnoreRequest):
        return str(failure.value) or "ignored"
    if failure.check(CannotResolveHostError, DNSLookupError):
        return "host not found"
    if failure.check(DownloadConnectionRefusedError, ConnectionRefusedError):
        return "connection refused"
    return type(failure.value).__name__


class CrawlReportWriter:
    """Scrapy extension: counts outcomes from signals and writes the CrawlReport when the spider closes."""

    def __init__(self, crawler: Crawler, path: Path) -> None:
        self.crawler = crawler
        self.path = path
        self.started_at = datetime.now(UTC).isoformat()
        self.drops: list[dict[str, str]] = []

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CrawlReportWriter:
        path = crawler.settings.get("CATALOG_REPORT_PATH")
        if not path:
            raise NotConfigured("CATALOG_REPORT_PATH is not set")
        writer = cls(crawler, Path(path))
        crawler.signals.connect(writer.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(writer.item_dropped, signal=signals.item_dropped)
        crawler.signals.connect(writer.item_error, signal=signals.item_error)
        crawler.signals.connect(writer.request_dropped, signal=signals.request_dropped)
        crawler.signals.connect(writer.spider_error, signal=signals.spider_error)
        crawler.signals.connect(writer.spider_closed, signal=signals.spider_closed)
        return writer

    def _inc(self, key: str) -> None:
        self.crawler.stats.inc_value(key)

    def item_scraped(self, item: Any) -> None:
        self._inc(SCRAPED)
        if getattr(item, "price", None) is None:
            self._inc(PRICE_MISSING)

    def item_dropped(self, item: Any, exception: BaseException) -> None:
        reason = getattr(exception, "reason", None) or f"dropped: {exception}"
        self._inc(DROPPED + reason)
        if len(self.drops) < MAX_DROPS_LISTED:
            fields = {name: str(getattr(item, name, "") or "") for name in ("product_id", "url", "image_url")}
            self.drops.append({**fields, "reason": reason, "detail": str(exception)})

    def item_error(self, item: Any, failure: Failure) -> None:
        self._inc(DROPPED + f"pipeline error: {type(failure.value).__name__}")

    def request_dropped(self, request: Request) -> None:
        # The scheduler's duplicate filter refused a product page already requested: a repeated listing.
        if request.meta.get(PRODUCT_META):
            self._inc(DROPPED + "duplicate listing")

    def spider_error(self, failure: Failure, response: Any) -> None:
        if response.meta.get(PRODUCT_META):
            reason = f"unparseable product page: {type(failure.value).__name__}"
            self._inc(DROPPED + reason)
            spider = self.crawler.spider
            url = canonical_url(spider.public(response.url)) if hasattr(spider, "public") else response.url
            getattr(spider, "failed_products", []).append({"url": url, "reason": reason})
        else:
            self._inc(PAGES_FAILED + f"parse error: {type(failure.value).__name__}")

    def spider_closed(self, spider: Any, reason: str) -> None:
        stats = self.crawler.stats.get_stats()

        def prefixed(prefix: str) -> dict[str, int]:
            return {key[len(prefix) :]: int(value) for key, value in stats.items() if key.startswith(prefix)}

        report = CrawlReport(
            site=getattr(spider, "site_name", spider.name),
            listed=int(stats.get(LISTED, 0)),
            scraped=int(stats.get(SCRAPED, 0)),
            dropped=prefixed(DROPPED),
            images_failed=int(stats.get(IMAGES_FAILED, 0)),
            image_bytes_written=int(stats.get(IMAGE_BYTES_WRITTEN, 0)),
            price_missing=int(stats.get(PRICE_MISSING, 0)),
            pages_failed=prefixed(PAGES_FAILED),
            listing_pages_without_products=int(stats.get(EMPTY_LISTINGS, 0)),
            drops=(self.drops + getattr(spider, "failed_products", []))[:MAX_DROPS_LISTED],
            finish_reason=reason,
            started_at=self.started_at,
            finished_at=datetime.now(UTC).isoformat(),
        )
        write_json(report.to_dict(), self.path)
