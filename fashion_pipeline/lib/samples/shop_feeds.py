"""Loopback imitations of the product feeds shops publish, built from the formats' documentation.

- `ShopifyStorefront`: a shop's public `/products.json` (Shopify's storefront format: `products` with
  `id`, `title`, `handle`, `product_type`, `tags`, `updated_at`, `variants` with string `price` and
  `available`, `images` with `src` and `position`), paged with `limit` (capped at 250) and `page` or
  `since_id`, beside the shop's other files (images, robots.txt) served from a folder.
- `shopify_products`, `merchant_rss` and `merchant_tsv` write the same products as those feeds.

The benchmark serves the demo shop's products this way; the tests serve small hand-written catalogs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from fashion_pipeline.lib.samples.demo_shop import DemoProduct
from fashion_pipeline.lib.samples.demo_shop_site import QuietHandler

SHOPIFY_MAX_LIMIT = 250
SHOPIFY_DEFAULT_LIMIT = 30
# The product types a clothes shop would give each catalog category.
PRODUCT_TYPES = {"shirt": "Shirts", "outwear": "Jackets", "short": "Trousers", "skirt": "Skirts", "dress": "Dresses"}


def shopify_products(products: Iterable[DemoProduct], usd_rates: Mapping[str, float]) -> list[dict[str, Any]]:
    """Demo-shop products as Shopify product objects (a Shopify shop has one currency: USD here).

    Image `src` values are paths ("/img/<sku>.jpg"); the storefront makes them absolute links to itself.
    """
    objects = []
    for number, product in enumerate(products, start=1):
        price = None if product.price is None else round(product.price * usd_rates[product.currency], 2)
        image = f"/img/missing/{product.sku}.jpg" if product.fault == "dead_image" else f"/img/{product.sku}.jpg"
        objects.append(
            {
                "id": 7_000_000_000 + number,
                "title": product.name,
                "handle": product.sku.lower(),
                "product_type": PRODUCT_TYPES[product.category],
                "tags": [product.category, "demo"],
                "updated_at": "2025-06-01T03:00:00+00:00",
                # Three sizes; the largest is sold out.
                "variants": [
                    {
                        "id": 40_000_000_000 + number * 10 + size,
                        "title": label,
                        "available": size != 2,
                        "price": f"{price:.2f}" if price is not None else None,
                    }
                    for size, label in enumerate(("S", "M", "L"))
                ],
                "images": [{"id": 30_000_000_000 + number, "position": 1, "src": image}],
            }
        )
    return objects


class ShopifyStorefront(QuietHandler):
    """`/products.json` over `products`, other paths from the folder; counts every request it receives."""

    products: ClassVar[list[dict[str, Any]]] = []
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        parts = urlsplit(self.path)
        if parts.path != "/products.json":
            return super().do_GET()
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        limit = min(int(query.get("limit", SHOPIFY_DEFAULT_LIMIT)), SHOPIFY_MAX_LIMIT)
        if "since_id" in query:
            since = int(query["since_id"])
            page = [p for p in self.products if isinstance(p, dict) and p["id"] > since][:limit]
        else:
            start = (max(int(query.get("page", 1)), 1) - 1) * limit
            page = self.products[start : start + limit]
        host = f"http://127.0.0.1:{self.server.server_port}"
        self.send_json({"products": [_absolute_images(product, host) for product in page]})

    def send_json(self, data: object, status: int = 200) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _absolute_images(product: Any, host: str) -> Any:
    """Image paths ("/img/x.jpg") made absolute on this server, as Shopify's CDN links are absolute."""
    if not isinstance(product, dict):
        return product  # a malformed entry, served as it is
    images = [{**i, "src": host + i["src"]} if i["src"].startswith("/") else i for i in product["images"]]
    return {**product, "images": images}


def shopify_storefront(products: list[dict[str, Any]]) -> type[ShopifyStorefront]:
    """A ShopifyStorefront handler class with its own products and request log."""
    return type("ShopifyStorefrontWithProducts", (ShopifyStorefront,), {"products": products, "requests": []})


def merchant_rss(items: Iterable[Mapping[str, str]], title: str = "Example shop") -> str:
    """A Merchant feed in RSS 2.0 with the g: namespace; each item maps attribute names to text."""
    entries = "".join(
        "<item>" + "".join(f"<g:{name}>{escape(str(value))}</g:{name}>" for name, value in item.items()) + "</item>"
        for item in items
    )
    return (
        '<?xml version="1.0"?>\n<rss xmlns:g="http://base.google.com/ns/1.0" version="2.0"><channel>'
        f"<title>{escape(title)}</title><link>https://shop.example</link>{entries}</channel></rss>"
    )


def merchant_tsv(items: Iterable[Mapping[str, str]], columns: list[str]) -> str:
    """A Merchant feed in its tab-separated form: a header row of attribute names, one row per item."""
    rows = ["\t".join(columns)] + ["\t".join(str(item.get(c, "")) for c in columns) for item in items]
    return "\n".join(rows) + "\n"
