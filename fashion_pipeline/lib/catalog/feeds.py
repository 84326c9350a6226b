"""Product feeds as shops publish them, read into the fields of one catalog product each.

- Shopify storefronts: the public `/products.json` (paged with `limit` and `page` or `since_id`).
- Google Merchant product feeds: RSS 2.0 or Atom with the `g:` namespace, or the tab-separated form,
  as documented in Merchant Center's product data specification.
- A shop's own catalog export: a folder of images plus a CSV (`read_catalog_csv`).

Each reader yields one `FeedRow` per product entry: the product's fields, or the reason the entry is
unusable (a row with the wrong number of fields, an image path outside the folder), so the crawl counts
every entry it saw. Prices keep the feed's own amount and currency; no text guessing is needed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

from lxml import etree

from fashion_pipeline.lib.catalog.prices import parse_number
from fashion_pipeline.lib.catalog.sites import category_for
from fashion_pipeline.lib.common.categories import CATEGORIES

GOOGLE_NS = "http://base.google.com/ns/1.0"
ATOM_NS = "http://www.w3.org/2005/Atom"
# Merchant Center's availability values, and the older spellings feeds still carry.
_AVAILABILITY = {
    "in stock": "in stock",
    "in_stock": "in stock",
    "available for order": "in stock",
    "out of stock": "out of stock",
    "out_of_stock": "out of stock",
    "preorder": "preorder",
    "backorder": "backorder",
}
_AMOUNT_AND_CODE = re.compile(r"^\s*(?:([A-Za-z]{3})\s+)?([0-9][0-9.,]*)\s*(?:([A-Za-z]{3}))?\s*$")
# Refuses entity expansion and network access while parsing a feed (XXE, "billion laughs").
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)


class FeedError(ValueError):
    """A feed (or one page of it) that cannot be read at all."""


@dataclass
class FeedRow:
    """One product entry of a feed: its fields for the catalog, or why it cannot be one (`problem`)."""

    fields: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


def _text(value: object) -> str | None:
    text = " ".join(str(value).split()) if value is not None else ""
    return text or None


def parse_amount(text: str | None, default_currency: str | None = None) -> tuple[float | None, str | None]:
    """A feed price ("15.00 USD", "USD 15.00", "15.00") -> (15.0, "USD"); (None, None) when unreadable."""
    match = _AMOUNT_AND_CODE.match(text or "")
    if not match:
        return None, None
    code = (match.group(1) or match.group(3) or default_currency or "").upper() or None
    number = match.group(2)
    # Feeds write a decimal point and no grouping ("1299.00", "12.500" dinars); anything else is parsed
    # the way shop pages are.
    amount = float(number) if re.fullmatch(r"\d+(\.\d+)?", number) else parse_number(number)
    return amount, code


# --- Shopify ----------------------------------------------------------------------------------------------


def read_shopify_page(body: bytes) -> list[Mapping[str, Any]]:
    """The product objects of one `/products.json` page."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeedError(f"not JSON ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("products"), list):
        raise FeedError('no "products" list')
    return data["products"]


def shopify_row(product: object, shop_url: str, keywords: Mapping[str, tuple[str, ...]]) -> FeedRow:
    """One Shopify product object as catalog fields.

    The price is the lowest price among variants that are available; a product with none available is
    kept at its lowest price and marked out of stock. The link is the storefront's `/products/<handle>`.
    """
    if not isinstance(product, Mapping):
        return FeedRow(problem="malformed product entry")
    handle = _text(product.get("handle"))
    images = [i for i in product.get("images") or [] if isinstance(i, Mapping) and _text(i.get("src"))]
    images.sort(key=lambda image: image.get("position") or 0)
    prices: list[tuple[float, bool]] = []
    for variant in product.get("variants") or []:
        if isinstance(variant, Mapping):
            amount, _ = parse_amount(str(variant.get("price") or ""))
            if amount is not None:
                prices.append((amount, bool(variant.get("available", True))))
    available = [amount for amount, in_stock in prices if in_stock]
    price = min(available) if available else min((amount for amount, _ in prices), default=None)
    tags = product.get("tags") or []
    tags = tags.split(",") if isinstance(tags, str) else [str(tag) for tag in tags]  # older shops: one string
    title = _text(product.get("title"))
    return FeedRow(
        {
            "sku": _text(product.get("id")) or handle,
            "name": title,
            "url": f"{shop_url}/products/{quote(handle)}" if handle else None,
            # Shopify writes protocol-relative CDN links ("//cdn.shopify.com/..."): resolve against the shop.
            "image_url": urljoin(f"{shop_url}/", _text(images[0]["src"])) if images else None,
            "category": category_for([product.get("product_type"), title, " , ".join(tags)], keywords),
            "price": price,
            "price_text": f"{price:.2f}" if price is not None else None,
            "availability": ("in stock" if available else "out of stock") if prices else None,
            "updated_at": _text(product.get("updated_at")),
        }
    )


