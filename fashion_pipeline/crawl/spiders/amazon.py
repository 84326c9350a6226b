"""Amazon search results, one search per catalog category keyword (crawl/sites.yaml), `max_pages` deep.

Products are read from the result cards (`div[data-component-type="s-search-result"]` with `data-asin`);
cards in the older markup (`li.s-result-item`) are read where their fields can be found. A card whose
name, link or image cannot be found still counts: the validation pipeline drops it with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote_plus

import scrapy
from parsel import Selector
from scrapy.http import Response

from fashion_pipeline.crawl.base import CatalogSpider
from fashion_pipeline.crawl.items import ProductItem

CARD = 'div[data-component-type="s-search-result"][data-asin]'
LEGACY_CARD = "li.s-result-item[data-asin]"
# Each field's selectors, today's markup first, then the older one.
NAME = ("h2 a span::text", "h2::attr(data-attribute)", "h2 span::text", "a.s-access-detail-page::attr(title)")
LINK = ("h2 a::attr(href)", "a.s-access-detail-page::attr(href)", 'a[href*="/dp/"]::attr(href)')
IMAGE = ("img.s-image::attr(src)", "img.s-access-image::attr(src)")
# The offscreen text is the whole price with its symbol; struck-through list prices (a-text-price) are skipped.
PRICE = (
    "span.a-price:not(.a-text-price) span.a-offscreen::text",
    "span.a-price:not(.a-text-price) span.a-price-whole::text",
    "span.s-price::text",
    "span.a-color-price::text",
)
NEXT_PAGE = ("a.s-pagination-next::attr(href)", "ul.a-pagination li.a-last a::attr(href)", "a#pagnNextLink::attr(href)")


def first(selector: Selector, queries: tuple[str, ...]) -> str | None:
    for query in queries:
        value = selector.css(query).get()
        if value and value.strip():
            return value.strip()
    return None


class AmazonSpider(CatalogSpider):
    name = "amazon"

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for category, keyword in self.keywords.items():
            url = f"{self.start_url}/s?k={quote_plus(keyword)}"
            meta = {"category": category, "page": 1}
            yield scrapy.Request(url, self.parse, errback=self.page_failed, meta=meta)

    def parse(self, response: Response) -> Any:
        products = list(self.parse_results(response, response.meta["category"]))
        if not products:
            self.empty_listing(response)
        yield from products
        page = response.meta.get("page", 1)
        next_page = first(response, NEXT_PAGE)
        if next_page and self.may_follow(page):
            meta = {"category": response.meta["category"], "page": page + 1}
            yield response.follow(next_page, self.parse, errback=self.page_failed, meta=meta)

    def parse_results(self, response: Response, category: str) -> Iterator[ProductItem]:
        """One item per result card with an ASIN; fields that cannot be found are left empty."""
        cards = response.css(CARD) or response.css(LEGACY_CARD)
        for card in cards:
            asin = card.attrib.get("data-asin", "").strip()
            if not asin:
                continue  # layout blocks (ads, "related searches") share the class but carry no product
            self.listed()
            link = first(card, LINK)
            image = first(card, IMAGE)
            price = first(card, PRICE)
            if price and price == first(card, PRICE[1:2]):
                # Only the whole part was found ("1,299."): add the fraction when the card shows one.
                price = price.rstrip(".") + "." + (card.css("span.a-price-fraction::text").get() or "00")
            yield self.product(
                sku=asin,
                name=first(card, NAME),
                # /dp/<ASIN> is the product's canonical page, whatever tracking or ad redirect the card links.
                url=response.urljoin(f"/dp/{asin}") if link else None,
                image_url=response.urljoin(image) if image else None,
                category=category,
                price_text=price,
            )
