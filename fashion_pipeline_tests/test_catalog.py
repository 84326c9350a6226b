"""Catalog helpers: canonical URLs, merging crawls (first/last seen, new/changed/gone), the demo shop."""

from __future__ import annotations

import io
import json
import socket
import urllib.request

import pandas as pd
import pytest
from PIL import Image

from fashion_pipeline.lib.catalog.catalog import CATALOG_COLUMNS, RAW_COLUMNS, merge_catalog
from fashion_pipeline.lib.catalog.duplicates import DuplicateImageFinder, image_signature
from fashion_pipeline.lib.catalog.sites import load_sites
from fashion_pipeline.lib.catalog.urls import canonical_url
from fashion_pipeline.lib.common.images import load_image
from fashion_pipeline.lib.samples.demo_shop import (
    DemoShop,
    build_demo_shop,
    make_stand_in_items,
    select_shop_items,
    sku_for,
)
from fashion_pipeline.lib.samples.demo_shop_site import ROBOTS_TXT, serve_directory


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://Shop.example/p/1.html?ref=sale#top", "https://shop.example/p/1.html"),
        (
            "https://shop.example/p/1.html?utm_source=x&size=M&color=red",
            "https://shop.example/p/1.html?color=red&size=M",
        ),
        ("https://shop.example/p/1/", "https://shop.example/p/1/"),  # paths stay as written: still a working link
        (
            "https://www.amazon.de/gp/slredirect/picassoRedirect.html/ref=pa_sp?ie=UTF8&url=%2FZORRI%2Fdp%2FB072V37G4K"
            "%2Fref%3Dsr_1_2%3Fkeywords%3Dx%26psc%3D1&qualifier=1",
            "https://www.amazon.de/ZORRI/dp/B072V37G4K/ref=sr_1_2",
        ),
    ],
)
def test_canonical_url_drops_tracking_and_unwraps_ad_redirects(url, expected):
    assert canonical_url(url) == expected


def test_sites_config_names_a_spider_and_currency_per_site():
    sites = load_sites()
    assert {"demo_shop", "amazon", "darveys"} <= set(sites)
    assert sites["demo_shop"].recrawl
    assert sites["amazon"].keywords["outwear"] == "jacket"
    assert all(s.currency in ("USD", "INR") for s in sites.values())


