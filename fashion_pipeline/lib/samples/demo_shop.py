"""The demo shop: a static web shop generated from DeepFashion2 `shop` items, served on 127.0.0.1.

Each product is one shop item (pair_id, style, category_id), pictured by its crop of the shop photo, so a
validation `user` photo has its exact product for sale (sku `f"{pair_id:06d}-{style}-{category_id}"`).
The shop has what real shops have and what the crawler must cope with: listing pages per category with
pagination, product pages, one category listed by JavaScript from a JSON file, prices in USD and INR with
symbols and thousands separators (and one range), one product listed twice, one dead image link, one
product without a price, and a robots.txt. `manifest.json` records what was generated, so tests and the
benchmark know the truth to compare a crawl against. Product names say the colours their photo shows and
are unique in the shop (product_names). The pages and the server are in demo_shop_site.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from fashion_pipeline.lib.catalog.prices import format_price
from fashion_pipeline.lib.common.atomic import atomic_dir
from fashion_pipeline.lib.common.categories import CATEGORIES, CATEGORY_MAP, DF2_CATEGORY_NAMES
from fashion_pipeline.lib.common.images import load_image
from fashion_pipeline.lib.samples.demo_shop_site import write_site
from fashion_pipeline.lib.samples.product_names import colour_phrase, garment_colours, unique_name

MANIFEST_FILE = "manifest.json"
PRODUCTS_PER_PAGE = 48
CROP_MAX_SIDE = 320
# Where users open the demo shop's pages: the crawl serves it on a throwaway port, so the catalog records
# links under this stable address instead (the web app mounts DataPaths.demo_shop_dir there).
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000/demo-shop"
PUBLIC_URL_ENV = "FASHION_DEMO_SHOP_URL"


def public_url() -> str:
    """The address the catalog records for the demo shop's pages: `FASHION_DEMO_SHOP_URL`, else the default."""
    return (os.environ.get(PUBLIC_URL_ENV) or DEFAULT_PUBLIC_URL).rstrip("/")


@dataclass(frozen=True)
class DemoProduct:
    sku: str
    pair_id: int
    style: int
    category_id: int
    category: str
    split: str
    name: str
    price: float | None  # None: shown without a price
    currency: str | None
    price_text: str | None
    fault: str | None  # "listed_twice" | "dead_image" | "no_price" | "price_range" | None

    @property
    def product_id(self) -> str:
        return f"demo_shop:{self.sku}"


@dataclass(frozen=True)
class DemoShop:
    root: Path
    products: list[DemoProduct]
    js_category: str
    pages: int

    @property
    def expected_in_catalog(self) -> list[DemoProduct]:
        """The products a correct crawl keeps: all but the one whose image link is dead."""
        return [p for p in self.products if p.fault != "dead_image"]

    @classmethod
    def load(cls, root: Path) -> DemoShop:
        raw = json.loads((Path(root) / MANIFEST_FILE).read_text())
        products = [DemoProduct(**p) for p in raw["products"]]
        return cls(root=Path(root), products=products, js_category=raw["js_category"], pages=raw["pages"])


def sku_for(pair_id: int, style: int, category_id: int) -> str:
    return f"{int(pair_id):06d}-{int(style)}-{int(category_id)}"


def select_shop_items(items: pd.DataFrame, splits: tuple[str, ...] = ("validation", "train")) -> pd.DataFrame:
    """One row per product: shop items with a style (style 0 has no consumer match), first of each sku."""
    chosen = items[(items["source"] == "shop") & (items["style"] > 0) & items["split"].isin(splits)].copy()
    chosen["sku"] = [
        sku_for(p, s, c) for p, s, c in zip(chosen["pair_id"], chosen["style"], chosen["category_id"], strict=True)
    ]
    # Validation first, so a sku in both splits is pictured by the photo the evaluation pairs with.
    chosen["_split_order"] = chosen["split"].astype(str).map({s: i for i, s in enumerate(splits)})
    chosen = chosen.sort_values(["_split_order", "sku", "image_id", "item_index"])
    return chosen.drop_duplicates("sku").drop(columns="_split_order").sort_values("sku", ignore_index=True)


