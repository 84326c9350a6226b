"""The shopping app as a shopper meets it, in Chromium, over the demo shop the pipeline really crawls.

The catalog is the embedded default's: the demo shop generated from the tiny DeepFashion2 sample's shop
photos, crawled by the demo_shop spider (catalog_raw, catalog_images), merged (product_catalog). The
retrieval models are stand-ins, because trained ones cost minutes: a detector that reports the two garments
a person sees in the seed photo (a white shirt and a patterned skirt) and a colour-grid embedder. The page,
the API, the links and the shop's pages are the real ones.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import pytest

from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.common.images import load_image
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.retrieval.knn import build_index, load_indexes
from fashion_pipeline.lib.retrieval.recommender import Recommender
from fashion_pipeline.lib.samples.demo_shop import DemoShop
from fashion_pipeline_tests.browser_support import app_page as open_app_page
from fashion_pipeline_tests.browser_support import chromium, playwright_session, save_screenshot
from fashion_pipeline_tests.fixtures_serving import EMBEDDER_VERSION, ColourEmbedder, FakeDetection, LiveServer
from serve.app import create_app

pytestmark = pytest.mark.browser

SEED_PHOTO = "demo_Real_Image_2.webp"  # 900 x 1351, with an alpha channel: a white shirt over a floral skirt
# Where the garments are in the seed photo, as fractions of its width and height, and how sure a detector is.
SEED_GARMENTS = (("shirt", (0.305, 0.148, 0.683, 0.444), 0.91), ("skirt", (0.305, 0.359, 0.778, 0.947), 0.84))
SIMILARITY = re.compile(r"(\d{1,3})% similar")


class CentredColourEmbedder(ColourEmbedder):
    """fixtures_serving's colour grid, centred on mid-grey: a dark garment and a light one point in opposite
    directions, so the similarities spread over the whole scale as a trained embedding's do."""

    def embed(self, images) -> np.ndarray:
        rows = []
        for image in images:
            small = np.asarray(image.convert("RGB").resize((24, 24)), dtype=np.float32) / 255.0 - 0.5
            rows.append(small.reshape(3, 8, 3, 8, 3).mean(axis=(1, 3)).reshape(-1))
        vectors = np.asarray(rows, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)


class SeedPhotoDetector:
    """Finds the seed photo's two garments in any photo, at the same relative places."""

    version = 1
    classes = CATEGORIES

    def detect(self, image, conf: float = 0.25) -> list[FakeDetection]:
        width, height = image.size
        return [
            FakeDetection(box=(x1 * width, y1 * height, x2 * width, y2 * height), category=category, score=score)
            for category, (x1, y1, x2, y2), score in SEED_GARMENTS
            if score >= conf
        ]


@pytest.fixture(scope="module")
def crawled_demo_shop(tiny_dataset: DataPaths, tmp_path_factory) -> DataPaths:
    """A data root whose catalog is the demo shop, generated and crawled as `make demo` does it."""
    from fashion_pipeline.defs.catalog.assets import catalog_images, catalog_raw, product_catalog
    from fashion_pipeline.defs.resources import DataPathsResource
    from fashion_pipeline_tests.fixtures_catalog import require_chromium

    require_chromium()
    paths = DataPaths(root=tmp_path_factory.mktemp("app-data"), df2_root_setting=str(tiny_dataset.df2_root))
    paths.garment_items.parent.mkdir(parents=True)
    paths.garment_items.write_bytes(tiny_dataset.garment_items.read_bytes())
    resources = {"paths": DataPathsResource(data_dir=str(paths.root), df2_root=str(tiny_dataset.df2_root))}
    instance = dg.DagsterInstance.ephemeral()
    crawl = dg.materialize(
        [catalog_raw, catalog_images], partition_key="demo_shop", resources=resources, instance=instance
    )
    assert crawl.success
    assert dg.materialize([product_catalog], resources=resources, instance=instance).success
    # One index per category over the colour-grid embeddings of the crawled product photos.
    products = pd.read_parquet(paths.products)
    embedder = CentredColourEmbedder()
    for category, group in products.groupby("category"):
        images = [load_image(_image_file(paths, p)) for p in group["image_path"]]
        build_index(
            embedder.embed(images), group["product_id"].tolist(), paths.index_dir / str(category),
            category=str(category), model_version=EMBEDDER_VERSION,
        )  # fmt: skip
    return paths


def _image_file(paths: DataPaths, stored: str) -> Path:
    """`image_path` as the app reads it: absolute, or under the catalog images folder or the data root."""
    return next(base / stored for base in (paths.catalog_images_dir, paths.root) if (base / stored).is_file())