# --- Google Merchant ------------------------------------------------------------------------------------


def sale_applies(effective: str | None, now: datetime) -> bool:
    """Whether a `sale_price_effective_date` ("start/end", ISO 8601) covers `now`; no date means always."""
    if not effective:
        return True
    try:
        start, end = (datetime.fromisoformat(part.strip()) for part in effective.split("/"))
    except ValueError:
        return True  # an unreadable period does not hide a sale price the shop published
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    return start <= now <= end


def merchant_row(
    attributes: Mapping[str, str | None],
    default_currency: str,
    keywords: Mapping[str, tuple[str, ...]],
    category_ids: Mapping[str, str],
    now: datetime | None = None,
) -> FeedRow:
    """One Merchant feed entry (attribute name -> text, `g:` prefix dropped) as catalog fields."""
    now = now or datetime.now(UTC)
    price, currency = parse_amount(attributes.get("price"), default_currency)
    sale, sale_currency = parse_amount(attributes.get("sale_price"), default_currency)
    note = None
    if (
        sale is not None
        and sale_currency == currency
        and sale_applies(attributes.get("sale_price_effective_date"), now)
    ):
        note = f"sale price (regular {price:g} {currency})" if price is not None else "sale price"
        price = sale
    if price is None and attributes.get("price"):
        note = f"unreadable price {attributes['price']!r}"
    google_category = _text(attributes.get("google_product_category"))
    availability = _text(attributes.get("availability"))
    return FeedRow(
        {
            "sku": _text(attributes.get("id")),
            "name": _text(attributes.get("title")),
            "url": _text(attributes.get("link")),
            "image_url": _text(attributes.get("image_link")),
            # A taxonomy id ("2271") names the category directly; a path is read like a product type.
            "category": category_ids.get(google_category or "")
            or category_for([attributes.get("product_type"), google_category, attributes.get("title")], keywords),
            "price": price,
            "currency": currency if price is not None else None,
            "price_text": attributes.get("price"),
            "price_note": note,
            "availability": _AVAILABILITY.get(availability.lower(), availability.lower()) if availability else None,
            "colour": _text(attributes.get("color")),
        }
    )


def _xml_entries(body: bytes) -> Iterator[dict[str, str | None]]:
    try:
        root = etree.fromstring(body, parser=_XML_PARSER)
    except etree.XMLSyntaxError as exc:
        raise FeedError(f"not well-formed XML ({exc})") from exc
    if etree.QName(root).localname == "rss":
        entries = root.iterfind("channel/item")
    elif root.tag == f"{{{ATOM_NS}}}feed":
        entries = root.iterfind(f"{{{ATOM_NS}}}entry")
    else:
        raise FeedError(f"neither RSS 2.0 nor Atom (root element <{etree.QName(root).localname}>)")
    for entry in entries:
        attributes: dict[str, str | None] = {}
        for child in entry:
            if not isinstance(child.tag, str):
                continue
            qname = etree.QName(child)
            name = qname.localname
            if qname.namespace == GOOGLE_NS:
                attributes[name] = child.text  # g: attributes win over the plain RSS/Atom ones
            elif qname.namespace in (None, ATOM_NS) and name in ("title", "link", "id", "description"):
                value = child.get("href") if qname.namespace == ATOM_NS and name == "link" else child.text
                attributes.setdefault(name, value)
        yield attributes


def _tsv_entries(body: bytes) -> Iterator[dict[str, str | None] | str]:
    text = body.decode("utf-8-sig", errors="replace")
    rows = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(rows, None)
    if not header or "id" not in [h.strip().removeprefix("g:") for h in header]:
        raise FeedError("tab-separated feed without a header row naming `id`")
    names = [h.strip().removeprefix("g:") for h in header]
    for values in rows:
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(names):
            yield f"malformed row ({len(values)} fields, the header has {len(names)})"
            continue
        yield dict(zip(names, values, strict=True))


