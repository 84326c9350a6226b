"""What a crawl refuses to do: reach loopback, private or link-local addresses for a real site, keep a
product whose link leads elsewhere once canonical, download more than its size caps, or (in a real crawl)
start Chromium with the tests' loopback-only resolver."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from scrapy import Request
from scrapy.exceptions import IgnoreRequest
from scrapy.utils.test import get_crawler
from twisted.internet import defer

from fashion_pipeline.crawl import settings as crawl_settings
from fashion_pipeline.crawl.items import ProductItem
from fashion_pipeline.crawl.middlewares import (
    PrivateAddressRefused,
    PublicAddressMiddleware,
    PublicAddressResolver,
    retry_after_seconds,
)
from fashion_pipeline.crawl.pipelines import ValidationPipeline
from fashion_pipeline.crawl.report import ProductDropped
from fashion_pipeline.crawl.runner import CrawlFailed, crawl_site
from fashion_pipeline.crawl.spiders.amazon import AmazonSpider
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.samples.demo_shop_site import serve_directory
from fashion_pipeline.lib.samples.shop_feeds import ShopifyStorefront, merchant_rss, shopify_storefront
from fashion_pipeline_tests.fixtures_catalog import FAST_CRAWL_SETTINGS, use_sites, write_photos


def _middleware(allow_private: bool = False, folder: Path | None = None) -> PublicAddressMiddleware:
    crawler = get_crawler(AmazonSpider, {"CATALOG_ALLOW_PRIVATE_ADDRESSES": allow_private})
    crawler.spider = AmazonSpider.from_crawler(crawler)
    crawler.spider.folder = folder
    return PublicAddressMiddleware(crawler)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/admin",
        "http://localhost/",
        "http://api.localhost/",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://10.0.0.7/",
        "http://192.168.1.1/",
        "http://[::1]:9000/",
        "http://0.0.0.0/",
        "ftp://shop.example/feed.xml",
        "file:///etc/passwd",
    ],
)
def test_a_real_site_never_reaches_inside(url):
    with pytest.raises(IgnoreRequest, match="private address refused"):
        _middleware().process_request(Request(url))


def test_public_addresses_pass_and_an_allowing_entry_reaches_loopback(tmp_path):
    assert _middleware().process_request(Request("https://www.amazon.in/s?k=dress")) is None
    assert _middleware().process_request(Request("http://93.184.215.14/")) is None
    assert _middleware(allow_private=True).process_request(Request("http://127.0.0.1:8000/")) is None
    # A folder site reads file links inside its own folder only.
    inside = _middleware(folder=tmp_path)
    assert inside.process_request(Request((tmp_path / "images" / "1.jpg").as_uri())) is None
    with pytest.raises(IgnoreRequest):
        inside.process_request(Request((tmp_path / "images" / ".." / ".." / "x.jpg").as_uri()))


def test_host_names_are_checked_once_resolved(monkeypatch):
    """A public-looking name that resolves to 127.0.0.1 (DNS rebinding) fails its lookup."""
    answers = {"shop.example": "93.184.215.14", "evil.example": "127.0.0.1", "127.0.0.1": "127.0.0.1"}
    monkeypatch.setattr(
        "scrapy.resolver.CachingThreadedResolver.getHostByName",
        lambda self, name, timeout=(): defer.succeed(answers[name]),
    )
    resolver = PublicAddressResolver.__new__(PublicAddressResolver)
    resolver.allow_private = False
    results = {}
    for name in answers:
        resolver.getHostByName(name).addCallbacks(
            lambda address, name=name: results.setdefault(name, address),
            lambda failure, name=name: results.setdefault(name, failure.value),
        )
    assert results["shop.example"] == "93.184.215.14"
    assert isinstance(results["evil.example"], PrivateAddressRefused)
    assert "evil.example resolves to 127.0.0.1" in str(results["evil.example"])
    assert results["127.0.0.1"] == "127.0.0.1"  # address literals were judged by the middleware


def test_a_real_sites_crawl_to_loopback_is_refused_without_a_single_request(tmp_path, monkeypatch):
    handler = shopify_storefront([])
    with serve_directory(tmp_path, handler) as base_url:
        sites = use_sites(
            tmp_path, monkeypatch, {"shop": {"spider": "shopify", "start_url": base_url, "currency": "USD"}}
        )
        with pytest.raises(CrawlFailed, match=r"private address refused: 127\.0\.0\.1") as refused:
            crawl_site(sites["shop"], DataPaths(root=tmp_path), settings=FAST_CRAWL_SETTINGS)
    assert handler.requests == []
    assert refused.value.report.pages_failed == {"private address refused: 127.0.0.1": 1}


def _validated(url: str, image_url: str = "https://www.amazon.in/img/1.jpg", name: str = "Dress") -> ProductItem:
    crawler = get_crawler(AmazonSpider)
    crawler.spider = AmazonSpider.from_crawler(crawler)
    item = ProductItem(site="amazon", sku="B1", name=name, url=url, image_url=image_url, category="dress",
                       price_text="₹ 999", crawled_at="2025-01-01T00:00:00+00:00")  # fmt: skip
    return ValidationPipeline(crawler).process_item(item)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # Ad redirects are unwrapped first; what they lead to is then checked like any link.
        ("https://www.amazon.in/gp/slredirect/x.html?url=https%3A%2F%2Fevil.example%2Fdp%2FB1", "link to another site"),
        ("https://www.amazon.in/gp/redirect.html?url=%2F%2Fevil.example%2Fdp%2FB1", "link to another site"),
        ("javascript:alert(1)", "not an http(s) link"),
        ("https://www.amazon.in.evil.example/dp/B1", "link to another site"),
    ],
)
def test_links_are_validated_after_canonicalising(url, reason):
    with pytest.raises(ProductDropped) as dropped:
        _validated(url)
    assert dropped.value.reason == reason


def test_a_tracking_redirect_on_the_shop_becomes_its_canonical_page():
    item = _validated("https://www.amazon.in/gp/slredirect/x.html?url=%2Fdp%2FB1%3Fref%3Dsr_1&qualifier=1")
    assert item.url == "https://www.amazon.in/dp/B1"
    with pytest.raises(ProductDropped, match="image link to another site"):
        _validated("https://www.amazon.in/dp/B1", image_url="https://images.evil.example/1.jpg")


def test_a_crawl_that_fails_otherwise_keeps_its_log(tmp_path, monkeypatch):
    """An unreadable crawl report is no CrawlFailed, yet the crawl's log survives its temp folder."""
    from fashion_pipeline.crawl import runner

    sites = use_sites(
        tmp_path, monkeypatch, {"shop": {"spider": "shopify", "start_url": "http://127.0.0.1:9", "currency": "USD"}}
    )

    def unreadable_report(site, out_dir, *args, **kwargs):
        (out_dir / runner.CRAWL_LOG_FILE).write_text("spider log line\n")
        raise ValueError("crawl_report.json: Expecting value: line 1 column 1")

    monkeypatch.setattr(runner, "run_spider", unreadable_report)
    data = DataPaths(root=tmp_path)
    with pytest.raises(ValueError, match="Expecting value") as failed:
        crawl_site(sites["shop"], data)
    log = data.catalog_raw_dir / "shop.failed.log"
    assert log.read_text() == "spider log line\n"
    assert failed.value.__notes__ == [f"(previous data kept; full log: {log})"]
    assert [p.name for p in data.catalog_raw_dir.iterdir()] == ["shop.failed.log"]  # no temp folder left