def _crop(image: Image.Image, row: pd.Series) -> Image.Image:
    width, height = image.size
    x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
    margin_x, margin_y = 0.05 * (x2 - x1), 0.05 * (y2 - y1)
    box = (
        max(0, int(x1 - margin_x)),
        max(0, int(y1 - margin_y)),
        min(width, int(x2 + margin_x) + 1),
        min(height, int(y2 + margin_y) + 1),
    )
    crop = image if box[2] - box[0] < 2 or box[3] - box[1] < 2 else image.crop(box)
    crop.thumbnail((CROP_MAX_SIDE, CROP_MAX_SIDE))
    return crop


def _price(sku: str, category: str, seed: int) -> tuple[float, str, str]:
    """A price fixed by the sku (so rebuilding the shop without one product changes no other price)."""
    rng = random.Random(f"{seed}:{sku}:price")
    if rng.random() < 0.5:
        # Outerwear reaches four figures, so USD prices show thousands separators too.
        top = 1899 if category == "outwear" else 249
        amount = float(rng.randrange(19, top)) + 0.99 * (rng.random() < 0.5)
        return amount, "USD", format_price(amount, "USD")
    amount = float(rng.randrange(5, 250) * 100 - 1)
    return amount, "INR", format_price(amount, "INR", style=rng.randrange(4))


def _assign_faults(skus: list[str], protected: set[str]) -> dict[str, str]:
    """Put the faults on products no validation user photo needs, where the shop has such products."""
    order = [s for s in skus if s not in protected] + [s for s in skus if s in protected]
    faults = ("dead_image", "listed_twice", "no_price", "price_range")
    return {sku: fault for sku, fault in zip(order, faults, strict=False)}