def read_merchant_feed(
    body: bytes,
    default_currency: str,
    keywords: Mapping[str, tuple[str, ...]],
    category_ids: Mapping[str, str],
) -> Iterator[FeedRow]:
    """Every entry of a Merchant feed, XML (RSS 2.0 / Atom) or tab-separated, told apart by its first byte."""
    entries = _xml_entries(body) if body.lstrip()[:1] == b"<" else _tsv_entries(body)
    for entry in entries:
        if isinstance(entry, str):
            yield FeedRow(problem=entry)
        else:
            yield merchant_row(entry, default_currency, keywords, category_ids)


# --- a folder with a CSV --------------------------------------------------------------------------------


def invented_price(site: str, sku: str, low: float, high: float) -> float:
    """A price for a catalog that has none: the same for the same product every crawl, ending in .99."""
    fraction = int.from_bytes(hashlib.sha256(f"{site}:{sku}".encode()).digest()[:8], "big") / 2**64
    return min(int(low + fraction * (high - low)) + 0.99, high)


def read_catalog_csv(
    body: bytes,
    folder: Path,
    *,
    site: str,
    columns: Mapping[str, str],
    default_currency: str,
    keywords: Mapping[str, tuple[str, ...]],
    url_template: str = "",
    price_range: tuple[float, float] | None = None,
) -> Iterator[FeedRow]:
    """A catalog export: one product per CSV row, its image a file in `folder`.

    `columns` names the CSV column of each field (sku, name, category, price, currency, url, image, and
    optionally article_type, colour); the defaults are the field names. Links and prices the CSV lacks
    come from `url_template` ("https://shop.example/p/{sku}") and `price_range`.
    """
    column = {
        name: columns.get(name, name) for name in ("sku", "name", "category", "price", "currency", "url", "image")
    }
    reader = csv.DictReader(io.StringIO(body.decode("utf-8-sig", errors="replace")))
    missing = [c for c in (column["sku"], column["image"]) if c not in (reader.fieldnames or [])]
    if missing:
        raise FeedError(f"the CSV has no column {missing[0]!r} (columns: {reader.fieldnames})")
    for row in reader:
        if None in row or any(value is None for value in row.values()):
            yield FeedRow(problem="malformed row (wrong number of fields)")
            continue
        yield _csv_row(row, folder, site, column, columns, default_currency, keywords, url_template, price_range)


def _csv_row(
    row: Mapping[str, str],
    folder: Path,
    site: str,
    column: Mapping[str, str],
    columns: Mapping[str, str],
    default_currency: str,
    keywords: Mapping[str, tuple[str, ...]],
    url_template: str,
    price_range: tuple[float, float] | None,
) -> FeedRow:
    sku = _text(row.get(column["sku"]))
    image = _text(row.get(column["image"]))
    # Normalised, not resolved: "../" must not leave the folder, a symlink its owner put there may.
    image_path = Path(os.path.normpath(folder / image)) if image else None
    if image_path is not None and not image_path.is_relative_to(folder):
        return FeedRow(problem="image outside the catalog folder")
    name = _text(row.get(column["name"]))
    category = _text(row.get(column["category"]))
    price, currency, note = None, None, None
    if row.get(column["price"]):
        price, currency = parse_amount(row[column["price"]], _text(row.get(column["currency"])) or default_currency)
        note = None if price is not None else f"unreadable price {row[column['price']]!r}"
    elif column["price"] not in row and price_range and sku:
        price, currency, note = invented_price(site, sku, *price_range), default_currency, "invented (no prices given)"
    url = _text(row.get(column["url"])) or (
        url_template.format(sku=quote(sku, safe="")) if url_template and sku else None
    )
    return FeedRow(
        {
            "sku": sku,
            "name": name,
            "url": url,
            "image_url": image_path.as_uri() if image_path else None,
            "category": category if category in CATEGORIES else category_for([category, name], keywords),
            "price": price,
            "currency": currency,
            "price_text": row.get(column["price"]) or None,
            "price_note": note,
            "article_type": _text(row.get(columns["article_type"])) if "article_type" in columns else None,
            "colour": _text(row.get(columns["colour"])) if "colour" in columns else None,
        }
    )
