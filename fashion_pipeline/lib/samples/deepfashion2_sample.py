"""A generated DeepFashion2 sample: the official layout and JSON, with user/shop pairs a model can learn from.

Each pair_id holds 1-3 products (style 1..k). A product has a fixed cut and look (see garments),
photographed alone on a plain background in `shop` images and worn by a person in `user` images, among
items that are not for sale (style 0), on cluttered backgrounds with varied scale, viewpoint, occlusion
and light (see sample_photos). Items sharing pair_id, style (> 0) and category_id in a user and a shop
image are the same product, as in DeepFashion2, so consumer-to-shop retrieval can be measured.
Deterministic by seed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fashion_pipeline.lib.common.atomic import atomic_dir
from fashion_pipeline.lib.samples.garments import (
    BOTTOMS,
    DRESSES,
    LANDMARK_COUNTS,
    OUTWEAR,
    TOPS,
    random_appearance,
    random_spec,
)
from fashion_pipeline.lib.samples.sample_photos import Photo, Product, render_photo

SPLITS = ("train", "validation")
JPEG_QUALITY = 90


@dataclass(frozen=True)
class SampleSummary:
    root: Path
    images: dict[str, dict[str, int]]  # split -> {"user": n, "shop": n}
    items_per_category: dict[int, int]  # category_id -> annotated items, both splits
    items_per_split: dict[str, dict[int, int]]  # split -> category_id -> items
    pairs: dict[str, int]  # split -> number of pair_ids

    @property
    def total_images(self) -> int:
        return sum(sum(by_source.values()) for by_source in self.images.values())


def generate_sample(
    root: Path, n_images: int, seed: int = 0, validation_fraction: float = 0.2, image_size: int = 320
) -> SampleSummary:
    """Write `n_images` DeepFashion2-format images + annotations under `root` (replaced atomically)."""
    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if image_size < 64:
        raise ValueError(f"image_size must be at least 64 pixels, got {image_size}")
    n_validation = round(n_images * validation_fraction)
    budgets = {"train": n_images - n_validation, "validation": n_validation}
    images: dict[str, dict[str, int]] = {}
    items: dict[str, dict[int, int]] = {}
    pairs: dict[str, int] = {}
    next_pair_id = 1
    planned: list[Photo] = []
    with atomic_dir(Path(root)) as tmp:
        for split_index, split in enumerate(SPLITS):
            rng = np.random.default_rng([seed, split_index])
            photos = plan_photos(budgets[split], rng, next_pair_id, earlier=planned)
            planned += photos
            pair_ids = {photo.pair_id for photo in photos}
            next_pair_id = max(pair_ids, default=next_pair_id - 1) + 1
            (tmp / split / "image").mkdir(parents=True)
            (tmp / split / "annos").mkdir(parents=True)
            by_source: Counter[str] = Counter()
            by_category: Counter[int] = Counter()
            for number, photo in enumerate(photos, start=1):
                rng = np.random.default_rng([seed, split_index, number])
                image, annotation = render_photo(photo, rng, image_size)
                image.save(tmp / split / "image" / f"{number:06d}.jpg", quality=JPEG_QUALITY)
                (tmp / split / "annos" / f"{number:06d}.json").write_text(json.dumps(annotation))
                by_source[photo.source] += 1
                by_category.update(v["category_id"] for k, v in annotation.items() if k.startswith("item"))
            images[split] = {"user": by_source["user"], "shop": by_source["shop"]}
            items[split] = dict(sorted(by_category.items()))
            pairs[split] = len(pair_ids)
    total = Counter(items["train"]) + Counter(items["validation"])
    return SampleSummary(Path(root), images, dict(sorted(total.items())), items, pairs)


# ---------------------------------------------------------------------------------------------- planning


@dataclass
class _Tally:
    """Items planned so far, to pick the least used category next (per source, then unseen anywhere)."""

    shop: Counter[int] = field(default_factory=Counter)
    user: Counter[int] = field(default_factory=Counter)
    seen: set[int] = field(default_factory=set)  # in any photo of this or an earlier split

    def least_used(self, options: tuple[int, ...], source: str, rng: np.random.Generator) -> int:
        # whole counts first; among equals, a category not seen anywhere yet; then at random
        counts = self.shop if source == "shop" else self.user
        return min(options, key=lambda c: counts[c] + 0.3 * (c in self.seen) + rng.uniform(0.0, 0.3))

    def add(self, photo: Photo) -> None:
        categories = [p.category_id for p in photo.products]
        (self.shop if photo.source == "shop" else self.user).update(categories)
        self.seen.update(categories)


def _outfit_categories(focus: int, tally: _Tally, rng: np.random.Generator) -> list[int]:
    """Categories of a person's outfit built around `focus`, in layering order (bottom, top, outwear)."""

    def pick(options: tuple[int, ...]) -> int:
        return tally.least_used(options, "user", rng)

    if focus in DRESSES:
        inner = [focus]
    elif focus in BOTTOMS:
        inner = [focus, pick(TOPS)]
    elif focus in TOPS:
        inner = [pick(BOTTOMS), focus]
    elif rng.random() < 0.25:  # outwear over a dress
        inner = [pick(DRESSES)]
    else:
        inner = [pick(BOTTOMS), pick(TOPS)]
    if focus in OUTWEAR:
        return [*inner, focus]
    if rng.random() < 0.25:
        return [*inner, pick(OUTWEAR)]
    return inner


def plan_photos(
    n_images: int, rng: np.random.Generator, first_pair_id: int, earlier: Sequence[Photo] = ()
) -> list[Photo]:
    """Pairs of shop and user photos adding up to exactly `n_images`, categories balanced per source.

    Categories in no `earlier` photo (another split) go first among equally used ones, so a tiny sample
    still covers all 13 overall. A pair's shop photos come before its user photos, so cutting the last
    pair short never leaves a user item for sale without its shop photo.
    """
    photos: list[Photo] = []
    tally = _Tally(seen={p.category_id for photo in earlier for p in photo.products})
    pair_id = first_pair_id
    while len(photos) < n_images:
        focus = tally.least_used(tuple(LANDMARK_COUNTS), "shop", rng)
        categories = _outfit_categories(focus, tally, rng)
        n_for_sale = min(len(categories), int(rng.choice([1, 2, 3], p=[0.55, 0.35, 0.1])))
        others = [c for c in categories if c != focus]
        others.sort(key=lambda c: tally.shop[c] + rng.uniform(0.0, 0.3))
        for_sale = [focus, *others[: n_for_sale - 1]]
        outfit = []
        for category_id in categories:
            style = for_sale.index(category_id) + 1 if category_id in for_sale else 0
            outfit.append(Product(pair_id, style, random_spec(category_id, rng), random_appearance(category_id, rng)))
        pair_photos = []
        for product in sorted((p for p in outfit if p.style > 0), key=lambda p: p.style):
            for _ in range(1 + int(rng.random() < 0.25)):
                pair_photos.append(Photo("shop", pair_id, (product,)))
        n_user = int(rng.choice([1, 2, 3], p=[0.25, 0.35, 0.4]))
        pair_photos += [Photo("user", pair_id, tuple(outfit))] * n_user
        for photo in pair_photos[: n_images - len(photos)]:
            photos.append(photo)
            tally.add(photo)
        pair_id += 1
    return photos
