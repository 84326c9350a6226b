"""Crawl speed: the Scrapy path against a browser-for-every-page baseline, on one generated demo shop,
and the same products read through a Shopify storefront's /products.json instead of HTML pages.

The shop has `--products` products (listing pages, product pages, images; one category listed by
JavaScript), served on 127.0.0.1. Every crawler fetches the products' images:

- scrapy: the catalog's own HTML crawl (`crawl_site`: subprocess, pipelines, ImagesPipeline, Chromium only
  for the JavaScript listing), timed end to end including process start.
- feed: the same products as a Shopify imitation (lib/samples/shop_feeds.py: 250 products a page), read by
  the `shopify` site type through the same pipelines, with the demo shop's loopback settings (no throttle).
- baseline: what the original crawler did with Selenium, here with Playwright's sync API driving the same
  Chromium: every listing and product page loaded in the browser one after another, images fetched one by
  one. It is sequential, so its rate is steady; `--baseline-products` caps how many products it visits and
  its wall time for the whole shop is extrapolated from that rate (reported as such).

Usage: .venv/bin/python benchmarks/bench_crawl.py [--products 2000] [--baseline-products 300] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from contextlib import nullcontext
from pathlib import Path
from urllib.parse import urljoin

import yaml
from parsel import Selector

from fashion_pipeline.crawl.runner import crawl_site
from fashion_pipeline.crawl.settings import LOOPBACK_CHROMIUM_ARGS, chromium_executable
from fashion_pipeline.lib.catalog.catalog import RAW_PRODUCTS_FILE, read_raw_products
from fashion_pipeline.lib.catalog.crawl_report import CrawlReport
from fashion_pipeline.lib.catalog.sites import SITES_FILE, load_sites, load_usd_rates
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.samples.demo_shop import DemoShop, build_demo_shop, make_stand_in_items
from fashion_pipeline.lib.samples.demo_shop_site import serve_directory
from fashion_pipeline.lib.samples.shop_feeds import shopify_products, shopify_storefront

# The demo shop spider's own settings for a loopback server, given to the feed crawl too.
LOOPBACK_SETTINGS = {
    "AUTOTHROTTLE_ENABLED": "False",
    "DOWNLOAD_DELAY": "0",
    "CONCURRENT_REQUESTS": "32",
    "CONCURRENT_REQUESTS_PER_DOMAIN": "32",
}


def crawl_with_scrapy(shop_root: Path, work: Path) -> dict:
    with serve_directory(shop_root) as base_url:
        start = time.perf_counter()
        report = crawl_site(
            load_sites()["demo_shop"], DataPaths(root=work / "html"), spider_args={"base_url": base_url}
        )
        wall = time.perf_counter() - start
    return _figures(report, wall, DataPaths(root=work / "html").catalog_raw_dir / "demo_shop")


def _figures(report: CrawlReport, wall: float, published: Path) -> dict:
    rows = len(read_raw_products(published / RAW_PRODUCTS_FILE))
    return {
        "wall_s": round(wall, 2),
        "items": report.scraped,
        "items_per_s": round(report.scraped / wall, 1),
        "listed": report.listed,
        "dropped": report.dropped,
        "pages_failed": report.pages_failed,  # a listing lost to a timeout shows here, not as a lower rate
        "accounted": report.accounted and rows == report.scraped,
    }


def crawl_with_feed(shop: DemoShop, work: Path) -> dict:
    """The shop's products through a Shopify storefront imitation and the `shopify` site type."""
    handler = shopify_storefront(shopify_products(shop.products, load_usd_rates()))
    with serve_directory(shop.root, handler) as base_url:
        sites = yaml.safe_load(SITES_FILE.read_text())
        sites["sites"]["bench_shopify"] = {
            "spider": "shopify",
            "start_url": base_url,
            "currency": "USD",
            "allow_private_addresses": True,
        }
        sites_file = work / "sites.yaml"
        sites_file.write_text(yaml.safe_dump(sites))
        os.environ["FASHION_SITES_FILE"] = str(sites_file)
        start = time.perf_counter()
        report = crawl_site(
            load_sites(sites_file)["bench_shopify"], DataPaths(root=work / "feed"), settings=LOOPBACK_SETTINGS
        )
        wall = time.perf_counter() - start
        del os.environ["FASHION_SITES_FILE"]
    pages = sum(1 for path in handler.requests if path.startswith("/products.json"))
    return {
        **_figures(report, wall, DataPaths(root=work / "feed").catalog_raw_dir / "bench_shopify"),
        "feed_pages": pages,
    }


