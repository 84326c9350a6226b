"""The one item every spider yields: a product as listed by a shop, filled in by the pipelines."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ProductItem:
    # Set by the spider.
    site: str
    sku: str  # the shop's own id (ASIN, demo-shop sku, ...); product_id = f"{site}:{sku}"
    name: str | None
    url: str | None  # absolute product page URL
    image_url: str | None  # absolute
    category: str | None  # one of lib.common.categories.CATEGORIES
    price_text: str | None  # the price exactly as shown; None when the page shows none
    crawled_at: str  # ISO 8601, UTC
    product_id: str = ""
    # Feeds state the amount and currency themselves; pages leave them to the PricePipeline.
    price: float | None = None
    currency: str | None = None
    price_note: str | None = None  # why there is no price, or "range a-b", "sale price", "invented"
    # What feeds add: "in stock" / "out of stock" / "preorder" / "backorder", the shop's last change,
    # and the article type and colour where a catalog names them.
    availability: str | None = None
    updated_at: str | None = None
    article_type: str | None = None
    colour: str | None = None
    # Set by the pipelines.
    price_usd: float | None = None
    image_path: str | None = None  # the downloaded image, relative to the data root
    # ImagesPipeline's input and output (lists by its convention); not exported.
    image_urls: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.product_id = self.product_id or f"{self.site}:{self.sku or ''}"
        if self.image_url and not self.image_urls:
            self.image_urls = [self.image_url]
