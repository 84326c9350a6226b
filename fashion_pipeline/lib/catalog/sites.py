"""The shops the catalog crawls (crawl/sites.yaml): one `SiteConfig` per entry, the USD rates table, and the
keyword map that turns a shop's own product types into the catalog's categories.

Loading never touches the network or the entries' folders (the Dagster definitions load it): a folder that
names an unset environment variable is an error only when that site is crawled (`SiteConfig.local_folder`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from fashion_pipeline.lib.common.categories import CATEGORIES

SITES_FILE = Path(__file__).resolve().parents[2] / "crawl" / "sites.yaml"
# How much of the site's previous products a crawl must see before it may replace them (`min_seen_share`).
DEFAULT_MIN_SEEN_SHARE = 0.7
_ENV_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FIELDS = {
    "spider",
    "currency",
    "recrawl",
    "start_url",
    "max_pages",
    "keywords",
    "feed_url",
    "paging",
    "page_size",
    "folder",
    "csv",
    "columns",
    "url_template",
    "price_range",
    "category_keywords",
    "allowed_domains",
    "image_domains",
    "allow_private_addresses",
    "min_seen_share",
}
_CSV_FIELDS = {"sku", "name", "category", "price", "currency", "url", "image", "article_type", "colour"}


class SiteConfigError(ValueError):
    """A site entry that cannot be crawled as written; the message names the entry and what to change."""


def sites_file() -> Path:
    """The sites configuration: `FASHION_SITES_FILE`, else the packaged crawl/sites.yaml."""
    return Path(os.environ.get("FASHION_SITES_FILE") or SITES_FILE)


@dataclass(frozen=True)
class SiteConfig:
    """One shop (an entry of crawl/sites.yaml): the spider that reads it and its settings.

    `spider` names the site type: an HTML spider (`amazon`, `darveys`, `demo_shop`) or a feed reader
    (`shopify`, `merchant_feed`, `folder`).
    """

    name: str
    spider: str
    currency: str
    recrawl: bool = False
    start_url: str = ""
    max_pages: int = 0  # listing pages to read; 0: all
    keywords: Mapping[str, str] = field(default_factory=dict)
    # Feeds: the Merchant feed's address; Shopify paging (`page` or `since_id`) and page size (at most 250).
    feed_url: str = ""
    paging: str = "page"
    page_size: int = 250
    # Folder sites: the folder (may name ${VARIABLES}), its CSV, and which CSV column holds each field.
    folder: str = ""
    csv: str = "catalog.csv"
    columns: Mapping[str, str] = field(default_factory=dict)
    # Where a CSV has no links or prices: a link made from the sku, and a price drawn from the sku in a range.
    url_template: str = ""
    price_range: tuple[float, float] | None = None
    category_keywords: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Product links must stay on these hosts (default: the start/feed URL's host); images may also come
    # from `image_domains` (CDNs). Subdomains count: "shop.example" allows "www.shop.example".
    allowed_domains: tuple[str, ...] = ()
    image_domains: tuple[str, ...] = ()
    # Loopback and private addresses are refused unless the entry allows them (our own demo shop does).
    allow_private_addresses: bool = False
    min_seen_share: float = DEFAULT_MIN_SEEN_SHARE

    @property
    def product_domains(self) -> tuple[str, ...]:
        """`allowed_domains`, else the hosts of the entry's own URLs."""
        if self.allowed_domains:
            return self.allowed_domains
        template = self.url_template.replace("{sku}", "sku")
        hosts = {urlsplit(url).hostname for url in (self.start_url, self.feed_url, template) if url}
        return tuple(sorted(h for h in hosts if h))

    def local_folder(self) -> Path:
        """The folder of a folder site, with ${VARIABLES} expanded; a clear error when it cannot be used."""
        if not self.folder:
            raise SiteConfigError(f"site {self.name!r} ({self.spider}) needs `folder:` in {sites_file()}")
        missing = [name for name in _ENV_VARIABLE.findall(self.folder) if not os.environ.get(name)]
        if missing:
            raise SiteConfigError(
                f"site {self.name!r}: folder {self.folder!r} names {', '.join(missing)}, which is not set: "
                f"export {missing[0]}=<path> (or leave this site alone)"
            )
        path = Path(_ENV_VARIABLE.sub(lambda m: os.environ[m.group(1)], self.folder)).expanduser().resolve()
        if not (path / self.csv).is_file():
            raise SiteConfigError(f"site {self.name!r}: {path / self.csv} does not exist (folder: {self.folder!r})")
        return path


def _keyword_map(raw: Mapping[str, Iterable[str]] | None, where: str) -> dict[str, tuple[str, ...]]:
    keywords = {}
    for category, words in (raw or {}).items():
        if category not in CATEGORIES:
            raise SiteConfigError(f"{where}: category_keywords has {category!r}, not one of {list(CATEGORIES)}")
        keywords[category] = tuple(str(word).lower() for word in words)
    return keywords