def _raw(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in RAW_COLUMNS:
        if column not in frame:
            frame[column] = None
    return frame[list(RAW_COLUMNS)]


def _product(sku: str, price: float, at: str) -> dict:
    return {
        "product_id": f"demo_shop:{sku}",
        "site": "demo_shop",
        "sku": sku,
        "name": f"Red Cotton {sku}",
        "url": f"http://shop/p/{sku}.html",
        "image_url": f"http://shop/img/{sku}.jpg",
        "image_path": f"/images/{sku}.jpg",
        "price": price,
        "currency": "USD",
        "price_usd": price,
        "category": "dress",
        "crawled_at": at,
    }


def test_merge_counts_new_changed_gone_and_keeps_first_seen():
    day1, day2 = "2025-01-01T03:00:00+00:00", "2025-01-02T03:00:00+00:00"
    first, changes = merge_catalog(_raw([_product("a", 10.0, day1), _product("b", 20.0, day1)]), None)
    assert list(first.columns) == list(CATALOG_COLUMNS)
    assert (changes.new, changes.changed, changes.gone) == (["demo_shop:a", "demo_shop:b"], [], [])

    second, changes = merge_catalog(_raw([_product("a", 12.0, day2), _product("c", 5.0, day2)]), first)
    assert (changes.new, changes.changed, changes.gone) == (["demo_shop:c"], ["demo_shop:a"], ["demo_shop:b"])
    a = second.set_index("product_id").loc["demo_shop:a"]
    assert a["first_seen"] == pd.Timestamp(day1)  # carried over
    assert a["last_seen"] == pd.Timestamp(day2)
    assert a["price"] == 12.0

    _, changes = merge_catalog(_raw([_product("a", 12.0, day2), _product("c", 5.0, day2)]), second)
    assert (changes.new, changes.changed, changes.gone, changes.unchanged) == ([], [], [], 2)


def test_merge_refuses_a_product_id_twice():
    day = "2025-01-01T03:00:00+00:00"
    with pytest.raises(ValueError, match="listed twice"):
        merge_catalog(_raw([_product("a", 1.0, day), _product("a", 2.0, day)]), None)


def test_shop_products_are_shop_items_with_a_style_one_per_sku():
    items = pd.DataFrame(
        {
            "image_id": ["1", "2", "3", "4", "5"],
            "split": ["train", "validation", "validation", "validation", "validation"],
            "source": ["shop", "shop", "shop", "user", "shop"],
            "pair_id": [7, 7, 8, 7, 9],
            "style": [1, 1, 0, 1, 2],
            "category_id": [11, 11, 1, 11, 9],
            "item_index": [1, 1, 1, 1, 1],
        }
    )
    chosen = select_shop_items(items)
    assert list(chosen["sku"]) == ["000007-1-11", "000009-2-9"]  # style 0 and user items are not products
    assert chosen.set_index("sku").loc["000007-1-11", "split"] == "validation"  # the photo users are paired with
    assert sku_for(7, 1, 11) == "000007-1-11"


def test_demo_shop_has_every_page_and_fault_the_crawler_must_handle(tmp_path):
    items = make_stand_in_items(tmp_path / "photos", 20)
    shop = build_demo_shop(items, tmp_path / "shop", per_page=3)
    assert len(shop.products) == 20
    faults = {p.fault: p for p in shop.products if p.fault}
    assert set(faults) == {"dead_image", "listed_twice", "no_price", "price_range"}
    assert len(shop.expected_in_catalog) == 19
    root = shop.root
    assert (root / "robots.txt").read_text() == ROBOTS_TXT
    index = (root / "index.html").read_text()
    assert '<meta charset="utf-8">' in index
    assert all(f'data-category="{c}"' in index for c in {p.category for p in shop.products})
    # The JavaScript category's pages are shells; its products are in JSON beside them, paginated too.
    js_pages = sorted((root / "c" / shop.js_category).glob("*.json"))
    listed = [p["sku"] for page in js_pages for p in json.loads(page.read_text())["products"]]
    assert len(js_pages) >= 2
    assert 'data-client-rendered="1"' in (root / "c" / shop.js_category / "1.html").read_text()
    assert "product-card" not in (root / "c" / shop.js_category / "1.html").read_text()
    assert sorted(listed) == sorted(p.sku for p in shop.products if p.category == shop.js_category) + (
        [faults["listed_twice"].sku] if faults["listed_twice"].category == shop.js_category else []
    )
    # Prices in two currencies, with symbols; the dead image was never written.
    texts = [p.price_text for p in shop.products if p.price_text]
    assert any(t.startswith("$") for t in texts) and any("₹" in t or "Rs." in t or "INR" in t for t in texts)
    assert not (root / "img" / "missing").exists()
    assert (root / "p" / f"{faults['no_price'].sku}.html").read_text().count('itemprop="price"') == 0
    # Names come from colour, texture and category words.
    assert all(len(p.name.split()) >= 3 for p in shop.products)
    assert DemoShop.load(root).products == shop.products


def test_faults_avoid_products_that_validation_photos_need(tmp_path):
    items = make_stand_in_items(tmp_path / "photos", 10)
    users = items.copy()
    users["source"], users["split"] = "user", "validation"
    shop = build_demo_shop(pd.concat([items, users.iloc[:6]]), tmp_path / "shop")
    needed = {
        sku_for(p, s, c) for p, s, c in zip(users.pair_id[:6], users["style"][:6], users.category_id[:6], strict=True)
    }
    assert all(p.sku not in needed for p in shop.products if p.fault)


def test_product_photos_are_crops_of_the_shop_images(tmp_path):
    items = make_stand_in_items(tmp_path / "photos", 12)
    items.loc[0, ["x1", "y1", "x2", "y2"]] = [10.0, 20.0, 60.0, 80.0]
    shop = build_demo_shop(items, tmp_path / "shop")
    first = load_image(shop.root / "img" / f"{shop.products[0].sku}.jpg")
    assert first.size == (56, 67)  # the box plus a 5% margin


def test_duplicate_photos_are_found_through_reencoding_and_resizing_but_distinct_products_are_not(small_demo_shop):
    finder = DuplicateImageFinder()
    photos = {
        p.sku: load_image(small_demo_shop.root / "img" / f"{p.sku}.jpg") for p in small_demo_shop.expected_in_catalog
    }
    for sku, photo in photos.items():
        assert finder.find(image_signature(photo)) is None  # no two products are taken for one photo
        finder.add(sku, image_signature(photo))
    sku, photo = next(iter(photos.items()))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=60)
    assert finder.find(image_signature(load_image(buffer.getvalue()))) == sku
    assert finder.find(image_signature(photo.resize((photo.width * 2 // 3, photo.height * 2 // 3)))) == sku
    # The same cut in another colour is another product.
    recoloured = Image.merge("RGB", photo.split()[::-1])
    assert finder.find(image_signature(recoloured)) is None


def test_server_serves_the_shop_on_loopback_and_always_stops(tmp_path):
    (tmp_path / "index.html").write_text("hello")
    with pytest.raises(RuntimeError, match="crawl broke"), serve_directory(tmp_path) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        assert urllib.request.urlopen(f"{base_url}/index.html", timeout=5).read() == b"hello"
        port = int(base_url.rsplit(":", 1)[1])
        raise RuntimeError("crawl broke")
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more


def test_serving_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to serve"), serve_directory(tmp_path / "nope"):
        pass


def test_duplicate_photos_in_the_real_catalog(real_data):
    """Real product shots: the same photo under two ids is found; another shirt on the same model is not."""
    images = real_data / "fashion-product-catalog" / "images"
    finder = DuplicateImageFinder()
    for sku in ("10184", "11672", "12000", "12583", "12036"):
        finder.add(sku, image_signature(load_image(images / f"{sku}.jpg")))
    assert finder.find(image_signature(load_image(images / "10185.jpg"))) == "10184"  # the same bytes
    buffer = io.BytesIO()
    load_image(images / "12036.jpg").save(buffer, "JPEG", quality=60)
    assert finder.find(image_signature(load_image(buffer.getvalue()))) == "12036"
    # Navy vs yellow check shirt, blue vs white stripes, two prints on one green T-shirt: other products.
    for other in ("11704", "12014", "12602"):
        assert finder.find(image_signature(load_image(images / f"{other}.jpg"))) is None
