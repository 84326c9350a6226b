"""Feed readers on inputs written from the formats' documentation: Shopify's products.json, Merchant RSS 2.0,
Atom and tab-separated feeds, a catalog CSV; categories from shops' own product types."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fashion_pipeline.lib.catalog.feeds import (
    FeedError,
    invented_price,
    parse_amount,
    read_catalog_csv,
    read_merchant_feed,
    read_shopify_page,
    sale_applies,
    shopify_row,
)
from fashion_pipeline.lib.catalog.sites import SiteConfigError, category_for, load_google_category_ids, load_sites

KEYWORDS = load_sites()["real_products"].category_keywords
IDS = load_google_category_ids()


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["Shirt Dress"], "dress"),  # the last noun names the garment
        (["Dress Shirt"], "shirt"),
        (["Apparel & Accessories > Clothing > Jeans"], "short"),
        (["Sweatshirts"], "shirt"),
        (["Gift Card", "Summer Linen Blazer"], "outwear"),  # the first text that names one
        (["Address book"], None),  # whole words only
        ([None, "", "Bootcut Trousers"], "short"),
        # From Google's own RSS example feed: a cycling jersey is a top; a "Jersey Dress" is a dress.
        (["Sporting Goods > Outdoor Recreation > Cycling > Bicycle Clothing > Bicycle Jerseys"], "shirt"),
        (["Cotton Jersey Dress"], "dress"),
    ],
)
def test_category_from_a_shops_own_words(texts, expected):
    assert category_for(texts, KEYWORDS) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15.00 USD", (15.0, "USD")),
        ("USD 15.00", (15.0, "USD")),
        ("12.500 KWD", (12.5, "KWD")),  # three decimals are decimals in a feed, not thousands
        ("1299.00", (1299.0, "EUR")),  # no code: the site's currency
        ("free", (None, None)),
    ],
)
def test_feed_amounts(text, expected):
    assert parse_amount(text, "EUR") == expected


def _shopify_product(**changes) -> dict:
    product = {
        "id": 7611349762235,
        "title": "Linen Shirt Dress",
        "handle": "linen-shirt-dress",
        "product_type": "",
        "tags": ["summer", "dresses"],
        "updated_at": "2025-06-01T10:00:20-07:00",
        "variants": [
            {"id": 1, "title": "S", "available": False, "price": "39.00"},
            {"id": 2, "title": "M", "available": True, "price": "45.50"},
            {"id": 3, "title": "L", "available": True, "price": "49.00"},
        ],
        "images": [
            {"id": 2, "position": 2, "src": "//cdn.shopify.com/s/files/1/back.jpg?v=1"},
            {"id": 1, "position": 1, "src": "//cdn.shopify.com/s/files/1/front.jpg?v=1"},
        ],
    }
    return {**product, **changes}


def test_shopify_product_lowest_available_price_first_image_and_link():
    row = shopify_row(_shopify_product(), "https://shop.example", KEYWORDS)
    assert row.problem is None
    assert row.fields == {
        "sku": "7611349762235",
        "name": "Linen Shirt Dress",
        "url": "https://shop.example/products/linen-shirt-dress",
        "image_url": "https://cdn.shopify.com/s/files/1/front.jpg?v=1",
        "category": "dress",  # no product_type: the title decides before the tags
        "price": 45.5,  # 39.00 is sold out
        "price_text": "45.50",
        "availability": "in stock",
        "updated_at": "2025-06-01T10:00:20-07:00",
    }


def test_shopify_sold_out_product_is_kept_and_marked_and_old_string_tags_are_read():
    sold_out = [{"id": 1, "available": False, "price": "20.00"}, {"id": 2, "available": False, "price": "18.00"}]
    row = shopify_row(
        _shopify_product(title="Nova", variants=sold_out, tags="outerwear, Jackets"), "https://s.example", KEYWORDS
    )
    assert (row.fields["price"], row.fields["availability"], row.fields["category"]) == (
        18.0,
        "out of stock",
        "outwear",
    )
    assert shopify_row("not a product", "https://s.example", KEYWORDS).problem == "malformed product entry"


def test_shopify_page_must_be_a_products_list():
    assert len(read_shopify_page(json.dumps({"products": [_shopify_product()]}).encode())) == 1
    for body in (b"<html>Too many requests</html>", b'{"errors": "Not Found"}'):
        with pytest.raises(FeedError):
            read_shopify_page(body)


RSS = """<?xml version="1.0"?>
<rss xmlns:g="http://base.google.com/ns/1.0" version="2.0"><channel><title>Example</title>
<item><title>Roma Bootcut Jeans</title><link>https://shop.example/p/1</link><g:id>CLO-1</g:id>
  <g:price>29.50 USD</g:price><g:availability>out of stock</g:availability>
  <g:image_link><![CDATA[https://img.example/1.jpg?size=large&format=PNG]]></g:image_link>
  <g:google_product_category>Apparel &amp; Accessories &gt; Clothing &gt; Jeans</g:google_product_category>
  <g:color>Navy</g:color></item>
<item><g:id>CLO-2</g:id><g:title>Cycle Jersey</g:title><g:link>https://shop.example/p/2</g:link>
  <g:image_link>https://img.example/2.jpg</g:image_link><g:price>33.99 EUR</g:price>
  <g:sale_price>25.49 EUR</g:sale_price><g:availability>in_stock</g:availability>
  <g:sale_price_effective_date>2011-09-01T16:00-08:00/2011-09-03T16:00-08:00</g:sale_price_effective_date>
  <g:product_type>Women &gt; Tops</g:product_type></item>
<item><g:id>CLO-3</g:id><g:title>Maxi</g:title><g:link>https://shop.example/p/3</g:link>
  <g:image_link>https://img.example/3.jpg</g:image_link><g:price>40.00 USD</g:price>
  <g:sale_price>30.00 USD</g:sale_price><g:google_product_category>2271</g:google_product_category></item>
</channel></rss>"""


def test_merchant_rss_fields_sale_prices_and_categories():
    rows = [r.fields for r in read_merchant_feed(RSS.encode(), "USD", KEYWORDS, IDS)]
    jeans, jersey, maxi = rows
    assert jeans == {
        "sku": "CLO-1",
        "name": "Roma Bootcut Jeans",  # the plain RSS title where there is no g:title
        "url": "https://shop.example/p/1",
        "image_url": "https://img.example/1.jpg?size=large&format=PNG",
        "category": "short",
        "price": 29.5,
        "currency": "USD",
        "price_text": "29.50 USD",
        "price_note": None,
        "availability": "out of stock",  # kept, and marked
        "colour": "Navy",
    }
    # The jersey's sale ended in 2011: the regular price stands. The maxi's sale has no end date.
    assert (jersey["price"], jersey["currency"], jersey["availability"], jersey["category"]) == (
        33.99,
        "EUR",
        "in stock",
        "shirt",
    )
    assert (maxi["price"], maxi["price_note"], maxi["category"]) == (30.0, "sale price (regular 40 USD)", "dress")


def test_merchant_sale_price_within_its_dates_applies():
    feed = RSS.replace("2011-09-01T16:00-08:00/2011-09-03T16:00-08:00", "2020-01-01T00:00Z/2999-01-01T00:00Z")
    jersey = list(read_merchant_feed(feed.encode(), "USD", KEYWORDS, IDS))[1].fields
    assert jersey["price"] == 25.49


def test_merchant_atom_and_tsv_give_the_same_products():
    atom = """<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom" xmlns:g="http://base.google.com/ns/1.0">
    <title>Example</title><entry><title>Pleated Skirt</title><link href="https://shop.example/p/9"/>
    <g:id>S-9</g:id><g:price>19.00 GBP</g:price><g:image_link>https://img.example/9.jpg</g:image_link>
    <g:product_type>Skirts</g:product_type></entry></feed>"""
    tsv = "id\ttitle\tlink\tprice\timage_link\tproduct_type\nS-9\tPleated Skirt\thttps://shop.example/p/9\t19.00 GBP\thttps://img.example/9.jpg\tSkirts\n"
    (from_atom,) = read_merchant_feed(atom.encode(), "USD", KEYWORDS, IDS)
    (from_tsv,) = read_merchant_feed(tsv.encode(), "USD", KEYWORDS, IDS)
    assert from_atom.fields == from_tsv.fields
    assert (from_atom.fields["url"], from_atom.fields["price"], from_atom.fields["category"]) == (
        "https://shop.example/p/9",
        19.0,
        "skirt",
    )


def test_merchant_feed_bad_input():
    rows = list(read_merchant_feed(b"id\ttitle\tprice\nA\tShirt\t10 USD\nB\tbroken row\n", "USD", KEYWORDS, IDS))
    assert rows[0].fields["sku"] == "A" and rows[1].problem == "malformed row (2 fields, the header has 3)"
    with pytest.raises(FeedError, match="not well-formed"):
        list(read_merchant_feed(b"<rss><channel><item>", "USD", KEYWORDS, IDS))
    with pytest.raises(FeedError, match="neither RSS"):
        list(read_merchant_feed(b"<html><body>Sign in</body></html>", "USD", KEYWORDS, IDS))
    # An entity defined in the feed is never expanded (no local files, no "billion laughs").
    xxe = b"""<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>
    <rss xmlns:g="http://base.google.com/ns/1.0"><channel><item><g:id>&x;</g:id></item></channel></rss>"""
    (row,) = read_merchant_feed(xxe, "USD", KEYWORDS, IDS)
    assert row.fields["sku"] is None


def _csv(tmp_path: Path, text: str) -> list:
    return list(
        read_catalog_csv(
            text.encode(),
            tmp_path,
            site="shop",
            columns={"sku": "id", "name": "productDisplayName", "category": "target5", "article_type": "articleType"},
            default_currency="USD",
            keywords=KEYWORDS,
            url_template="https://shop.example/products/{sku}",
            price_range=(9.99, 89.99),
        )
    )


def test_catalog_csv_invents_links_and_prices_deterministically(tmp_path):
    rows = _csv(
        tmp_path,
        "id,image,articleType,productDisplayName,target5\n"
        "10000,images/10000.jpg,Skirts,Palm Tree Girls White Skirt,skirt\n"
        "10001,images/10001.jpg,Kurtas,Blue Kurta,\n"
        "10002,../outside.jpg,Tshirts,Escape,shirt\n"
        "10003,images/10003.jpg,Tshirts,Too,many,fields\n",
    )
    first, second, outside, malformed = rows
    assert first.fields["url"] == "https://shop.example/products/10000"
    assert first.fields["image_url"] == (tmp_path / "images" / "10000.jpg").as_uri()
    assert (first.fields["category"], first.fields["article_type"]) == ("skirt", "Skirts")
    assert (
        first.fields["price"] == invented_price("shop", "10000", 9.99, 89.99) == _csv(tmp_path, _ONE)[0].fields["price"]
    )
    assert 9.99 <= first.fields["price"] <= 89.99 and f"{first.fields['price']:.2f}".endswith(".99")
    assert first.fields["price_note"] == "invented (no prices given)"
    assert second.fields["category"] == "shirt"  # no target5: the name's own word
    assert outside.problem == "image outside the catalog folder"
    assert malformed.problem == "malformed row (wrong number of fields)"
    with pytest.raises(FeedError, match="no column 'id'"):
        _csv(tmp_path, "sku,image\n1,a.jpg\n")


_ONE = "id,image,articleType,productDisplayName,target5\n10000,images/10000.jpg,Skirts,Palm Tree Skirt,skirt\n"


def test_folder_site_names_the_unset_variable(monkeypatch, tmp_path):
    site = load_sites()["real_products"]
    monkeypatch.delenv("FASHION_REAL_PHOTOS", raising=False)
    with pytest.raises(SiteConfigError, match="FASHION_REAL_PHOTOS, which is not set"):
        site.local_folder()
    monkeypatch.setenv("FASHION_REAL_PHOTOS", str(tmp_path))
    with pytest.raises(SiteConfigError, match=r"fashion-product-catalog/catalog\.csv does not exist"):
        site.local_folder()


def test_sale_dates_are_read_in_their_own_time_zone():
    # A sale ending at 16:00 at UTC-8 is still on at 23:59 UTC the same day.
    period = "2024-02-24T11:07+0100/2024-02-29T16:00-0800"
    assert sale_applies(period, datetime(2024, 2, 29, 23, 59, tzinfo=UTC))
    assert not sale_applies(period, datetime(2024, 3, 1, 0, 1, tzinfo=UTC))
