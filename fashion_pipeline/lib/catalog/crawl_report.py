"""What one crawl did: every product listed ends scraped or dropped with a reason, in one report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

# Dropped products named in a crawl report (all are counted). Each named one can keep its last good row,
# so the limit is far above a shop's failures on a bad day; past it, products count as not seen.
MAX_DROPS_LISTED = 100_000


@dataclass
class CrawlReport:
    """What one crawl did, written beside its JSON lines: every product listed ends scraped or dropped."""

    site: str
    listed: int = 0
    scraped: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    images_failed: int = 0
    image_bytes_written: int = 0  # bytes the crawl added to the image store (0 when every image was known)
    price_missing: int = 0
    pages_failed: dict[str, int] = field(default_factory=dict)
    listing_pages_without_products: int = 0
    # The dropped products themselves (product_id, url, image_url, reason), up to MAX_DROPS_LISTED.
    drops: list[dict[str, str]] = field(default_factory=list)
    finish_reason: str = ""
    started_at: str = ""
    finished_at: str = ""
    # What publishing made of the site's previous products (lib.catalog.site_rows.SiteUpdate.summary).
    site_update: dict = field(default_factory=dict)

    @property
    def listing_complete(self) -> bool:
        """Whether every listing page answered with products: only then does a product not shown count."""
        return not self.pages_failed and not self.listing_pages_without_products

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def accounted(self) -> bool:
        """True when every product listed is either in the output or dropped with a reason."""
        return self.listed == self.scraped + self.dropped_total

    def to_dict(self) -> dict:
        return {
            "site": self.site,
            "listed": self.listed,
            "scraped": self.scraped,
            "dropped": dict(sorted(self.dropped.items())),
            "dropped_total": self.dropped_total,
            "images_failed": self.images_failed,
            "image_bytes_written": self.image_bytes_written,
            "price_missing": self.price_missing,
            "pages_failed": dict(sorted(self.pages_failed.items())),
            "listing_pages_without_products": self.listing_pages_without_products,
            "accounted": self.accounted,
            "drops": self.drops,
            "finish_reason": self.finish_reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "site_update": self.site_update,
        }

    @classmethod
    def read(cls, path: Path) -> CrawlReport:
        raw = json.loads(Path(path).read_text())
        return cls(
            site=raw["site"],
            listed=raw["listed"],
            scraped=raw["scraped"],
            dropped=dict(raw["dropped"]),
            images_failed=raw["images_failed"],
            image_bytes_written=raw.get("image_bytes_written", 0),
            price_missing=raw.get("price_missing", 0),
            pages_failed=dict(raw.get("pages_failed", {})),
            listing_pages_without_products=raw.get("listing_pages_without_products", 0),
            drops=list(raw.get("drops", [])),
            finish_reason=raw.get("finish_reason", ""),
            started_at=raw.get("started_at", ""),
            finished_at=raw.get("finished_at", ""),
            site_update=dict(raw.get("site_update", {})),
        )
