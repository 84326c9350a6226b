"""Item pipelines, one job each, in order: validate, parse the price, convert it to USD, drop repeated
URLs, download the image, drop repeated photos. A product that fails a step is dropped with a reason
(`ProductDropped`), which the crawl report counts.
"""

from __future__ import annotations

import os
import time
import unicodedata
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
from fashion_pipeline.crawl.report import IMAGE_BYTES_WRITTEN, IMAGES_FAILED, ProductDropped, too_large
from fashion_pipeline.lib.catalog.catalog import read_raw_products
from fashion_pipeline.lib.catalog.duplicates import DuplicateImageFinder, image_signature
from fashion_pipeline.lib.catalog.image_store import content_path, resolve, store_bytes
from fashion_pipeline.lib.catalog.prices import PriceError, parse_price, to_usd
from fashion_pipeline.lib.catalog.urls import canonical_url, link_problem
from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.common.images import ImageError, load_image
from fashion_pipeline.lib.common.paths import DataPaths

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
        if item.name:
            item.name = printable_text(item.name)
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
        return item


# Invisible format characters that reorder or hide text (bidi overrides and isolates, word joiners): a name
# is shown in a terminal and a web page, where they would disguise what follows. The emoji joiner stays.
_KEPT_FORMAT_CHARACTERS = {"\u200d"}


def printable_text(text: str) -> str:
    """`text` on one line without control characters: a shop's name could carry terminal escape sequences
    (the CLI prints it) or bidi overrides. Controls (newlines and tabs too) become spaces, runs of spaces one."""
    kept = (
        " " if unicodedata.category(c) == "Cc" else c
        for c in text
        if unicodedata.category(c) != "Cf" or c in _KEPT_FORMAT_CHARACTERS
    )
    return " ".join("".join(kept).split())


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
    """Scrapy's image download into the content-addressed store (lib.catalog.image_store), decoding with the
    project's one loader; a product without an image is dropped with the reason.

    A file is named by the SHA-256 of the bytes as served (a readable JPEG is stored as it is, other formats
    as a JPEG re-encoding), written once and atomically. An image the site's previous rows already hold
    under the same link, downloaded within IMAGES_EXPIRES days, is not fetched again. Paths in the rows
    are relative to the data root (CATALOG_DATA_ROOT).
    """

    def __init__(self, store_uri: str, *, crawler: Crawler) -> None:
        super().__init__(store_uri, crawler=crawler)
        settings = crawler.settings
        self.data_root = Path(settings.get("CATALOG_DATA_ROOT") or DataPaths.from_env().root).resolve()
        self.store_root = Path(self.store.basedir).resolve()
        self.previous_images: dict[str, str] = {}
        previous = settings.get("CATALOG_PREVIOUS_PRODUCTS")
        if previous and Path(previous).is_file():
            rows = read_raw_products(Path(previous))
            self.previous_images = {
                url: path for url, path in zip(rows["image_url"], rows["image_path"], strict=True) if url and path
            }

    def get_media_requests(self, item: ProductItem, info: Any) -> list[Request]:
        maxsize = self.crawler.settings.getint("CATALOG_IMAGE_MAXSIZE")
        return [Request(url, callback=NO_CALLBACK, meta={"download_maxsize": maxsize}) for url in item.image_urls]

    def media_to_download(self, request: Request, info: Any, *, item: Any = None) -> dict | None:
        """The stored image of the same link, if still fresh; None to download it."""
        known = resolve(self.previous_images.get(getattr(item, "image_url", None) or ""), self.data_root)
        if known is None or not known.is_relative_to(self.store_root) or not known.is_file():
            return None  # never stored, removed, or in an older layout: fetch it into the store
        if time.time() - known.stat().st_mtime > self.expires * 86400:
            return None
        self.inc_stats("uptodate")
        return {"url": request.url, "path": known.relative_to(self.store_root).as_posix(), "status": "uptodate"}

    def file_path(self, request: Any, response: Any = None, info: Any = None, *, item: Any = None) -> str:
        if response is None:
            raise ValueError("a content-addressed path needs the downloaded bytes")
        return content_path(response.body)

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

    async def image_downloaded(self, response: Any, request: Any, info: Any, *, item: Any = None) -> str:
        path, _, buffer = next(self.get_images(response, request, info, item=item))
        data = buffer.getvalue()
        if store_bytes(self.store_root, path, data):
            self.crawler.stats.inc_value(IMAGE_BYTES_WRITTEN, len(data))
        return Path(path).stem  # the checksum: the served bytes' SHA-256

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
        item.image_path = os.path.relpath(self.store_root / stored[0]["path"], self.data_root)
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

    def __init__(self, data_root: Path) -> None:
        self.data_root = data_root
        self.finder = DuplicateImageFinder()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DuplicateImagePipeline:
        return cls(Path(crawler.settings.get("CATALOG_DATA_ROOT") or DataPaths.from_env().root))

    def process_item(self, item: ProductItem) -> ProductItem:
        signature = image_signature(load_image(resolve(item.image_path, self.data_root)))
        original = self.finder.find(signature)
        if original is not None:
            raise ProductDropped("duplicate image", f"{item.product_id} shows the photo of {original}")
        self.finder.add(item.product_id, signature)
        return item
