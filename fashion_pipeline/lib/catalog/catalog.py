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
# A site's published rows (catalog/raw/<site>/products.jsonl): the crawl's, and the last good row of each
# product it could not read (lib.catalog.site_rows): status "fresh" or "stale", why, and how many crawls
# in a row have not shown it.
RAW_COLUMNS: tuple[str, ...] = (*SCRAPED_COLUMNS, "status", "stale_reason", "missed_crawls")
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
    "status",
    "stale_reason",
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
SCRAPED_PRODUCTS_FILE = "scraped.jsonl"  # what the crawl itself wrote, beside the published rows
CRAWL_REPORT_FILE = "crawl_report.json"
CRAWL_LOG_FILE = "crawl.log"


def read_raw_products(path: Path, columns: tuple[str, ...] = RAW_COLUMNS) -> pd.DataFrame:
    """A crawl's JSON lines as a DataFrame with `columns` (an empty file gives an empty table).

    Rows published before products could be stale read as fresh.
    """
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    frame = pd.DataFrame(rows)
    for column in columns:
        if column not in frame:
            frame[column] = None
    frame = frame[list(columns)]
    for column in ("price", "price_usd"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    if "status" in columns:
        frame["status"] = frame["status"].fillna("fresh")
        frame["missed_crawls"] = pd.to_numeric(frame["missed_crawls"], errors="coerce").fillna(0).astype("int64")
    return frame


def write_raw_products(rows: pd.DataFrame, path: Path) -> None:
    """A site's rows as JSON lines (missing values as null), in RAW_COLUMNS order."""
    records = rows[list(RAW_COLUMNS)].astype(object).where(rows[list(RAW_COLUMNS)].notna(), None)
    with Path(path).open("w", encoding="utf-8") as out:
        for record in records.to_dict("records"):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


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
    `last_seen` is when the product was last read (a stale row keeps the time of its last good crawl); a
    product missing from `raw` is gone, which a site's rows allow only after two crawls missed it.
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


def missing_image_files(paths: Iterable[object], data_root: Path) -> list[str]:
    """The image paths (of a catalog or crawl, relative to `data_root`) that do not exist on disk."""
    return [str(p) for p in paths if not isinstance(p, str) or not p or not (Path(data_root) / p).is_file()]


def absolute_image_paths(catalog: pd.DataFrame, data_root: Path) -> pd.DataFrame:
    """`catalog` with its image paths made absolute, for readers that open the files (the embedder)."""
    paths = [str(Path(data_root) / p) if isinstance(p, str) and p else None for p in catalog["image_path"]]
    return catalog.assign(image_path=paths)
