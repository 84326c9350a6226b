"""Real crawls (Scrapy in a subprocess, Chromium for JavaScript pages) against loopback shops with faults."""

from __future__ import annotations

import json
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from fashion_pipeline.crawl.runner import CrawlFailed, crawl_site
from fashion_pipeline.lib.catalog.catalog import CRAWL_REPORT_FILE, RAW_PRODUCTS_FILE, read_raw_products
from fashion_pipeline.lib.catalog.crawl_report import CrawlReport
from fashion_pipeline.lib.catalog.sites import load_sites, load_usd_rates
from fashion_pipeline.lib.common.images import load_image
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.samples.demo_shop import DEFAULT_PUBLIC_URL, DemoShop, make_stand_in_items
from fashion_pipeline.lib.samples.demo_shop_site import serve_directory
from fashion_pipeline_tests.fixtures_catalog import FAST_CRAWL_SETTINGS, faulty_shop_handler, require_chromium


def _faults(shop: DemoShop) -> tuple[dict[str, str], dict[str, str]]:
    """Fault map for the server, and which product gets which fault."""
    normal = [p.sku for p in shop.products if not p.fault]
    roles = {
        "500-once": normal[0],
        "404": normal[1],
        "timeout": normal[2],
        "redirect-loop": normal[3],
        "robots-disallow": normal[4],
        "truncated-image": normal[5],
        "not-an-image": normal[6],
        "duplicate-photo": normal[7],
        "original-photo": normal[8],
    }
    faults = {
        f"/p/{roles[kind]}.html": kind for kind in ("500-once", "404", "timeout", "redirect-loop", "robots-disallow")
    }
    faults[f"/img/{roles['truncated-image']}.jpg"] = "truncated-image"
    faults[f"/img/{roles['not-an-image']}.jpg"] = "not-an-image"
    faults[f"/img/{roles['duplicate-photo']}.jpg"] = f"image-of:/img/{roles['original-photo']}.jpg"
    return faults, roles


def test_every_product_is_accounted_for_under_faults(small_demo_shop, tmp_path, network_attempts):
    require_chromium()
    shop = small_demo_shop
    faults, roles = _faults(shop)
    handler = faulty_shop_handler(faults)
    with serve_directory(shop.root, handler) as base_url:
        report = crawl_site(
            load_sites()["demo_shop"],
            DataPaths(root=tmp_path),
            spider_args={"base_url": base_url},
            settings=FAST_CRAWL_SETTINGS,
        )
    by_fault = {p.fault: p for p in shop.products if p.fault}

    # Every product listed (20, one of them twice) is in the output or dropped with its reason.
    assert report.listed == 21
    assert report.dropped == {
        "page failed: HTTP 404": 1,
        "page failed: timeout": 1,
        "page failed: max redirections reached": 1,
        "page failed: Forbidden by robots.txt": 1,
        "broken image": 2,
        "duplicate image": 1,
        "dead image link": 1,
        "duplicate url": 1,
    }
    assert report.scraped == 21 - 9 and report.accounted
    assert report.images_failed == 3 and report.price_missing == 1
    assert report.listing_pages_without_products == 1  # the broken page: no cards, no crash
    assert {d["reason"] for d in report.drops} == set(report.dropped)

    out = tmp_path / "catalog" / "raw" / "demo_shop"
    assert CrawlReport.read(out / CRAWL_REPORT_FILE) == report
    products = read_raw_products(out / RAW_PRODUCTS_FILE).set_index("sku")
    assert len(products) == report.scraped
    dropped_skus = {
        roles[k] for k in ("404", "timeout", "redirect-loop", "robots-disallow", "truncated-image", "not-an-image")
    }
    dropped_skus |= {by_fault["dead_image"].sku}
    one_of_the_pair = {roles["duplicate-photo"], roles["original-photo"]}
    assert set(products.index) | dropped_skus | one_of_the_pair == {p.sku for p in shop.products}
    assert len(one_of_the_pair & set(products.index)) == 1  # the same photo twice: one product kept

    # The retried page made it; robots.txt was obeyed; the JavaScript category was rendered by Chromium.
    assert roles["500-once"] in products.index and handler.requests[f"/p/{roles['500-once']}.html"] == 2
    assert handler.requests[f"/p/{roles['robots-disallow']}.html"] == 0
    assert not any(path.startswith("/cart/") for path in handler.requests)
    js_products = {p.sku for p in shop.products if p.category == shop.js_category} - dropped_skus - one_of_the_pair
    assert js_products and js_products <= set(products.index)

    # Prices as the shop showed them, in USD from the configured table; the unpriced product is kept.
    rates = load_usd_rates()
    for product in shop.products:
        if product.sku not in products.index:
            continue
        row = products.loc[product.sku]
        assert row["name"] == product.name and row["category"] == product.category
        if product.price is None:
            assert row["price_note"] == "no price shown" and row["price_usd"] != row["price_usd"]  # NaN
        else:
            assert (row["price"], row["currency"]) == (product.price, product.currency)
            assert row["price_usd"] == round(product.price * rates[product.currency], 2)
        assert load_image(tmp_path / row["image_path"]).size[0] > 0
        # Stable links (the crawl's port is gone afterwards), without the tracking parameter of the repeat.
        assert row["url"] == f"{DEFAULT_PUBLIC_URL}/p/{product.sku}.html"
        assert row["image_url"] == f"{DEFAULT_PUBLIC_URL}/img/{product.sku}.jpg"
    assert products.loc[by_fault["price_range"].sku, "price_note"].startswith("range ")
    assert network_attempts() == []


