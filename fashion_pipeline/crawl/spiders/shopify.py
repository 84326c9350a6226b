"""A Shopify storefront through its public `/products.json`, page by page (`limit` up to 250).

Paging is by `page` (the default) or `since_id` (the site entry's `paging`); a page with no products ends
the listing. A shop that ignores the paging parameter would hand back the same page forever: a page
whose products were all seen already ends the crawl as a failed listing page instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar
from urllib.parse import urlencode

import scrapy
from scrapy.http import Response

from fashion_pipeline.crawl.base import CatalogSpider
from fashion_pipeline.crawl.report import PAGES_FAILED
from fashion_pipeline.lib.catalog.feeds import FeedError, read_shopify_page, shopify_row


class ShopifySpider(CatalogSpider):
    name = "shopify"
    image_cdns: ClassVar[tuple[str, ...]] = ("cdn.shopify.com",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen_ids: set[str] = set()

    def page_request(self, page: int, since_id: int = 0) -> scrapy.Request:
        query: dict[str, int] = {"limit": self.site.page_size}
        query.update({"since_id": since_id} if self.site.paging == "since_id" else {"page": page})
        url = f"{self.start_url}/products.json?{urlencode(query)}"
        return scrapy.Request(url, self.parse, errback=self.page_failed, meta={"page": page})

    async def start(self) -> AsyncIterator[scrapy.Request]:
        yield self.page_request(1)

    def parse(self, response: Response) -> Any:
        page = response.meta["page"]
        try:
            products = read_shopify_page(response.body)
        except FeedError as exc:
            self.feed_unreadable(response, str(exc))
            return
        if not products:
            if page == 1:
                self.empty_listing(response)
            return
        ids = {str(p.get("id")) for p in products if isinstance(p, dict)}
        if ids and ids <= self.seen_ids:
            self.logger.warning("page %s repeats products already seen: the shop ignores paging", response.url)
            self.count(PAGES_FAILED + "paging repeats itself")
            return
        self.seen_ids |= ids
        rows = (shopify_row(product, self.start_url, self.site.category_keywords) for product in products)
        yield from self.feed_products(rows)
        if self.may_follow(page):
            numeric = [int(i) for i in ids if i.isdigit()]
            yield self.page_request(page + 1, since_id=max(numeric, default=0))
