"""Item pipelines, one job each, in order: validate, parse the price, convert it to USD, drop repeated
URLs, download the image, drop repeated photos. A product that fails a step is dropped with a reason
(`ProductDropped`), which the crawl report counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.http.request import NO_CALLBACK
from scrapy.pipelines.images import ImageException, ImagesPipeline
from scrapy.pipelines.media import FileException

from fashion_pipeline.crawl.items import ProductItem
from fashion_pipeline.crawl.report import IMAGES_FAILED, ProductDropped, too_large
from fashion_pipeline.lib.catalog.duplicates import DuplicateImageFinder, image_signature
from fashion_pipeline.lib.catalog.prices import PriceError, parse_price, to_usd
from fashion_pipeline.lib.catalog.urls import canonical_url, link_problem
from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.common.images import ImageError, load_image

REQUIRED_FIELDS = ("sku", "name", "url", "image_url", "category")
IMAGE_TOO_LARGE = "image too large"


def validation_problem(
    item: ProductItem,
    link_domains: Iterable[str] = (),
    image_domains: Iterable[str] = (),
    image_schemes: Iterable[str] = ("http", "https"),
) -> str | None:
    """Why `item` cannot be a catalog product, or None when it can.

    Run on the canonical link: unwrapping a redirect can turn a shop's link into another scheme or host.
    With no domains given, hosts are not checked (a parser test on a saved page).
    """
    for name in REQUIRED_FIELDS:
        value = getattr(item, name)
        if not value or not str(value).strip():
            return f"missing {name}"
    if item.category not in CATEGORIES:
        return "unknown category"
    problem = link_problem(item.url, list(link_domains) or None)
    if problem:
        return problem
    problem = link_problem(item.image_url, list(image_domains) or None, image_schemes)
    return f"image {problem}" if problem else None


class ValidationPipeline:
    """Canonical product link first, then the checks: required fields, category, links on the shop's hosts."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ValidationPipeline:
        return cls(crawler)

    def process_item(self, item: ProductItem) -> ProductItem:
        spider = self.crawler.spider
        if item.url:
            try:
                item.url = canonical_url(item.url)
            except ValueError:
                raise ProductDropped("malformed URL", str(item.url)) from None
        problem = validation_problem(
            item,
            getattr(spider, "link_domains", ()),
            getattr(spider, "image_domains", ()),
            getattr(spider, "image_schemes", ("http", "https")),
        )
        if problem:
            raise ProductDropped(problem, item.url or item.product_id)
        item.name = " ".join(item.name.split())
        return item