def test_a_failed_crawl_keeps_the_previous_data(tmp_path):
    site_dir = tmp_path / "catalog" / "raw" / "demo_shop"
    site_dir.mkdir(parents=True)
    (site_dir / RAW_PRODUCTS_FILE).write_text('{"product_id": "demo_shop:old"}\n')
    with serve_directory(tmp_path) as base_url:
        pass  # the server is gone again: nothing answers on this port
    with pytest.raises(CrawlFailed, match="scraped no products") as failure:
        crawl_site(
            load_sites()["demo_shop"],
            DataPaths(root=tmp_path),
            spider_args={"base_url": base_url},
            settings=FAST_CRAWL_SETTINGS,
        )
    assert "previous data kept" in str(failure.value)
    assert (site_dir / RAW_PRODUCTS_FILE).read_text() == '{"product_id": "demo_shop:old"}\n'
    assert sorted(p.name for p in site_dir.iterdir()) == [RAW_PRODUCTS_FILE]
    assert (tmp_path / "catalog" / "raw" / "demo_shop.failed.log").is_file()


class DarveysLookalike(SimpleHTTPRequestHandler):
    """A search page like Darveys': empty in HTML, tiles drawn by JavaScript (with lazy-image placeholders)."""

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        if not self.path.startswith("/catalogsearch/result/"):
            return super().do_GET()
        query = dict(part.split("=", 1) for part in self.path.split("?", 1)[1].split("&"))
        page, keyword = int(query["p"]), query["q"]
        tiles = []
        if page <= 2:
            for n in range(3):
                ident = f"{keyword}{page}{n}"
                lazy = f' data-src="/media/{ident}.jpg"' if n < 2 else ""
                tiles.append(
                    f'<div data-id="{ident}" data-producttype="configurable"><a href="/p/{ident}">'
                    f'<img src="https://media.darveys.com/resized/?lv=51"{lazy}></a>'
                    f'<div class="product-details"><p><a title="{keyword.title()} {ident}" href="/{ident}.html">x</a></p>'
                    f'<div class="special-price"><span class="price">₹ {n + 1},499</span></div></div></div>'
                )
        body = (
            '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><div id="tiles"></div><script>'
            f"document.getElementById('tiles').innerHTML = {json.dumps(''.join(tiles))};</script></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_darveys_listing_is_rendered_through_chromium(tmp_path):
    require_chromium()
    photos = make_stand_in_items(tmp_path / "site" / "media", 8)
    idents = [f"{keyword}{page}{n}" for keyword in ("dress", "skirt") for page in (1, 2) for n in (0, 1)]
    for ident, path in zip(idents, photos["image_path"], strict=True):
        Path(path).rename(tmp_path / "site" / "media" / f"{ident}.jpg")
    with serve_directory(tmp_path / "site", DarveysLookalike) as base_url:
        report = crawl_site(
            load_sites()["darveys"],
            DataPaths(root=tmp_path),
            spider_args={"start_url": base_url, "max_pages": "3", "categories": "dress,skirt"},
            # The imitation is on loopback, which a real shop's entry refuses.
            settings={
                **FAST_CRAWL_SETTINGS,
                "AUTOTHROTTLE_ENABLED": "False",
                "DOWNLOAD_DELAY": "0",
                "CATALOG_ALLOW_PRIVATE_ADDRESSES": "True",
            },
        )
    # 2 keywords x 2 pages x 3 tiles; page 3 is empty and ends the keyword (the normal end: not counted).
    assert report.listed == 12 and report.accounted
    assert report.listing_pages_without_products == 0
    assert report.dropped == {"missing image_url": 4}  # tiles with only the lazy-load placeholder
    products = read_raw_products(tmp_path / "catalog" / "raw" / "darveys" / RAW_PRODUCTS_FILE)
    assert len(products) == 8
    assert set(products["category"]) == {"dress", "skirt"}
    assert set(products["currency"]) == {"INR"} and sorted(set(products["price"])) == [1499.0, 2499.0]
