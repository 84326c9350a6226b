"""The shopping page in a real browser (Debian Chromium via Playwright) against a real uvicorn server.

The fake catalog of fixtures_serving, so exact products and prices can be asserted; every request the
browser makes is recorded and must stay on 127.0.0.1 (browser_support).
"""

from __future__ import annotations

import re

import httpx
import pytest

from fashion_pipeline.lib.retrieval.category_rule import CategoryRule
from fashion_pipeline.lib.retrieval.query import NO_GARMENT_MESSAGE
from fashion_pipeline_tests.browser_support import app_page, chromium, playwright_session
from fashion_pipeline_tests.fixtures_category import reading, said_recommender
from fashion_pipeline_tests.fixtures_serving import TWO_GARMENTS, FakeDetection, LiveServer, encode, garment_photo
from serve.app import ServeSettings, create_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    # Fails, never skips, when Chromium is missing; on exit, fails if any request left 127.0.0.1.
    with playwright_session() as playwright, chromium(playwright, tmp_path_factory.mktemp("chromium")) as handle:
        yield handle


@pytest.fixture
def console_errors() -> list[str]:
    """What the page logged as errors (script errors, CSP violations, failed loads); must end up empty."""
    return []


@pytest.fixture
def page(browser, serving_server, console_errors):
    with app_page(browser, serving_server.url, console_errors) as ready:
        yield ready


def upload(page, name: str, data: bytes, mime: str) -> None:
    page.set_input_files("#photo", files=[{"name": name, "mimeType": mime, "buffer": data}])


def test_upload_pick_a_garment_and_see_products_with_prices_and_working_links(page, serving_server):
    photo = encode(garment_photo(TWO_GARMENTS, size=(320, 240)), "JPEG", quality=92)
    upload(page, "street.jpg", photo, "image/jpeg")

    garments = page.locator(".garment")
    garments.nth(1).wait_for()
    assert garments.count() == 2
    assert sorted(garments.locator(".garment-category").all_text_contents()) == ["shirt", "skirt"]
    for crop in garments.locator(".garment-crop").all():
        assert crop.get_attribute("src").startswith("data:image/jpeg;base64,")
        assert crop.evaluate("img => img.complete && img.naturalWidth > 0")
    assert page.locator(".box").count() == 2  # the boxes drawn over the photo

    page.locator(".garment", has_text="skirt").click()
    page.wait_for_function("() => document.querySelector('#results-title').textContent.includes('skirt')")
    cards = page.locator(".product-card")
    cards.nth(5).wait_for()
    assert cards.count() == 6  # every skirt in the catalog (k = 12 > 6)
    names = cards.locator(".product-name").all_text_contents()
    assert names[0] == "Skirt no. 0"  # the patch's own colour first
    assert sorted(names) == [f"Skirt no. {i}" for i in range(6)]
    prices = dict(zip(names, cards.locator(".product-price").all_text_contents(), strict=True))
    assert prices["Skirt no. 0"] == "$20.00"
    assert prices["Skirt no. 1"] == "€30.00 (≈ $32.40)"  # original currency and US dollars

    links = [a.get_attribute("href") for a in cards.locator("a.product-link").all()]
    images = cards.locator("img.product-image")
    images.nth(5).scroll_into_view_if_needed()
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.product-image')].every(i => i.complete && i.naturalWidth > 0)"
    )
    image_urls = images.evaluate_all("imgs => imgs.map(i => i.currentSrc)")
    assert len(links) == 6 and all(link.startswith("http://127.0.0.1:") for link in links)
    assert all(re.fullmatch(rf"{serving_server.url}/images/[^/]+", url) for url in image_urls)
    for url in links + image_urls:
        assert httpx.get(url).status_code == 200, url


def test_filters_narrow_the_products(page):
    upload(page, "look.png", encode(garment_photo({"shirt": (40, 30, 140, 130)}), "PNG"), "image/png")
    page.locator(".product-card").nth(5).wait_for()

    page.select_option("#site", "other_shop")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.product-site')].every(s => s.textContent === 'other_shop')"
    )
    assert page.locator(".product-card").count() == 3
    page.fill("#max-price", "40")
    page.locator("#max-price").dispatch_event("change")
    page.wait_for_function("() => document.querySelectorAll('.product-card').length === 1")
    assert page.locator(".product-price").all_text_contents() == ["€30.00 (≈ $32.40)"]


def test_no_garment_and_bad_files_show_a_message(page, console_errors):
    upload(page, "wall.jpg", encode(garment_photo({}), "JPEG"), "image/jpeg")
    page.wait_for_function(f"() => document.querySelector('#status').textContent === {NO_GARMENT_MESSAGE!r}")
    assert page.locator("#garments").is_hidden()
    assert page.locator(".product-card").count() == 0

    upload(page, "notes.jpg", b"this is not a photo", "image/jpeg")
    page.wait_for_function("() => document.querySelector('#status').classList.contains('error')")
    assert "not a readable image" in page.locator("#status").text_content()
    # Chromium logs every 4xx answer; this one is the expected refusal of the bad file.
    assert console_errors == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]
    console_errors.clear()


def test_each_product_card_says_why_it_is_shown(page):
    upload(page, "street.jpg", encode(garment_photo(TWO_GARMENTS), "JPEG", quality=92), "image/jpeg")
    page.locator(".garment", has_text="skirt").click()
    page.wait_for_function("() => document.querySelector('#results-title').textContent.includes('skirt')")
    page.locator(".product-card").nth(5).wait_for()
    whys = page.locator(".product-why").all_text_contents()
    # The shop states no colour here, so the category searched is all there is to say.
    assert whys == ["Why: skirt, the category detected in your photo"] * 6
    assert page.locator(".product-why").first.is_visible()


@pytest.fixture(scope="module")
def said_server(serving_catalog):
    """The app whose detector sees a dress at 40 % and whose classifier reads the crop as a short at 90 %."""
    recommender = said_recommender(
        serving_catalog,
        [FakeDetection((60.0, 40.0, 200.0, 180.0), "dress", 0.4)],
        reading("short", 0.9),
        category_rule=CategoryRule("classifier_above", min_probability=0.6),
    )
    with LiveServer(create_app(recommender, ServeSettings())) as server:
        yield server


def test_a_category_the_classifier_decided_is_shown_searched_and_explained(browser, said_server, console_errors):
    with app_page(browser, said_server.url, console_errors) as page:
        upload(page, "product.jpg", encode(garment_photo({"dress": (60, 40, 200, 180)}), "JPEG"), "image/jpeg")
        page.locator(".product-card").nth(5).wait_for()
        garment = page.locator(".garment")
        assert garment.locator(".garment-category").all_text_contents() == ["short"]
        assert garment.locator(".garment-score").text_content() == "classifier 90% sure"  # not the detector's 40 %
        assert garment.get_attribute("title") == "The detector said dress; the classifier says short."
        assert page.locator("#results-title").text_content() == "Products like the short"
        assert sorted(page.locator(".product-name").all_text_contents()) == [f"Short no. {i}" for i in range(6)]
        whys = page.locator(".product-why").all_text_contents()
        assert whys == ["Why: short, as the classifier reads this garment (90%)"] * 6