def build_demo_shop(
    items: pd.DataFrame,
    out_dir: Path,
    *,
    image_root: Path | None = None,
    seed: int = 0,
    per_page: int = PRODUCTS_PER_PAGE,
    splits: tuple[str, ...] = ("validation", "train"),
    source_signature: str = "",
) -> DemoShop:
    """Generate the shop from garment items (garment_items.parquet columns) into `out_dir` (replaced whole).

    `image_root` resolves relative `image_path` values. `source_signature` is stored in the manifest so a
    caller can tell whether the shop is current for its input.
    """
    chosen = select_shop_items(items, splits)
    if chosen.empty:
        raise ValueError(
            f"no shop items with style > 0 in splits {splits}: the demo shop needs DeepFashion2 shop photos "
            "(materialize garment_items first)"
        )
    users = items[(items["source"] == "user") & (items["split"] == "validation") & (items["style"] > 0)]
    protected = {
        sku_for(p, s, c) for p, s, c in zip(users["pair_id"], users["style"], users["category_id"], strict=True)
    }
    faults = _assign_faults(list(chosen["sku"]), protected)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as root:
        (root / "img").mkdir()
        products: list[DemoProduct] = []
        names: set[str] = set()  # product names are unique within the shop
        for row in chosen.itertuples(index=False):
            row_series = pd.Series(row._asdict())
            image_path = Path(row.image_path)
            if not image_path.is_absolute() and image_root is not None:
                image_path = Path(image_root) / image_path
            crop = _crop(load_image(image_path), row_series)
            crop.save(root / "img" / f"{row.sku}.jpg", quality=90)
            category = (
                str(row.category) if "category" in row._fields else CATEGORY_MAP.to_category[int(row.category_id)]
            )
            colour = colour_phrase(garment_colours(crop))
            name = unique_name(colour, DF2_CATEGORY_NAMES[int(row.category_id)].title(), row.sku, names, seed)
            amount, currency, text = _price(row.sku, category, seed)
            fault = faults.get(row.sku)
            if fault == "no_price":
                amount, currency, text = None, None, None
            elif fault == "price_range":
                high = amount * 1.5 if currency == "USD" else amount + 500
                text = f"{format_price(amount, currency)} – {format_price(high, currency)}"
            products.append(
                DemoProduct(
                    sku=row.sku,
                    pair_id=int(row.pair_id),
                    style=int(row.style),
                    category_id=int(row.category_id),
                    category=category,
                    split=str(row.split),
                    name=name,
                    price=amount,
                    currency=currency,
                    price_text=text,
                    fault=fault,
                )
            )
        js_category = write_site(root, products, per_page)
        pages = sum(1 for _ in root.rglob("*.html"))
        manifest = {
            "products": [asdict(p) for p in products],
            "js_category": js_category,
            "pages": pages,
            "source_signature": source_signature,
        }
        (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return DemoShop(root=out_dir, products=products, js_category=js_category, pages=pages)


def demo_shop_signature(root: Path) -> str | None:
    """The `source_signature` the shop at `root` was built for, or None when there is no shop."""
    manifest = Path(root) / MANIFEST_FILE
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("source_signature")


def ensure_demo_shop(garment_items: Path, out_dir: Path, *, image_root: Path | None = None) -> DemoShop:
    """The shop at `out_dir`, rebuilt first when `garment_items` changed since it was generated."""
    garment_items = Path(garment_items)
    if not garment_items.is_file():
        raise FileNotFoundError(
            f"{garment_items} does not exist: the demo shop is made from DeepFashion2 shop items, "
            "so materialize garment_items (group deepfashion2) first"
        )
    stat = garment_items.stat()
    signature = f"{garment_items.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if demo_shop_signature(out_dir) != signature:
        build_demo_shop(pd.read_parquet(garment_items), out_dir, image_root=image_root, source_signature=signature)
    return DemoShop.load(out_dir)


# --- stand-in input --------------------------------------------------------------------------------------


def make_stand_in_items(root: Path, n_products: int, seed: int = 0, image_size: int = 96) -> pd.DataFrame:
    """A garment_items-shaped table of `n_products` shop items with small drawn photos under `root`.

    For tests and benchmarks that need a shop of a given size without generating DeepFashion2 photos.
    Every product gets a distinct colour and shape, so no two are perceptual duplicates.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # Spread over the catalog categories evenly (and over each one's DeepFashion2 categories).
    ids_by_category = {
        c: [i for i in sorted(DF2_CATEGORY_NAMES) if CATEGORY_MAP.to_category[i] == c] for c in CATEGORIES
    }
    rows = []
    for index in range(n_products):
        ids = ids_by_category[CATEGORIES[index % len(CATEGORIES)]]
        category_id = ids[(index // len(CATEGORIES)) % len(ids)]
        image = Image.new("RGB", (image_size, image_size), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x1, y1 = (int(v) for v in rng.integers(0, image_size // 2, 2))
            x2, y2 = (int(v) for v in rng.integers(image_size // 2, image_size, 2))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                draw.rectangle((x1, y1, x2, y2), fill=colour)
            else:
                draw.ellipse((x1, y1, x2, y2), fill=colour)
        path = root / f"{index:06d}.jpg"
        image.save(path, quality=90)
        rows.append(
            {
                "image_id": f"{index:06d}",
                "split": "validation" if index % 5 == 0 else "train",
                "source": "shop",
                "pair_id": index + 1,
                "item_index": 1,
                "category_id": category_id,
                "category_name": DF2_CATEGORY_NAMES[category_id],
                "style": 1,
                "x1": 0.0,
                "y1": 0.0,
                "x2": float(image_size - 1),
                "y2": float(image_size - 1),
                "image_path": str(path),
                "image_width": image_size,
                "image_height": image_size,
                "category": CATEGORY_MAP.to_category[category_id],
            }
        )
    return pd.DataFrame(rows)
