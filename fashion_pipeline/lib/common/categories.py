"""The 13 DeepFashion2 categories and their mapping onto the 5 recommendation categories (categories.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from fashion_pipeline.lib.common.paths import CATEGORIES_FILE


@dataclass(frozen=True)
class CategoryMap:
    categories: tuple[str, ...]  # class order of both models
    names: dict[int, str]  # DeepFashion2 category_id -> DeepFashion2 name
    to_category: dict[int, str]  # DeepFashion2 category_id -> one of `categories`

    def index(self, category: str) -> int:
        return self.categories.index(category)


def load_category_map(path: Path = CATEGORIES_FILE) -> CategoryMap:
    raw = yaml.safe_load(Path(path).read_text())
    categories = tuple(raw["categories"])
    names: dict[int, str] = {}
    to_category: dict[int, str] = {}
    for key, entry in raw["mapping"].items():
        if entry["category"] not in categories:
            raise ValueError(f"{path}: category_id {key} maps to {entry['category']!r}, not one of {categories}")
        names[int(key)] = entry["name"]
        to_category[int(key)] = entry["category"]
    return CategoryMap(categories=categories, names=names, to_category=to_category)


CATEGORY_MAP = load_category_map()
CATEGORIES: tuple[str, ...] = CATEGORY_MAP.categories
DF2_CATEGORY_NAMES: dict[int, str] = CATEGORY_MAP.names