@pytest.fixture(scope="module")
def app_server(crawled_demo_shop):
    products = pd.read_parquet(crawled_demo_shop.products)
    indexes = load_indexes(crawled_demo_shop.index_dir)
    recommender = Recommender(SeedPhotoDetector(), CentredColourEmbedder(), indexes, products, paths=crawled_demo_shop)
    with LiveServer(create_app(recommender)) as server:
        yield server


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with playwright_session() as playwright, chromium(playwright, tmp_path_factory.mktemp("chromium-app")) as handle:
        yield handle


@pytest.fixture
def app_page(browser, app_server):
    with open_app_page(browser, app_server.url, []) as page:
        yield page


def upload_seed_photo(page, real_data: Path) -> None:
    photo = real_data / "seed-demo-photos" / SEED_PHOTO
    page.set_input_files("#photo", files=[{"name": photo.name, "mimeType": "image/webp", "buffer": photo.read_bytes()}])
    page.locator(".garment").nth(1).wait_for()
    page.locator(".product-card").first.wait_for()


def similarities(page) -> list[int]:
    texts = page.locator(".product-similarity").all_text_contents()
    values = [int(SIMILARITY.fullmatch(text).group(1)) for text in texts]
    assert all(0 <= value <= 100 for value in values)
    return values


def test_seed_photo_shows_its_garments_and_similar_products(app_page, app_server, real_data, tmp_path):
    upload_seed_photo(app_page, real_data)
    garments = app_page.locator(".garment")
    assert garments.locator(".garment-category").all_text_contents() == ["shirt", "skirt"]
    assert garments.locator(".garment-score").all_text_contents() == ["91% sure", "84% sure"]
    assert app_page.locator(".box").count() == 2
    assert app_page.locator("#status").text_content() == ""  # nothing to explain: no message at all

    cards = app_page.locator(".product-card")
    ranked = similarities(app_page)
    assert len(ranked) == cards.count() > 0 and ranked == sorted(ranked, reverse=True)
    links = cards.locator("a.product-link").evaluate_all("links => links.map(a => a.href)")
    # The catalog records http://127.0.0.1:8000/demo-shop/...; the page opens the shop this app serves.
    assert all(link.startswith(f"{app_server.url}/demo-shop/p/") for link in links)
    app_page.wait_for_function(
        "() => [...document.querySelectorAll('img.product-image')].every(i => i.complete && i.naturalWidth > 0)"
    )
    save_screenshot(app_page, "app", tmp_path)

    # Another detection: the skirt's products, all skirts.
    garments.nth(1).click()
    app_page.wait_for_function("() => document.querySelector('#results-title').textContent.endsWith('skirt')")
    assert all(name.endswith("Skirt") for name in cards.locator(".product-name").all_text_contents())
    assert app_page.locator(".box.picked").count() == 1

    # Another category for both: dresses, and no confidence that belonged to the detector's categories.
    app_page.select_option("#category", "dress")
    app_page.wait_for_function("() => document.querySelector('.garment-score').textContent.startsWith('searched')")
    assert garments.locator(".garment-score").all_text_contents() == ["searched as dress"] * 2
    assert "sure" not in app_page.locator("#garments").inner_text()
    assert all(name.endswith("Dress") for name in cards.locator(".product-name").all_text_contents())
    similarities(app_page)  # still 0-100 %, however far a dress is from the skirt's crop


def test_a_product_card_opens_its_shop_page_and_every_link_there_works(app_page, real_data):
    upload_seed_photo(app_page, real_data)
    card = app_page.locator(".product-card").first
    name = card.locator(".product-name").text_content()
    with app_page.context.expect_page() as opened:
        card.locator("a.product-link").click()  # opens in a new tab
    shop_page = opened.value
    shop_page.wait_for_load_state()
    assert shop_page.locator("h1").text_content() == name
    assert shop_page.locator("img.product-image").evaluate("img => img.complete && img.naturalWidth > 0")
    links = shop_page.locator("a[href]").evaluate_all("links => links.map(a => a.href)")
    assert len(links) >= 3  # home, the categories, the product's category, the cart
    for link in links:
        response = shop_page.goto(link)
        assert response is not None and response.status == 200, link
    assert "no checkout" in shop_page.locator("body").inner_text()  # the cart link was the last one


SETTLED_IMAGES = """imgs => Promise.all(imgs.map(async i => {
    if (!i.complete) {
        await new Promise(done => {
            i.addEventListener("load", done, {once: true});
            i.addEventListener("error", done, {once: true});
        });
    }
    return [i.src, i.naturalWidth > 0];
}))"""


