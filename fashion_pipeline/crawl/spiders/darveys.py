"""Darveys (Magento) search results, rendered by JavaScript: every listing page goes through Chromium.

Selectors follow the markup the original Selenium crawler read: product tiles `div[data-id][data-producttype]`,
the name and link in `.product-details p a`, the sale price in `.special-price`. Lazy-loaded tiles carry the
real image in `data-src`/`data-original` while `src` is a placeholder (`/resized/?lv=`), which is skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote_plus

import scrapy
from scrapy.http import Response

from fashion_pipeline.crawl.base import CatalogSpider
from fashion_pipeline.crawl.browser import browser_meta
from fashion_pipeline.crawl.items import ProductItem

CARD = "div[data-id][data-producttype]"
PLACEHOLDER_IMAGE = "/resized/?lv="


class DarveysSpider(CatalogSpider):
    name = "darveys"

    def search_url(self, keyword: str, page: int) -> str:
        return f"{self.start_url}/catalogsearch/result/?cat=2&q={quote_plus(keyword)}&p={page}"

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for category, keyword in self.keywords.items():
            meta = browser_meta(category=category, keyword=keyword, page=1)
            yield scrapy.Request(self.search_url(keyword, 1), self.parse, errback=self.page_failed, meta=meta)

    def parse(self, response: Response) -> Any:
        products = list(self.parse_results(response, response.meta["category"]))
        page = response.meta["page"]
        if not products:
            # Darveys shows no "next" link: the search ends at the first empty page. An empty first page
            # is suspicious (a CAPTCHA, a changed layout) and makes the listing incomplete.
            if page == 1:
                self.empty_listing(response)
            return
        yield from products
        if self.may_follow(page):
            keyword = response.meta["keyword"]
            meta = browser_meta(category=response.meta["category"], keyword=keyword, page=page + 1)
            yield scrapy.Request(self.search_url(keyword, page + 1), self.parse, errback=self.page_failed, meta=meta)

    def parse_results(self, response: Response, category: str) -> Iterator[ProductItem]:
        for card in response.css(CARD):
            self.listed()
            link = card.css(".product-details p a")
            images = [card.css(f"img::attr({attribute})").get() for attribute in ("data-src", "data-original", "src")]
            image = next((i for i in images if i and PLACEHOLDER_IMAGE not in i), None)
            # The sale price when there is one, else the only price shown.
            price = " ".join(t.strip() for t in card.css(".special-price ::text").getall()).strip()
            price = price or card.css(".price::text").get()
            href = link.attrib.get("href")
            yield self.product(
                sku=card.attrib["data-id"],
                name=link.attrib.get("title") or link.css("::text").get(),
                url=response.urljoin(href) if href else None,
                image_url=response.urljoin(image) if image else None,
                category=category,
                price_text=price or None,
            )