def test_control_characters_are_stripped_from_the_product_name():
    """The CLI prints names raw: an escape sequence or a bidi override from a shop never reaches it."""
    url = "https://www.amazon.in/dp/B1"
    assert _validated(url, name="\x1b[2J\x1b[31mRed\tdress\x07\n  \u202eevil\x9b").name == "[2J [31mRed dress evil"
    assert (
        _validated(url, name="Caf\u00e9 \U0001f469\u200d\U0001f4bb top").name
        == "Caf\u00e9 \U0001f469\u200d\U0001f4bb top"
    )
    with pytest.raises(ProductDropped, match="missing name"):
        _validated(url, name="\x1b\x00\u202e")


def test_size_caps_for_images_and_feeds(tmp_path, monkeypatch):
    write_photos(tmp_path / "site" / "img", ["A.jpg", "B.jpg"])
    noise = Image.effect_noise((800, 800), 100).convert("RGB")
    noise.save(tmp_path / "site" / "img" / "BIG.jpg", quality=95)  # about 400 kB
    with serve_directory(tmp_path / "site", ShopifyStorefront) as base_url:
        items = [
            {"id": sku, "title": f"Linen Dress {sku}", "link": f"{base_url}/p/{sku}", "price": "20.00 USD",
             "image_link": f"{base_url}/img/{sku}.jpg"}
            for sku in ("A", "B", "BIG")
        ]  # fmt: skip
        (tmp_path / "site" / "feed.xml").write_text(merchant_rss(items))
        entry = {"spider": "merchant_feed", "feed_url": f"{base_url}/feed.xml", "currency": "USD",
                 "allow_private_addresses": True}  # fmt: skip
        sites = use_sites(tmp_path, monkeypatch, {"feed": entry})
        capped = {**FAST_CRAWL_SETTINGS, "CATALOG_IMAGE_MAXSIZE": "100000"}
        report = crawl_site(sites["feed"], DataPaths(root=tmp_path), settings=capped)
        assert (report.scraped, report.dropped) == (2, {"image too large": 1})
        tiny_feed = {**FAST_CRAWL_SETTINGS, "CATALOG_FEED_MAXSIZE": "200"}
        with pytest.raises(CrawlFailed, match="scraped no products") as refused:
            crawl_site(sites["feed"], DataPaths(root=tmp_path), settings=tiny_feed)
        assert refused.value.report.pages_failed == {"larger than the size cap": 1}


def test_real_crawls_start_chromium_without_the_loopback_only_resolver(monkeypatch):
    monkeypatch.delenv("FASHION_CRAWL_LOOPBACK_ONLY", raising=False)
    assert not any("host-resolver-rules" in arg for arg in crawl_settings.crawl_chromium_args())
    monkeypatch.setenv("FASHION_CRAWL_LOOPBACK_ONLY", "1")
    assert "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1" in crawl_settings.crawl_chromium_args()
    # The settings every crawl starts with: a page sees the network, background traffic stays off.
    assert (
        crawl_settings.DOWNLOAD_MAXSIZE == 10 * 1024 * 1024 and crawl_settings.CATALOG_IMAGE_MAXSIZE == 20 * 1024 * 1024
    )
    assert "--disable-background-networking" in crawl_settings.CHROMIUM_ARGS
    # Chromium's account, updater and autofill lookups, which the --disable flags leave on, go to a closed port.
    services = [
        a for a in crawl_settings.CHROMIUM_ARGS if a.startswith(("--gaia-url", "--component-updater", "--autofill"))
    ]
    assert len(services) == 3 and all(a.endswith("=http://127.0.0.1:9/") for a in services)


@pytest.mark.parametrize(
    ("header", "seconds"), [("120", 120.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("soon", None)]
)
def test_retry_after_values(header, seconds):
    assert retry_after_seconds(header) == seconds
