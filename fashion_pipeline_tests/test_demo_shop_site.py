"""The demo shop as a shopper sees it: names that match the pictures and links that work wherever it is served."""

from __future__ import annotations

import json
import posixpath
import re

import numpy as np
import pytest

from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.samples.demo_shop import build_demo_shop, make_stand_in_items
from fashion_pipeline.lib.samples.garments import Appearance, random_spec
from fashion_pipeline.lib.samples.product_names import STYLES, TEXTURES, colour_words, garment_colours, unique_name
from fashion_pipeline.lib.samples.sample_photos import Photo, Product, render_photo

COLOUR_WORDS = {"Black", "White", "Grey", "Red", "Pink", "Brown", "Orange", "Beige", "Yellow", "Olive", "Green",
                "Teal", "Navy", "Blue", "Purple"}  # fmt: skip


@pytest.mark.parametrize(
    ("rgb", "word"),
    [
        ((25, 25, 25), "Black"), ((240, 240, 236), "White"), ((128, 128, 128), "Grey"), ((190, 35, 40), "Red"),
        ((230, 140, 175), "Pink"), ((115, 70, 35), "Brown"), ((225, 120, 35), "Orange"),
        ((210, 190, 155), "Beige"), ((225, 195, 50), "Yellow"), ((110, 115, 45), "Olive"),
        ((45, 130, 60), "Green"), ((40, 170, 170), "Teal"), ((25, 35, 90), "Navy"), ((50, 100, 200), "Blue"),
        ((115, 55, 145), "Purple"),
    ],
)  # fmt: skip
def test_colour_words_of_plain_colours(rgb, word):
    assert colour_words(np.array([rgb], dtype=np.uint8)).tolist() == [word]


def _shop_photo_crop(category_id: int, pattern: str, colours, seed: int = 1):
    """A product photographed as the generated sample does (lit, shaded, shadowed, JPEG-free), cropped."""
    rng = np.random.default_rng(seed)
    look = Appearance(pattern=pattern, colors=colours, period=0.3, angle=0.0, duty=0.5)
    product = Product(pair_id=1, style=1, spec=random_spec(category_id, rng), look=look)
    image, annotation = render_photo(Photo("shop", 1, (product,)), rng, 256)
    x1, y1, x2, y2 = annotation["item1"]["bounding_box"]
    margin = (x2 - x1) // 20, (y2 - y1) // 20
    return image.crop((x1 - margin[0], y1 - margin[1], x2 + margin[0], y2 + margin[1]))


@pytest.mark.parametrize(
    ("category_id", "pattern", "colours", "words"),
    [
        (1, "solid", ((50, 100, 200), (240, 220, 40)), ["Blue"]),  # a short sleeve top
        (10, "solid", ((190, 35, 40), (20, 20, 20)), ["Red"]),  # a dress
        (8, "solid", ((25, 25, 25), (200, 200, 200)), ["Black"]),  # trousers
        (2, "solid", ((245, 245, 242), (20, 20, 20)), ["White"]),  # white on the white studio background
        # Stripes of blue and yellow: both named. Their mean, a grey-beige, is a colour the photo lacks.
        (9, "stripes", ((50, 100, 200), (230, 200, 40)), ["Blue", "Yellow"]),
        (4, "dots", ((25, 35, 90), (240, 240, 236)), ["Navy"]),  # small white dots on navy
    ],
)
def test_product_names_take_the_colour_the_photo_shows(category_id, pattern, colours, words):
    crop = _shop_photo_crop(category_id, pattern, colours)
    assert sorted(garment_colours(crop)) == sorted(words)  # stripes of equal width: either may come first


def test_names_stay_unique_when_colour_and_category_repeat():
    taken: set[str] = set()
    names = [unique_name("Blue", "Skirt", f"sku-{i}", taken) for i in range(len(TEXTURES) + 5)]
    assert len(set(names)) == len(names)
    assert {n.split()[1] for n in names[: len(TEXTURES)]} == set(TEXTURES)  # fabric words first ...
    assert all(n.split()[0] in STYLES for n in names[len(TEXTURES) :])  # ... then a style word in front
    assert all(n.startswith(("Blue ", *(f"{s} Blue " for s in STYLES))) and n.endswith(" Skirt") for n in names)


def test_generated_shop_names_are_unique_and_name_a_colour(tiny_dataset: DataPaths, tmp_path):
    import pandas as pd

    shop = build_demo_shop(
        pd.read_parquet(tiny_dataset.garment_items), tmp_path / "shop", image_root=tiny_dataset.df2_root
    )
    names = [p.name for p in shop.products]
    assert len(names) == len(set(names)) > 20
    for name in names:
        words = name.split()
        first = words[1] if words[0] in STYLES else words[0]
        assert first in COLOUR_WORDS, name


_LINK = re.compile(r'(?:href|src|data-src)="([^"]*)"')


def test_every_link_is_relative_and_leads_to_a_page_of_the_shop(tmp_path):
    """Served at /demo-shop/ (the app) or at / (the crawl), every link resolves inside the shop."""
    shop = build_demo_shop(make_stand_in_items(tmp_path / "photos", 12), tmp_path / "shop", per_page=3)
    root = shop.root
    dead = {f"img/missing/{p.sku}.jpg" for p in shop.products if p.fault == "dead_image"}
    checked = 0
    for page in [*root.rglob("*.html"), *root.rglob("*.json")]:
        relative = page.relative_to(root).as_posix()
        if page.suffix == ".json" and page.name != "manifest.json":
            data = json.loads(page.read_text())  # a JavaScript listing's data: links resolve against its page
            links = [p[key] for p in data["products"] for key in ("url", "image")] + [data["next"] or ""]
            relative = relative.removesuffix(".json") + ".html"
        elif page.suffix == ".html":
            links = _LINK.findall(page.read_text())
        else:
            continue
        for link in filter(None, links):
            assert not link.startswith(("/", "http:", "https:")), f"{page}: {link}"
            target = posixpath.normpath(posixpath.join(posixpath.dirname(relative), link.split("?")[0]))
            assert not target.startswith(".."), f"{page}: {link} leaves the shop"
            assert (root / target).is_file() or target in dead, f"{page}: {link} -> {target} does not exist"
            checked += 1
    assert checked > 100
    assert (root / "cart" / "index.html").is_file()  # "Add to cart" opens a page that says there is no checkout
