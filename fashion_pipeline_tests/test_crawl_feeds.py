"""Feed sites crawled for real (Scrapy in a subprocess) from loopback imitations into products.parquet:
a Shopify storefront, Google Merchant feeds (RSS 2.0 and tab-separated) and a folder with a CSV."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
from scrapy.http import TextResponse
from scrapy.utils.test import get_crawler

from fashion_pipeline.crawl.runner import CrawlFailed, crawl_site
from fashion_pipeline.crawl.spiders.shopify import ShopifySpider
from fashion_pipeline.lib.catalog.catalog import (
    CATALOG_COLUMNS,
    RAW_PRODUCTS_FILE,
    merge_catalog,
    read_raw_products,
    read_site_rows,
)
from fashion_pipeline.lib.catalog.feeds import invented_price
from fashion_pipeline.lib.catalog.sites import load_sites, load_usd_rates
from fashion_pipeline.lib.common.atomic import write_parquet
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.samples.demo_shop_site import QuietHandler, serve_directory
from fashion_pipeline.lib.samples.shop_feeds import ShopifyStorefront, merchant_rss, merchant_tsv
from fashion_pipeline_tests.fixtures_catalog import FAST_CRAWL_SETTINGS, use_sites, write_photos

RATES = load_usd_rates()


def _catalog(tmp_path: Path, names: list[str]) -> pd.DataFrame:
    """products.parquet built from the sites' crawls as product_catalog builds it."""
    catalog, _ = merge_catalog(read_site_rows(tmp_path / "catalog" / "raw", names), None)
    write_parquet(catalog, tmp_path / "products.parquet")
    return pd.read_parquet(tmp_path / "products.parquet")


class Storefront(ShopifyStorefront):
    """A storefront whose second page first answers 429 Too Many Requests with Retry-After: 1."""

    times: ClassVar[dict[str, list[float]]] = {}

    def do_GET(self) -> None:
        self.times.setdefault(self.path, []).append(time.monotonic())
        if "page=2" in self.path and len(self.times[self.path]) == 1:
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return super().do_GET()


def _shopify(number: int, title: str, product_type: str, image: str, prices=("45.50",), available=(True,)) -> dict:
    return {
        "id": 1000 + number,
        "title": title,
        "handle": title.lower().replace(" ", "-"),
        "product_type": product_type,
        "tags": [],
        "updated_at": "2025-06-01T03:00:00+00:00",
        "variants": [
            {"id": i, "price": p, "available": a} for i, (p, a) in enumerate(zip(prices, available, strict=True))
        ],
        "images": [{"id": number, "position": 1, "src": image}],
    }


def test_shopify_storefront_pages_through_a_429_into_the_catalog(tmp_path, monkeypatch, network_attempts):
    write_photos(tmp_path / "site" / "img", [f"{n}.jpg" for n in range(5)])
    products = [
        _shopify(0, "Linen Shirt Dress", "Dresses", "/img/0.jpg", ("39.00", "45.50"), (False, True)),
        _shopify(1, "Wool Coat", "Coats", "/img/1.jpg", ("120.00",), (False,)),  # sold out: kept, marked
        _shopify(2, "Pleated Skirt", "Skirts", "/img/missing.jpg"),
        _shopify(3, "Gift Card", "Gift Cards", "/img/3.jpg"),
        "not a product",
        _shopify(5, "Denim Shorts", "Shorts", "https://elsewhere.example/5.jpg"),
        _shopify(6, "Oxford Shirt", "Shirts", "/img/4.jpg", ("59.00",)),
    ]
    handler = type("Shop", (Storefront,), {"products": products, "requests": [], "times": {}})
    with serve_directory(tmp_path / "site", handler) as base_url:
        sites = use_sites(
            tmp_path,
            monkeypatch,
            {"shop": {"spider": "shopify", "start_url": base_url, "currency": "EUR", "page_size": 3,
                      "allow_private_addresses": True}},
        )  # fmt: skip
        report = crawl_site(sites["shop"], DataPaths(root=tmp_path), settings=FAST_CRAWL_SETTINGS)

    # Three pages of three (the last one short), then an empty page ends the listing; page 2 was asked
    # twice: the 429, then the retry.
    pages = [p for p in handler.requests if p.startswith("/products.json")]
    assert pages == [f"/products.json?limit=3&page={n}" for n in (1, 2, 3, 4)]
    first, retry = handler.times["/products.json?limit=3&page=2"]
    assert retry - first >= 0.95  # the shop's Retry-After was honoured before retrying
    assert report.listed == 7 and report.accounted
    assert report.dropped == {
        "malformed product entry": 1,
        "missing category": 1,
        "image link to another site": 1,
        "dead image link": 1,
    }
    rows = read_raw_products(tmp_path / "catalog" / "raw" / "shop" / RAW_PRODUCTS_FILE).set_index("sku")
    assert sorted(rows.index) == ["1000", "1001", "1006"]
    dress = rows.loc["1000"]
    assert (dress["name"], dress["category"], dress["url"]) == (
        "Linen Shirt Dress",
        "dress",
        f"{base_url}/products/linen-shirt-dress",
    )
    assert (dress["price"], dress["currency"], dress["price_usd"]) == (45.5, "EUR", round(45.5 * RATES["EUR"], 2))
    assert (rows.loc["1001", "availability"], rows.loc["1001", "price"]) == ("out of stock", 120.0)
    catalog = _catalog(tmp_path, ["shop"])
    assert list(catalog.columns) == list(CATALOG_COLUMNS) and len(catalog) == 3
    assert network_attempts() == []


