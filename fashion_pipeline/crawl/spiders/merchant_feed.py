"""A Google Merchant product feed (RSS 2.0 or Atom with the `g:` namespace, or tab-separated) at `feed_url`.

One request for the whole feed; it may be larger than a page, so it gets its own size cap
(CATALOG_FEED_MAXSIZE). Entries without the fields a product needs are counted and dropped by validation;
rows that cannot be read at all are dropped here with their reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import scrapy
from scrapy.http import Response

from fashion_pipeline.crawl.base import CatalogSpider
from fashion_pipeline.lib.catalog.feeds import FeedError, read_merchant_feed
from fashion_pipeline.lib.catalog.sites import load_google_category_ids


class MerchantFeedSpider(CatalogSpider):
    name = "merchant_feed"

    def __init__(self, *args: Any, feed_url: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # `-a feed_url=...` points a trial run or a test at another copy of the feed.
        self.feed_url = feed_url or self.site.feed_url
        if not self.feed_url:
            raise ValueError(f"site {self.site_name!r} needs `feed_url:` in crawl/sites.yaml")

    async def start(self) -> AsyncIterator[scrapy.Request]:
        meta = {"download_maxsize": self.settings.getint("CATALOG_FEED_MAXSIZE")}
        yield scrapy.Request(self.feed_url, self.parse, errback=self.page_failed, meta=meta)

    def parse(self, response: Response) -> Any:
        rows = read_merchant_feed(
            response.body, self.site.currency, self.site.category_keywords, load_google_category_ids()
        )
        try:
            yield from self.feed_products(rows)
        except FeedError as exc:
            self.feed_unreadable(response, str(exc))
