"""The demo shop's static site: listing and product pages, robots.txt, and the server a crawl reads it from.

The pages carry what the crawler must cope with: pagination, one category listed client-side by JavaScript
from a JSON file, a product listed twice behind a tracking parameter, a dead image link and a missing price.
Every link is relative, so the site works wherever it is mounted: at / for a crawl, at /demo-shop/ in the
app. `serve_directory` serves the site on 127.0.0.1 on a free port for the duration of a crawl.
"""

from __future__ import annotations

import functools
import html
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from fashion_pipeline.lib.common.categories import CATEGORIES

if TYPE_CHECKING:  # demo_shop imports this module to write the site
    from fashion_pipeline.lib.samples.demo_shop import DemoProduct

JS_CATEGORY = "dress"  # listed client-side; falls back to the first category with products
ROBOTS_TXT = "User-agent: *\nDisallow: /cart/\n"
# A page a shopper's "Add to cart" opens: this shop sells nothing, and says so rather than answering 404.
_CART_BODY = (
    "<p>This is a generated demo shop: it has no checkout. The product pages and prices are there for the "
    "catalog crawler and the shopping app to find.</p>"
)

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - Demo Shop</title></head>
<body>
<nav>{nav}</nav>
<h1>{title}</h1>
{body}
</body></html>
"""

_LISTING_JS = """// Renders a listing page from its JSON, as shops with client-side listings do.
(async () => {
  const root = document.getElementById("listing");
  const data = await (await fetch(root.dataset.src)).json();
  for (const p of data.products) {
    const card = document.createElement("div");
    card.className = "product-card";
    card.dataset.sku = p.sku;
    card.innerHTML = `<a class="product-link" href="${p.url}"><img src="${p.image}" alt=""></a>` +
      `<a class="product-name" href="${p.url}"></a><span class="price"></span>`;
    card.querySelector(".product-name").textContent = p.name;
    card.querySelector(".price").textContent = p.price || "Price on request";
    root.appendChild(card);
  }
  if (data.next) {
    const next = document.createElement("a");
    next.rel = "next";
    next.href = data.next;
    next.textContent = "Next";
    document.body.appendChild(next);
  }
  document.body.dataset.rendered = "1";
})();
"""


def _nav(categories: list[str], up: str) -> str:
    """The menu for a page `up` ("", "../" or "../../") below the shop's root."""
    links = (
        f'<a class="category-link" data-category="{c}" href="{up}c/{c}/1.html">{c.title()}</a>' for c in categories
    )
    return " | ".join([f'<a href="{up}index.html">Home</a>', *links])


def _image_url(product: DemoProduct, up: str) -> str:
    # The dead link points at a file that was never written: the crawler must count it and keep it out.
    folder = "img/missing" if product.fault == "dead_image" else "img"
    return f"{up}{folder}/{product.sku}.jpg"


def _card(product: DemoProduct, url: str, up: str) -> str:
    price = html.escape(product.price_text) if product.price_text else "Price on request"
    return (
        f'<div class="product-card" data-sku="{product.sku}">'
        f'<a class="product-link" href="{url}"><img src="{_image_url(product, up)}" alt=""></a>'
        f'<a class="product-name" href="{url}">{html.escape(product.name)}</a>'
        f'<span class="price">{price}</span></div>'
    )


def _product_page(product: DemoProduct, categories: list[str]) -> str:
    price = (
        f'<span class="price" itemprop="price">{html.escape(product.price_text)}</span>'
        if product.price_text
        else '<span class="price-unavailable">Currently unavailable</span>'
    )
    body = (
        f'<meta itemprop="sku" content="{product.sku}">'
        f'<p class="breadcrumb"><a class="category" data-category="{product.category}" '
        f'href="../c/{product.category}/1.html">{product.category.title()}</a></p>'
        f'<img class="product-image" src="{_image_url(product, "../")}" alt="{html.escape(product.name)}">'
        f"<p>{price}</p>"
        f'<a href="../cart/index.html?sku={product.sku}" rel="nofollow">Add to cart</a>'
    )
    return _PAGE.format(title=html.escape(product.name), nav=_nav(categories, "../"), body=body)


def write_site(root: Path, products: list[DemoProduct], per_page: int) -> str:
    """Write every page of the shop under `root`; returns the category listed by JavaScript."""
    by_category = {c: [p for p in products if p.category == c] for c in CATEGORIES}
    categories = [c for c in CATEGORIES if by_category[c]]
    js_category = JS_CATEGORY if JS_CATEGORY in categories else categories[0]
    (root / "robots.txt").write_text(ROBOTS_TXT)
    (root / "static").mkdir()
    (root / "static" / "listing.js").write_text(_LISTING_JS)
    (root / "cart").mkdir()
    cart = _PAGE.format(title="Cart", nav=_nav(categories, "../"), body=_CART_BODY)
    (root / "cart" / "index.html").write_text(cart, encoding="utf-8")
    (root / "p").mkdir()
    for product in products:
        (root / "p" / f"{product.sku}.html").write_text(_product_page(product, categories), encoding="utf-8")
    twice = next((p for p in products if p.fault == "listed_twice"), None)
    for category in categories:
        # Links from a listing page, two folders down (c/<category>/<n>.html).
        listed = [(p, f"../../p/{p.sku}.html") for p in by_category[category]]
        if twice is not None and twice.category == category:
            # The same product again at the end of its category, behind a tracking parameter.
            listed.append((twice, f"../../p/{twice.sku}.html?ref=new-arrivals"))
        pages = [listed[i : i + per_page] for i in range(0, len(listed), per_page)]
        folder = root / "c" / category
        folder.mkdir(parents=True)
        for number, page in enumerate(pages, start=1):
            next_url = f"{number + 1}.html" if number < len(pages) else None
            title = f"{category.title()} (page {number} of {len(pages)})"
            if category == js_category:
                # The script resolves these links against the listing page, as the browser does for its own.
                data = {
                    "products": [
                        {
                            "sku": p.sku,
                            "url": url,
                            "image": _image_url(p, "../../"),
                            "name": p.name,
                            "price": p.price_text,
                        }
                        for p, url in page
                    ],
                    "next": next_url,
                }
                (folder / f"{number}.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
                body = (
                    f'<div id="listing" data-client-rendered="1" data-src="{number}.json"></div>'
                    '<script src="../../static/listing.js"></script>'
                )
            else:
                cards = "\n".join(_card(p, url, "../../") for p, url in page)
                more = f'<a rel="next" href="{next_url}">Next</a>' if next_url else ""
                body = f'<div id="listing">\n{cards}\n</div>\n{more}'
            page_html = _PAGE.format(title=title, nav=_nav(categories, "../../"), body=body)
            (folder / f"{number}.html").write_text(page_html, encoding="utf-8")
    home = "".join(f'<p><a href="c/{c}/1.html">{c.title()}: {len(by_category[c])} products</a></p>' for c in categories)
    index = _PAGE.format(title="Demo Shop", nav=_nav(categories, ""), body=home)
    (root / "index.html").write_text(index, encoding="utf-8")
    return js_category


# --- serving ---------------------------------------------------------------------------------------------


class QuietHandler(SimpleHTTPRequestHandler):
    """Static files without a log line per request (a crawl makes thousands)."""

    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".json": "application/json",
    }

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_directory(root: Path, handler: type[SimpleHTTPRequestHandler] = QuietHandler) -> Iterator[str]:
    """Serve `root` on 127.0.0.1 on a free port; yields the base URL and always stops the server."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"nothing to serve: {root} is not a folder")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"demo-shop-{server.server_port}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