def test_shopify_since_id_paging_asks_for_the_products_after_the_last_one(tmp_path, monkeypatch):
    use_sites(tmp_path, monkeypatch, {"s": {"spider": "shopify", "start_url": "https://s.example", "currency": "USD",
                                             "paging": "since_id", "page_size": 2}})  # fmt: skip
    spider = ShopifySpider.from_crawler(get_crawler(ShopifySpider), site="s")
    body = json.dumps({"products": [_shopify(7, "A Top", "Tops", "/a.jpg"), _shopify(3, "B Top", "Tops", "/b.jpg")]})
    request = spider.page_request(1)
    assert request.url == "https://s.example/products.json?limit=2&since_id=0"
    output = list(spider.parse(TextResponse(request.url, body=body.encode(), request=request, encoding="utf-8")))
    assert [o.sku for o in output[:-1]] == ["1007", "1003"]
    assert output[-1].url == "https://s.example/products.json?limit=2&since_id=1007"
    # A shop that ignores the paging answers the same products again: the listing stops there.
    again = TextResponse(output[-1].url, body=body.encode(), request=output[-1], encoding="utf-8")
    assert list(spider.parse(again)) == []
    assert spider.crawler.stats.get_value("catalog/pages_failed/paging repeats itself") == 1


def _merchant_items(base_url: str) -> list[dict]:
    def item(sku: str, title: str, **extra) -> dict:
        return {"id": sku, "title": title, "link": f"{base_url}/p/{sku}", "image_link": f"{base_url}/img/{sku}.jpg",
                "price": "25.00 USD", "availability": "in stock", **extra}  # fmt: skip

    return [
        item("D1", "Floral Maxi Dress", product_type="Dresses"),
        item("S1", "Striped Shirt", price="30.00 EUR", product_type="Shirts"),
        item("J1", "Silk Blouse", price="4500 JPY", product_type="Tops"),  # no USD rate for yen
        item("K1", "Pencil Skirt", availability="out of stock", google_product_category="1581"),
        {**item("T1", "Chino Trousers"), "image_link": ""},
        item("T2", "Cargo Trousers"),  # its image is not on the server
        {**item("C1", "Rain Coat"), "link": "https://elsewhere.example/p/C1"},
        {**item("D2", "Floral Maxi Dress (tall)"), "link": f"{base_url}/p/D1?utm_source=feed"},  # a variant
    ]


def test_merchant_rss_feed_every_entry_accounted_for(tmp_path, monkeypatch, network_attempts):
    write_photos(tmp_path / "site" / "img", ["D1.jpg", "S1.jpg", "J1.jpg", "K1.jpg", "C1.jpg", "D2.jpg"])
    with serve_directory(tmp_path / "site", QuietHandler) as base_url:
        (tmp_path / "site" / "feed.xml").write_text(merchant_rss(_merchant_items(base_url)))
        sites = use_sites(tmp_path, monkeypatch, {"feed": {"spider": "merchant_feed", "start_url": base_url,
                           "feed_url": f"{base_url}/feed.xml", "currency": "USD", "allow_private_addresses": True}})  # fmt: skip
        report = crawl_site(sites["feed"], DataPaths(root=tmp_path), settings=FAST_CRAWL_SETTINGS)
    assert report.listed == 8 and report.accounted
    assert report.dropped == {
        "no USD rate for JPY": 1,
        "missing image_url": 1,
        "dead image link": 1,
        "link to another site": 1,
        "duplicate url": 1,
    }
    rows = read_raw_products(tmp_path / "catalog" / "raw" / "feed" / RAW_PRODUCTS_FILE).set_index("sku")
    assert sorted(rows.index) == ["D1", "K1", "S1"]
    assert (rows.loc["S1", "price"], rows.loc["S1", "currency"], rows.loc["S1", "price_usd"]) == (30.0, "EUR", 34.2)
    assert (rows.loc["K1", "category"], rows.loc["K1", "availability"]) == ("skirt", "out of stock")
    assert len(_catalog(tmp_path, ["feed"])) == 3
    assert network_attempts() == []