def test_every_page_reachable_from_the_result_cards_is_there(app_page, app_server, crawled_demo_shop, real_data):
    """A browser crawl of the demo shop from the cards' links: every page 200, every image but the one the
    shop breaks on purpose (its dead image link, for the crawler to cope with) loads."""
    upload_seed_photo(app_page, real_data)
    start = app_page.locator(".product-card a.product-link").evaluate_all("links => links.map(a => a.href)")
    shop_root = f"{app_server.url}/demo-shop/"
    page = app_page.context.new_page()
    queue, seen, images = deque(start), set(start), {}
    while queue:
        url = queue.popleft()
        response = page.goto(url)
        assert response is not None and response.status == 200, url
        if page.locator("[data-client-rendered]").count():
            page.wait_for_selector("body[data-rendered]", state="attached")  # the JavaScript listing
        for link in page.locator("a[href]").evaluate_all("links => links.map(a => a.href)"):
            link = urldefrag(link).url
            if link.startswith(shop_root) and link not in seen:
                seen.add(link)
                queue.append(link)
        # Images the JavaScript listing just inserted may not have started loading yet: wait for each to load
        # or fail, and name it by its src attribute (currentSrc stays empty until the fetch begins).
        for src, loaded in page.locator("img").evaluate_all(SETTLED_IMAGES):
            images[src] = images.get(src, False) or loaded
    shop = DemoShop.load(crawled_demo_shop.demo_shop_dir)
    product_pages = {urlsplit(u).path for u in seen if "/p/" in u}
    assert product_pages == {f"/demo-shop/p/{p.sku}.html" for p in shop.products}  # the whole shop reached
    broken = sorted(urlsplit(src).path for src, loaded in images.items() if not loaded)
    (dead,) = [p for p in shop.products if p.fault == "dead_image"]
    assert broken == [f"/demo-shop/img/missing/{dead.sku}.jpg"]
    assert httpx.get(f"{app_server.url}/demo-shop/img/missing/{dead.sku}.jpg").status_code == 404
    print(f"crawled {len(seen)} pages and {len(images)} images from {len(start)} result cards")


def test_a_negative_price_gets_a_readable_message_and_no_request(app_page, app_server, browser, real_data):
    price_problem = "Enter a maximum price of 0 or more US dollars, or leave it empty for any price."
    app_page.fill("#max-price", "-1")  # before any photo: said at once ...
    app_page.locator("#max-price").dispatch_event("change")
    assert app_page.locator("#status").text_content() == price_problem
    app_page.fill("#max-price", "")  # ... and gone once corrected
    app_page.locator("#max-price").dispatch_event("change")
    assert app_page.locator("#status").text_content() == ""

    upload_seed_photo(app_page, real_data)
    asked = len([u for u in browser.log.urls("POST") if u.endswith("/api/recommend")])
    app_page.fill("#max-price", "-5")
    app_page.locator("#max-price").dispatch_event("change")
    app_page.wait_for_function("() => document.querySelector('#status').classList.contains('error')")
    assert app_page.locator("#status").text_content() == price_problem
    assert app_page.locator("#max-price").get_attribute("aria-invalid") == "true"
    assert len([u for u in browser.log.urls("POST") if u.endswith("/api/recommend")]) == asked

    # A script sending it anyway gets one sentence back, not a validation dump.
    photo = (real_data / "seed-demo-photos" / SEED_PHOTO).read_bytes()
    answer = httpx.post(
        f"{app_server.url}/api/recommend", files={"image": ("p.webp", photo)}, data={"max_price": "-5"}, timeout=60
    )
    assert answer.status_code == 422
    assert answer.json() == {"error": "max_price must be a non-negative number of US dollars, got '-5'"}

    # No product that cheap: said once, under the garment, not again in the status line.
    app_page.fill("#max-price", "1")
    app_page.locator("#max-price").dispatch_event("change")
    app_page.locator("#results-empty").wait_for()
    no_match = "No product matches these filters; try a higher price or another shop."
    assert app_page.locator("#results-empty").text_content() == no_match
    assert app_page.locator("body").inner_text().count("No product matches") == 1
    assert app_page.locator(".product-card").count() == 0

    app_page.fill("#max-price", "100")
    app_page.locator("#max-price").dispatch_event("change")
    app_page.wait_for_function("() => !document.querySelector('#status').classList.contains('error')")
    assert app_page.locator("#max-price").get_attribute("aria-invalid") == "false"
    app_page.wait_for_function("() => !document.body.classList.contains('busy')")
    # "$80.99" or "₹ 2,499.00 (≈ $29.99)": the last dollar amount is the price in US dollars.
    prices = [re.findall(r"\$([\d,.]+)", text)[-1] for text in app_page.locator(".product-price").all_text_contents()]
    assert prices and all(float(p.replace(",", "")) <= 100 for p in prices)
