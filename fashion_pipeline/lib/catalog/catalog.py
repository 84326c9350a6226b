"""The product catalog: sites configuration, crawl reports, dedup keys, and merging crawls into one table.

The crawl itself runs in Scrapy (fashion_pipeline/crawl); this module holds what the crawler, the Dagster
assets and the tests share, with no Scrapy or Dagster imports.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd
import yaml
from PIL import Image

SITES_FILE = Path(__file__).resolve().parents[2] / "crawl" / "sites.yaml"

# data/catalog/products.parquet, in this order (the DESIGN.md contract plus `sku`).
CATALOG_COLUMNS: tuple[str, ...] = (
    "product_id",
    "site",
    "sku",
    "name",
    "url",
    "image_url",
    "image_path",
    "price",
    "currency",
    "price_usd",
    "category",
    "first_seen",
    "last_seen",
)
# What a crawl writes per product (JSON lines), before the catalog adds first_seen/last_seen.
RAW_COLUMNS: tuple[str, ...] = (
    "product_id",
    "site",
    "sku",
    "name",
    "url",
    "image_url",
    "image_path",
    "price",
    "currency",
    "price_usd",
    "price_note",
    "category",
    "crawled_at",
)
# A product "changed" when one of these differs from the previous catalog.
TRACKED_FIELDS: tuple[str, ...] = ("name", "url", "image_url", "price", "currency", "category")

RAW_PRODUCTS_FILE = "products.jsonl"
CRAWL_REPORT_FILE = "crawl_report.json"
CRAWL_LOG_FILE = "crawl.log"
MAX_DROPS_LISTED = 1000  # dropped products named in a crawl report (all are counted)

# Query parameters that only track where a click came from: they never change the product shown.
_TRACKING_PARAMS = frozenset(
    {"ref", "ref_", "tag", "qid", "sr", "keywords", "psc", "spm", "gclid", "fbclid", "crid", "sprefix"}
)


def sites_file() -> Path:
    """The sites configuration: `FASHION_SITES_FILE`, else the packaged crawl/sites.yaml."""
    return Path(os.environ.get("FASHION_SITES_FILE") or SITES_FILE)


@dataclass(frozen=True)
class SiteConfig:
    """One shop: the spider that crawls it and its crawl limits (an entry of crawl/sites.yaml)."""

    name: str
    spider: str
    currency: str
    recrawl: bool = False
    start_url: str = ""
    max_pages: int = 1
    keywords: Mapping[str, str] = field(default_factory=dict)


def load_sites(path: Path | None = None) -> dict[str, SiteConfig]:
    path = path or sites_file()
    raw = yaml.safe_load(Path(path).read_text())
    sites = {}
    for name, entry in (raw.get("sites") or {}).items():
        if "spider" not in entry or "currency" not in entry:
            raise ValueError(f"{path}: site {name!r} needs `spider` and `currency`")
        sites[name] = SiteConfig(
            name=name,
            spider=entry["spider"],
            currency=entry["currency"],
            recrawl=bool(entry.get("recrawl", False)),
            start_url=entry.get("start_url", ""),
            max_pages=int(entry.get("max_pages", 1)),
            keywords=dict(entry.get("keywords") or {}),
        )
    if not sites:
        raise ValueError(f"{path}: no `sites` configured")
    return sites


def load_usd_rates(path: Path | None = None) -> dict[str, float]:
    """US dollars per unit of each currency (a fixed table: no live FX)."""
    path = path or sites_file()
    rates = (yaml.safe_load(Path(path).read_text()).get("usd_rates") or {}).get("rates") or {}
    if "USD" not in rates:
        raise ValueError(f"{path}: usd_rates.rates must list USD (1.0) and every shop currency")
    return {code: float(rate) for code, rate in rates.items()}


def canonical_url(url: str) -> str:
    """One spelling per product page: tracking parameters, fragments and redirect wrappers removed.

    `https://Shop.example/p/1.html?ref=sale#top` and `https://shop.example/p/1.html` are the same product.
    The path is kept as written (some shops need their trailing slash), so the result stays a working link.
    Ad redirects that carry the target in a `url` parameter (Amazon's `/gp/slredirect/...`) are unwrapped.
    """
    parts = urlsplit(url.strip())
    query = parse_qsl(parts.query, keep_blank_values=True)
    target = dict(query).get("url")
    if target and ("redirect" in parts.path.lower()) and target.startswith(("/", "http")):
        unwrapped = target  # parse_qsl has already percent-decoded it
        if unwrapped.startswith("/"):
            unwrapped = urlunsplit((parts.scheme, parts.netloc, "", "", "")) + unwrapped
        return canonical_url(unwrapped)
    kept = sorted(
        (key, value)
        for key, value in query
        if key.lower() not in _TRACKING_PARAMS and not key.lower().startswith("utm_")
    )
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", urlencode(kept), ""))


@dataclass(frozen=True)
class ImageSignature:
    """What identifies a photo through re-encoding and resizing: its pHash and an 8x8 colour thumbnail."""

    phash: int  # 64-bit perceptual hash (imagehash.phash)
    thumbnail: np.ndarray  # (8, 8, 3) float32, box-averaged RGB


def image_signature(image: Image.Image) -> ImageSignature:
    import imagehash

    bits = np.packbits(imagehash.phash(image).hash.ravel())
    thumbnail = np.asarray(image.convert("RGB").resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
    return ImageSignature(phash=int.from_bytes(bits.tobytes(), "big"), thumbnail=thumbnail)


class DuplicateImageFinder:
    """Finds an earlier photo that is the same picture as a new one (re-encoded, resized or identical).

    pHash alone is not enough for product shots: photos of similar garments on a plain background are
    often a few bits apart, and pHash ignores colour, so a red and a blue variant of one cut would collide.
    A candidate within `max_phash_distance` bits must also match the colour thumbnail within
    `max_colour_difference` (mean absolute difference, 0-255). Measured on the generated demo shop's 528
    crops: copies re-encoded at JPEG quality 60 or resized to 2/3 differ by at most 4 bits and 2.3;
    distinct products differ by 7.6 or more in colour even where their pHashes are close.
    """

    def __init__(self, max_phash_distance: int = 8, max_colour_difference: float = 4.0) -> None:
        self.max_phash_distance = max_phash_distance
        self.max_colour_difference = max_colour_difference
        self._keys: list[str] = []
        self._hashes: list[int] = []
        self._thumbnails: list[np.ndarray] = []

    def find(self, signature: ImageSignature) -> str | None:
        """The key of an earlier image showing the same photo, or None."""
        if not self._hashes:
            return None
        hashes = np.array(self._hashes, dtype=np.uint64)
        distances = np.bitwise_count(hashes ^ np.uint64(signature.phash))
        for index in np.flatnonzero(distances <= self.max_phash_distance):
            difference = float(np.abs(self._thumbnails[index] - signature.thumbnail).mean())
            if difference <= self.max_colour_difference:
                return self._keys[index]
        return None

    def add(self, key: str, signature: ImageSignature) -> None:
        self._keys.append(key)
        self._hashes.append(signature.phash)
        self._thumbnails.append(signature.thumbnail)


@dataclass
class CrawlReport:
    """What one crawl did, written beside its JSON lines: every product listed ends scraped or dropped."""

    site: str
    listed: int = 0
    scraped: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    images_failed: int = 0
    price_missing: int = 0
    pages_failed: dict[str, int] = field(default_factory=dict)
    listing_pages_without_products: int = 0
    # The dropped products themselves (product_id, url, image_url, reason), up to MAX_DROPS_LISTED.
    drops: list[dict[str, str]] = field(default_factory=list)
    finish_reason: str = ""
    started_at: str = ""
    finished_at: str = ""

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
            "price_missing": self.price_missing,
            "pages_failed": dict(sorted(self.pages_failed.items())),
            "listing_pages_without_products": self.listing_pages_without_products,
            "accounted": self.accounted,
            "drops": self.drops,
            "finish_reason": self.finish_reason,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
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
            price_missing=raw.get("price_missing", 0),
            pages_failed=dict(raw.get("pages_failed", {})),
            listing_pages_without_products=raw.get("listing_pages_without_products", 0),
            drops=list(raw.get("drops", [])),
            finish_reason=raw.get("finish_reason", ""),
            started_at=raw.get("started_at", ""),
            finished_at=raw.get("finished_at", ""),
        )


def read_raw_products(path: Path) -> pd.DataFrame:
    """A crawl's JSON lines as a DataFrame with RAW_COLUMNS (an empty file gives an empty table)."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    frame = pd.DataFrame(rows)
    for column in RAW_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame = frame[list(RAW_COLUMNS)]
    for column in ("price", "price_usd"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame


@dataclass(frozen=True)
class CatalogChanges:
    """Products since the previous catalog: new ids, ids with a tracked field changed, ids gone."""

    new: list[str]
    changed: list[str]
    gone: list[str]
    unchanged: int


def _same(a: object, b: object) -> bool:
    if pd.isna(a) and pd.isna(b):  # type: ignore[arg-type]
        return True
    return a == b


def merge_catalog(raw: pd.DataFrame, previous: pd.DataFrame | None) -> tuple[pd.DataFrame, CatalogChanges]:
    """Combine the sites' current crawls into the catalog, carrying `first_seen` over from `previous`.

    `raw` holds RAW_COLUMNS for every site (already deduplicated within each site by the crawl).
    `last_seen` is when the product was last crawled; a product missing from `raw` is gone.
    """
    duplicated = raw["product_id"][raw["product_id"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"product ids listed twice across the crawls: {list(duplicated)[:5]}")
    current = raw.copy()
    crawled_at = pd.to_datetime(current["crawled_at"], utc=True)
    current["last_seen"] = crawled_at
    current["first_seen"] = crawled_at
    new: list[str] = list(current["product_id"])
    changed: list[str] = []
    gone: list[str] = []
    if previous is not None and len(previous):
        before = previous.set_index("product_id")
        known = current["product_id"].isin(before.index)
        first_seen = pd.to_datetime(before["first_seen"], utc=True)
        current.loc[known, "first_seen"] = current.loc[known, "product_id"].map(first_seen)
        new = list(current.loc[~known, "product_id"])
        for row in current.loc[known].itertuples(index=False):
            old = before.loc[row.product_id]
            if not all(_same(getattr(row, name), old[name]) for name in TRACKED_FIELDS if name in old):
                changed.append(row.product_id)
        gone = sorted(set(before.index) - set(current["product_id"]))
    catalog = current[list(CATALOG_COLUMNS)].sort_values("product_id", ignore_index=True)
    unchanged = len(catalog) - len(new) - len(changed)
    return catalog, CatalogChanges(new=sorted(new), changed=sorted(changed), gone=gone, unchanged=unchanged)


def missing_image_files(paths: Iterable[object]) -> list[str]:
    """The image paths (of a catalog or crawl) that do not exist on disk."""
    return [str(p) for p in paths if not isinstance(p, str) or not p or not Path(p).is_file()]