def test_merchant_tsv_feed(tmp_path, monkeypatch):
    write_photos(tmp_path / "site" / "img", ["D1.jpg", "S1.jpg"])
    columns = ["id", "title", "link", "image_link", "price", "product_type"]
    with serve_directory(tmp_path / "site", QuietHandler) as base_url:
        feed = merchant_tsv(_merchant_items(base_url)[:2], columns) + "X9\ta row cut short\n"
        (tmp_path / "site" / "feed.tsv").write_text(feed)
        sites = use_sites(tmp_path, monkeypatch, {"tsv": {"spider": "merchant_feed", "feed_url": f"{base_url}/feed.tsv",
                           "currency": "USD", "allow_private_addresses": True}})  # fmt: skip
        report = crawl_site(sites["tsv"], DataPaths(root=tmp_path), settings=FAST_CRAWL_SETTINGS)
    assert (report.listed, report.scraped, report.dropped) == (3, 2, {"malformed row (2 fields, the header has 6)": 1})


def _folder_shop(root: Path) -> None:
    folder = root / "fashion-product-catalog"
    write_photos(folder / "images", ["1.jpg", "2.jpg", "3.jpg"])
    rows = [
        ["id", "image", "gender", "articleType", "baseColour", "productDisplayName", "target5"],
        ["1", "images/1.jpg", "Women", "Skirts", "White", "Palm Tree White Skirt", "skirt"],
        ["2", "images/2.jpg", "Men", "Jackets", "Black", "Roadster Black Jacket", "outwear"],
        ["3", "images/3.jpg", "Men", "Tshirts", "Red", "", "shirt"],  # no name
        ["4", "images/4.jpg", "Men", "Jeans", "Blue", "Levis Blue Jeans", "short"],  # no image file
        ["5", "../../etc/passwd", "Men", "Shirts", "Blue", "Escape", "shirt"],
        ["6", "images/1.jpg", "Men", "Shirts", "Blue", "Too", "many", "fields"],
    ]
    with (folder / "catalog.csv").open("w", newline="") as out:
        csv.writer(out).writerows(rows)


def test_folder_site_with_the_real_catalogs_layout(tmp_path, monkeypatch, network_attempts):
    _folder_shop(tmp_path / "real")
    monkeypatch.setenv("FASHION_REAL_PHOTOS", str(tmp_path / "real"))
    site = load_sites()["real_products"]
    report = crawl_site(site, DataPaths(root=tmp_path), settings=FAST_CRAWL_SETTINGS)
    assert report.listed == 6 and report.accounted
    assert report.dropped == {
        "missing name": 1,
        "dead image link": 1,
        "image outside the catalog folder": 1,
        "malformed row (wrong number of fields)": 1,
    }
    catalog = _catalog(tmp_path, ["real_products"]).set_index("sku")
    assert sorted(catalog.index) == ["1", "2"]
    skirt = catalog.loc["1"]
    assert (skirt["category"], skirt["article_type"], skirt["colour"]) == ("skirt", "Skirts", "White")
    assert skirt["url"] == "https://fashion-product-catalog.example/products/1"
    assert skirt["price"] == invented_price("real_products", "1", 9.99, 89.99) and skirt["currency"] == "USD"
    assert catalog.loc["2", "category"] == "outwear"
    assert network_attempts() == []


def test_folder_site_without_its_variable_fails_before_crawling(tmp_path, monkeypatch):
    monkeypatch.delenv("FASHION_REAL_PHOTOS", raising=False)
    with pytest.raises(CrawlFailed, match="FASHION_REAL_PHOTOS, which is not set"):
        crawl_site(load_sites()["real_products"], DataPaths(root=tmp_path))
    assert not (tmp_path / "catalog" / "raw" / "real_products").exists()


def test_real_catalog_rows_crawl_as_a_folder_site(real_data, tmp_path, monkeypatch):
    """The first 30 rows of ../shared/data/real/fashion-product-catalog, through the real_products entry."""
    source = real_data / "fashion-product-catalog"
    folder = tmp_path / "real" / "fashion-product-catalog"
    (folder / "images").mkdir(parents=True)
    with (source / "catalog.csv").open(newline="") as rows:
        head = [row for _, row in zip(range(31), csv.reader(rows), strict=False)]
    with (folder / "catalog.csv").open("w", newline="") as out:
        csv.writer(out).writerows(head)
    for row in head[1:]:
        (folder / row[1]).symlink_to(source / row[1])
    monkeypatch.setenv("FASHION_REAL_PHOTOS", str(tmp_path / "real"))
    report = crawl_site(load_sites()["real_products"], DataPaths(root=tmp_path), settings=FAST_CRAWL_SETTINGS)
    assert report.listed == 30 and report.accounted
    catalog = _catalog(tmp_path, ["real_products"]).set_index("sku")
    expected = {row[0]: row for row in head[1:]}
    assert len(catalog) == report.scraped >= 28
    for sku, product in catalog.iterrows():
        _id, _image, _gender, article_type, colour, name, target5 = expected[sku]
        assert (product["name"], product["category"]) == (" ".join(name.split()), target5)
        assert (product["article_type"], product["colour"]) == (article_type, colour)