class PricePipeline:
    """`price_text` -> price, currency (the site's currency when the text shows no symbol), price_note.

    Feeds that state the amount keep it; a currency they state is used where the text shows no symbol.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PricePipeline:
        return cls(crawler)

    def process_item(self, item: ProductItem) -> ProductItem:
        default_currency = getattr(self.crawler.spider, "default_currency", None)
        if item.price is not None:  # a feed stated the amount (and usually the currency) itself
            item.currency = item.currency or default_currency
            return item
        if item.price_note:  # a feed said why there is no price
            return item
        parsed = parse_price(item.price_text, item.currency or default_currency)
        if parsed.amount is not None and parsed.currency is None:
            raise ProductDropped("unknown currency", f"{item.price_text!r} at {item.url}")
        item.price, item.currency, item.price_note = parsed.amount, parsed.currency, parsed.note
        return item


class UsdPricePipeline:
    """price_usd from the fixed rates table CATALOG_USD_RATES (no live FX)."""

    def __init__(self, usd_rates: dict[str, float]) -> None:
        self.usd_rates = usd_rates

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> UsdPricePipeline:
        return cls({code: float(rate) for code, rate in crawler.settings.getdict("CATALOG_USD_RATES").items()})

    def process_item(self, item: ProductItem) -> ProductItem:
        if item.price is None:
            return item
        try:
            item.price_usd = to_usd(item.price, item.currency, self.usd_rates)
        except PriceError as exc:
            raise ProductDropped(f"no USD rate for {item.currency}", str(exc)) from exc
        return item


class DuplicateUrlPipeline:
    """One product per canonical URL and per product id; the URL kept is the canonical one."""

    def __init__(self) -> None:
        self.seen_urls: dict[str, str] = {}
        self.seen_ids: set[str] = set()

    def process_item(self, item: ProductItem) -> ProductItem:
        url = canonical_url(item.url)
        if url in self.seen_urls:
            raise ProductDropped("duplicate url", f"{item.url} is {self.seen_urls[url]}")
        if item.product_id in self.seen_ids:
            raise ProductDropped("duplicate sku", f"{item.product_id} at {item.url}")
        self.seen_urls[url] = item.product_id
        self.seen_ids.add(item.product_id)
        item.url = url
        return item


class ProductImagesPipeline(ImagesPipeline):
    """Scrapy's image download, decoding with the project's one loader; a product without image is dropped."""

    def get_media_requests(self, item: ProductItem, info: Any) -> list[Request]:
        maxsize = self.crawler.settings.getint("CATALOG_IMAGE_MAXSIZE")
        return [Request(url, callback=NO_CALLBACK, meta={"download_maxsize": maxsize}) for url in item.image_urls]

    def get_images(
        self, response: Any, request: Any, info: Any, *, item: Any = None
    ) -> Iterator[tuple[str, Any, BytesIO]]:
        try:
            image = load_image(response.body)
        except ImageError as exc:
            raise ImageException(f"broken image: {exc}") from exc
        if response.body[:3] == b"\xff\xd8\xff":
            buffer = BytesIO(response.body)  # a readable JPEG is stored as served, not re-encoded
        else:
            buffer = BytesIO()
            image.save(buffer, "JPEG", quality=90)
        yield self.file_path(request, response=response, info=info, item=item), image, buffer

    def media_failed(self, failure: Any, request: Any, info: Any) -> Any:
        # Scrapy replaces every failure by a bare FileException here; keep ours, which say what went wrong.
        if isinstance(failure.value, FileException) and type(failure.value).__name__ != "_MediaRequestFiltered":
            raise failure.value
        if too_large(failure):
            raise FileException(IMAGE_TOO_LARGE)
        return super().media_failed(failure, request, info)

    def item_completed(self, results: list, item: ProductItem, info: Any) -> ProductItem:
        stored = [result for ok, result in results if ok]
        if not stored:
            failure = next((result for ok, result in results if not ok), None)
            self.crawler.stats.inc_value(IMAGES_FAILED)
            raise ProductDropped(_image_failure_reason(failure), f"{item.image_url} of {item.product_id}")
        item.images = stored
        item.image_path = str(Path(self.store.basedir, stored[0]["path"]).resolve())
        return item


def _image_failure_reason(failure: Any) -> str:
    error = getattr(failure, "value", None)
    if isinstance(error, ImageException) or str(error) == "empty-content":
        return "broken image"
    if str(error) == IMAGE_TOO_LARGE:
        return IMAGE_TOO_LARGE  # over CATALOG_IMAGE_MAXSIZE
    if type(error).__name__ == "_MediaRequestFiltered":
        return "image blocked"  # by robots.txt, for instance
    # "download-error" (a non-200 answer) and downloads that failed (timeouts, refused connections)
    return "dead image link"


class DuplicateImagePipeline:
    """One product per photo: a product showing the same picture as an earlier one (re-encoded or not) goes."""

    def __init__(self) -> None:
        self.finder = DuplicateImageFinder()

    def process_item(self, item: ProductItem) -> ProductItem:
        signature = image_signature(load_image(item.image_path))
        original = self.finder.find(signature)
        if original is not None:
            raise ProductDropped("duplicate image", f"{item.product_id} shows the photo of {original}")
        self.finder.add(item.product_id, signature)
        return item
