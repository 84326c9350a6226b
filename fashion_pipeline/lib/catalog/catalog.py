"""The product catalog: the columns of a crawl's rows and of the catalog, and merging crawls into one table.

The crawl itself runs in Scrapy (fashion_pipeline/crawl); this module holds what the crawler, the Dagster
assets and the tests share, with no Scrapy or Dagster imports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

# What a crawl writes per product (JSON lines, FEED_EXPORT_FIELDS).
SCRAPED_COLUMNS: tuple[str, ...] = (
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
    "availability",
    "updated_at",
    "article_type",
    "colour",
    "crawled_at",
)
# A site's published rows (catalog/raw/<site>/products.jsonl).
RAW_COLUMNS: tuple[str, ...] = SCRAPED_COLUMNS
# data/catalog/products.parquet, in this order: the DESIGN.md contract plus `sku`, then what feeds add.
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
    "price_note",
    "availability",
    "updated_at",
    "article_type",
    "colour",
)
# A product "changed" when one of these differs from the previous catalog.
TRACKED_FIELDS: tuple[str, ...] = (
    "name",
    "url",
    "image_url",
    "price",
    "currency",
    "category",
    "availability",
    "updated_at",
)

RAW_PRODUCTS_FILE = "products.jsonl"
CRAWL_REPORT_FILE = "crawl_report.json"
CRAWL_LOG_FILE = "crawl.log"


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


def read_site_rows(raw_dir: Path, sites: Iterable[str]) -> pd.DataFrame | None:
    """Every listed site's published rows (catalog/raw/<site>/products.jsonl) in one table; None if none."""
    paths = [Path(raw_dir) / name / RAW_PRODUCTS_FILE for name in sites]
    frames = [read_raw_products(path) for path in paths if path.is_file()]
    return pd.concat(frames, ignore_index=True) if frames else None


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
