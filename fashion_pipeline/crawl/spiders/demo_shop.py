"""The generated demo shop (lib/samples/demo_shop.py), served on 127.0.0.1 for the duration of the crawl.

Home -> category listings (paginated; one rendered client-side, fetched through Chromium) -> product pages.
Run: `scrapy crawl demo_shop -a base_url=http://127.0.0.1:PORT` (the catalog_raw asset does this).
The shop lives on that port only during the crawl, so product and image links are recorded under the
stable `public_url` (`FASHION_DEMO_SHOP_URL`, default lib.samples.demo_shop.DEFAULT_PUBLIC_URL); images are
still downloaded from the live server. The shop's links are relative, so they resolve against the page read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import scrapy
from scrapy.http import Response

from fashion_pipeline.crawl.base import CatalogSpider
from fashion_pipeline.crawl.browser import browser_meta
from fashion_pipeline.crawl.report import DROPPED
from fashion_pipeline.lib.samples.demo_shop import public_url as default_public_url


class DemoShopSpider(CatalogSpider):
    name = "demo_shop"
    # Our own loopback server: no need to throttle, and the crawl should take seconds.
    custom_settings: ClassVar[dict[str, Any]] = {
        "AUTOTHROTTLE_ENABLED": False,
        "DOWNLOAD_DELAY": 0,
        "CONCURRENT_REQUESTS": 32,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 32,
    }

    def __init__(self, *args: Any, base_url: str = "", public_url: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not base_url:
            raise ValueError(
                "demo_shop needs -a base_url=http://127.0.0.1:PORT: serve the shop first "
                "(lib.samples.demo_shop_site.serve_directory; the catalog_raw asset does it for you)"
            )
        self.base_url = base_url.rstrip("/")
        self.public_url = public_url.rstrip("/") if public_url else default_public_url()

    def public(self, url: str) -> str:
        """The link users get for a page of the shop served at `base_url` during the crawl."""
        return self.public_url + url[len(self.base_url) :] if url.startswith(self.base_url) else url

    async def start(self) -> AsyncIterator[scrapy.Request]:
        yield scrapy.Request(f"{self.base_url}/index.html", self.parse, errback=self.page_failed)

    def parse(self, response: Response) -> Any:
        for link in response.css("nav a.category-link"):
            meta = {"category": link.attrib["data-category"]}
            yield response.follow(link, self.parse_listing, errback=self.page_failed, meta=meta)

    def parse_listing(self, response: Response) -> Any:
        category = response.meta["category"]
        cards = response.css(".product-card")
        if not cards and response.css("[data-client-rendered]") and not response.meta.get("playwright"):
            # The listing is rendered by JavaScript: fetch this page again through the browser.
            meta = browser_meta(wait_for="body[data-rendered]", category=category)
            yield response.request.replace(meta=meta, dont_filter=True)
            return
        if not cards:
            self.empty_listing(response)
        for card in cards:
            href = card.css("a.product-link::attr(href)").get()
            self.listed()
            if not href:
                self.count(DROPPED + "missing url")
                continue
            yield self.product_request(response, href, self.parse_product, meta={"category": category})
        next_page = response.css("a[rel=next]::attr(href)").get()
        if next_page:
            meta = (
                browser_meta(wait_for="body[data-rendered]", category=category)
                if response.meta.get("playwright")
                else {"category": category}
            )
            yield response.follow(next_page, self.parse_listing, errback=self.page_failed, meta=meta)

    def parse_product(self, response: Response) -> Any:
        image = response.css("img.product-image::attr(src)").get()
        image_url = response.urljoin(image) if image else None
        yield self.product(
            sku=response.css('meta[itemprop="sku"]::attr(content)').get() or "",
            name=response.css("h1::text").get(),
            url=self.public(response.url),
            image_url=self.public(image_url) if image_url else None,
            image_urls=[image_url] if image_url else [],
            category=response.css("a.category::attr(data-category)").get() or response.meta.get("category"),
            price_text=response.css('[itemprop="price"]::text').get(),
        )
