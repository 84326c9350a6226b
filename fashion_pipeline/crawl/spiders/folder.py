"""A shop's catalog export: a folder with a CSV (one product a row) and the product images beside it.

The CSV and the images are read through Scrapy's own `file://` handler, so the rows pass through the
same pipelines and accounting as a web shop's products. Rows without links or prices get them from the
site entry (`url_template`, `price_range`), the same for the same product on every crawl.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import scrapy
from scrapy.http import Response

from fashion_pipeline.crawl.base import CatalogSpider
from fashion_pipeline.lib.catalog.feeds import FeedError, read_catalog_csv


class FolderSpider(CatalogSpider):
    name = "folder"
    image_schemes: ClassVar[tuple[str, ...]] = ("file",)  # the images beside the CSV
    # Local files: nothing to be polite to.
    custom_settings: ClassVar[dict[str, Any]] = {
        "AUTOTHROTTLE_ENABLED": False,
        "DOWNLOAD_DELAY": 0,
        "CONCURRENT_REQUESTS": 32,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 32,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.folder = self.site.local_folder()

    async def start(self) -> AsyncIterator[scrapy.Request]:
        yield scrapy.Request((self.folder / self.site.csv).as_uri(), self.parse, errback=self.page_failed)

    def parse(self, response: Response) -> Any:
        rows = read_catalog_csv(
            response.body,
            self.folder,
            site=self.site_name,
            columns=self.site.columns,
            default_currency=self.site.currency,
            keywords=self.site.category_keywords,
            url_template=self.site.url_template,
            price_range=self.site.price_range,
        )
        try:
            yield from self.feed_products(rows)
        except FeedError as exc:
            self.feed_unreadable(response, str(exc))