def _site(name: str, entry: Mapping[str, Any], path: Path, default_keywords: dict) -> SiteConfig:
    unknown = set(entry) - _FIELDS
    if unknown:
        raise SiteConfigError(f"{path}: site {name!r} has unknown settings {sorted(unknown)}")
    if "spider" not in entry or "currency" not in entry:
        raise SiteConfigError(f"{path}: site {name!r} needs `spider` and `currency`")
    columns = dict(entry.get("columns") or {})
    if set(columns) - _CSV_FIELDS:
        raise SiteConfigError(f"{path}: site {name!r} maps unknown columns {sorted(set(columns) - _CSV_FIELDS)}")
    price_range = entry.get("price_range")
    if price_range is not None and (len(price_range) != 2 or not 0 < float(price_range[0]) < float(price_range[1])):
        raise SiteConfigError(f"{path}: site {name!r}: price_range must be [low, high] with 0 < low < high")
    share = float(entry.get("min_seen_share", DEFAULT_MIN_SEEN_SHARE))
    if not 0 <= share <= 1:
        raise SiteConfigError(f"{path}: site {name!r}: min_seen_share must be between 0 and 1")
    if entry.get("paging", "page") not in ("page", "since_id"):
        raise SiteConfigError(f"{path}: site {name!r}: paging must be `page` or `since_id`")
    return SiteConfig(
        name=name,
        spider=entry["spider"],
        currency=entry["currency"],
        recrawl=bool(entry.get("recrawl", False)),
        start_url=str(entry.get("start_url", "")).rstrip("/"),
        max_pages=int(entry.get("max_pages", 0)),
        keywords=dict(entry.get("keywords") or {}),
        feed_url=str(entry.get("feed_url", "")),
        paging=entry.get("paging", "page"),
        page_size=min(int(entry.get("page_size", 250)), 250),  # Shopify's own cap
        folder=str(entry.get("folder", "")),
        csv=str(entry.get("csv", "catalog.csv")),
        columns=columns,
        url_template=str(entry.get("url_template", "")),
        price_range=(float(price_range[0]), float(price_range[1])) if price_range else None,
        category_keywords=_keyword_map(entry.get("category_keywords"), f"{path}: site {name!r}") or default_keywords,
        allowed_domains=tuple(str(d).lower() for d in entry.get("allowed_domains") or ()),
        image_domains=tuple(str(d).lower() for d in entry.get("image_domains") or ()),
        allow_private_addresses=bool(entry.get("allow_private_addresses", False)),
        min_seen_share=share,
    )


def load_sites(path: Path | None = None) -> dict[str, SiteConfig]:
    path = path or sites_file()
    raw = yaml.safe_load(Path(path).read_text()) or {}
    default_keywords = _keyword_map(raw.get("category_keywords"), str(path))
    sites = {name: _site(name, entry, path, default_keywords) for name, entry in (raw.get("sites") or {}).items()}
    if not sites:
        raise SiteConfigError(f"{path}: no `sites` configured")
    return sites


def load_usd_rates(path: Path | None = None) -> dict[str, float]:
    """US dollars per unit of each currency (a fixed table: no live FX)."""
    path = path or sites_file()
    rates = (yaml.safe_load(Path(path).read_text()).get("usd_rates") or {}).get("rates") or {}
    if "USD" not in rates:
        raise SiteConfigError(f"{path}: usd_rates.rates must list USD (1.0) and every shop currency")
    return {code: float(rate) for code, rate in rates.items()}


def load_google_category_ids(path: Path | None = None) -> dict[str, str]:
    """Google product taxonomy ids that name one of our categories (a feed may give the id, not the path)."""
    path = path or sites_file()
    table = yaml.safe_load(Path(path).read_text()).get("google_category_ids") or {}
    return {str(key): str(value) for key, value in table.items() if value in CATEGORIES}


def category_for(texts: Iterable[str | None], keywords: Mapping[str, Iterable[str]]) -> str | None:
    """The catalog category named by the first text that names one, or None.

    Texts go from most to least specific (a product type before a title before tags). Within one text the
    last keyword wins: product names end in their noun, so "Shirt Dress" is a dress and "Dress Shirt" a shirt.
    A keyword matches as a word, plural included ("dress" finds "Dresses", not "Sundress" or "Address").
    """
    patterns = [
        (category, re.compile(rf"(?<![a-z]){re.escape(word)}(?:e?s)?(?![a-z])"))
        for category, words in keywords.items()
        for word in words
    ]
    for text in texts:
        if not text:
            continue
        lowered = str(text).lower()
        found = [(match.end(), category) for category, pattern in patterns for match in pattern.finditer(lowered)]
        if found:
            return max(found)[1]
    return None