def crawl_with_browser(shop_root: Path, work: Path, max_products: int) -> dict:
    """Every page through the browser, one at a time, as the original Selenium crawler did."""
    from playwright.sync_api import sync_playwright

    images = work / "baseline-images"
    images.mkdir(parents=True, exist_ok=True)
    items = 0
    with serve_directory(shop_root) as base_url, sync_playwright() as playwright:
        start = time.perf_counter()
        executable = chromium_executable()
        browser = playwright.chromium.launch(
            args=LOOPBACK_CHROMIUM_ARGS, **({"executable_path": executable} if executable else {})
        )
        page = browser.new_page()
        page.goto(f"{base_url}/index.html")
        # Links are relative to the page they are on, as a browser reads them.
        categories = Selector(text=page.content()).css("nav a.category-link::attr(href)").getall()
        for listing in [urljoin(page.url, href) for href in categories]:
            url = listing
            while url and items < max_products:
                page.goto(url)
                if page.query_selector("[data-client-rendered]"):
                    page.wait_for_selector("body[data-rendered]")
                listing_url, listing_page = page.url, Selector(text=page.content())
                for href in listing_page.css(".product-card a.product-link::attr(href)").getall():
                    if items >= max_products:
                        break
                    page.goto(urljoin(listing_url, href))
                    product = Selector(text=page.content())
                    name = product.css("h1::text").get()
                    product.css('[itemprop="price"]::text').get()
                    image = product.css("img.product-image::attr(src)").get()
                    try:
                        with urllib.request.urlopen(urljoin(page.url, image), timeout=10) as response:
                            (images / f"{items}.jpg").write_bytes(response.read())
                    except OSError:
                        continue  # the dead image link
                    items += bool(name)
                next_page = listing_page.css("a[rel=next]::attr(href)").get()
                url = urljoin(listing_url, next_page) if next_page else None
        browser.close()
        wall = time.perf_counter() - start
    return {"wall_s": round(wall, 2), "items": items, "items_per_s": round(items / wall, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--baseline-products", type=int, default=300, help="products the baseline visits")
    parser.add_argument("--image-size", type=int, default=256, help="side of the generated product photos")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    parser.add_argument("--work", type=Path, help="build and crawl here and keep it (logs, rows); default: a temp dir")
    args = parser.parse_args(argv)
    os.environ.setdefault("FASHION_CRAWL_LOOPBACK_ONLY", "1")  # Chromium resolves nothing but 127.0.0.1

    if args.work:
        args.work.mkdir(parents=True, exist_ok=False)
    with nullcontext(str(args.work)) if args.work else tempfile.TemporaryDirectory(prefix="bench-crawl-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        items = make_stand_in_items(work / "photos", args.products, image_size=args.image_size)
        shop = build_demo_shop(items, work / "shop")
        print(f"shop: {len(shop.products)} products, {shop.pages} pages, built in {time.perf_counter() - start:.1f} s")
        scrapy_figures = crawl_with_scrapy(shop.root, work)
        print(f"scrapy:   {scrapy_figures}")
        feed_figures = crawl_with_feed(shop, work)
        print(f"feed:     {feed_figures}")
        baseline = crawl_with_browser(shop.root, work, min(args.baseline_products, args.products))
        baseline["extrapolated_wall_s_for_all"] = round(len(shop.expected_in_catalog) / baseline["items_per_s"], 1)
        print(f"baseline: {baseline}")

    ratio = scrapy_figures["items_per_s"] / baseline["items_per_s"]
    figures = {
        "products": args.products,
        "scrapy": scrapy_figures,
        "feed": feed_figures,
        "browser_baseline": baseline,
        "speedup_items_per_s": round(ratio, 1),
        "feed_vs_html_items_per_s": round(feed_figures["items_per_s"] / scrapy_figures["items_per_s"], 1),
        "goal_met": ratio >= 5
        and scrapy_figures["accounted"]
        and scrapy_figures["listed"] == args.products + 1
        and feed_figures["accounted"]
        and feed_figures["listed"] == args.products,
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    return 0 if figures["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
