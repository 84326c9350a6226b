"""Fixtures for the retrieval stage: fake models with the real interfaces, and a tiny world they understand.

- `HistogramEmbedder` embeds an image as its square-rooted 4x4x4 RGB histogram (64-d, unit rows), with
  the `version`, `embedding_dim` and `embed` of `lib.training.embedder.GarmentEmbedder`; it counts what it embeds.
- `PatchDetector` finds the solid colour patches of `retrieval_world` images (each colour belongs to one
  garment identity and category), like `lib.training.detector.GarmentDetector.detect`. An image whose top-left
  pixel is black hides its garments from it: a detector miss.
- `retrieval_world` writes a DeepFashion2-like validation split (user and shop photos, pairs, styles, a
  style-0 item, an unanswerable user item, one photo the detector misses), `garment_items.parquet`, a
  catalog with demo-shop products (sku = pair-style-category_id) plus another shop's (`OTHER_SITE`, a site of
  crawl/sites.yaml, so it is a partition of catalog_embeddings) products and one product whose image is
  missing, and the champion classifier's metadata.json, under a temporary data root.
- `materialize_retrieval` runs retrieval assets as Dagster launches them: catalog_embeddings once per site
  partition, then the unpartitioned assets in one run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.lib.common.categories import CATEGORY_MAP
from fashion_pipeline.lib.common.paths import DataPaths

# The world's second shop: any configured site (a partition of catalog_embeddings) other than demo_shop.
OTHER_SITE = "darveys"
WORLD_SITES = ("demo_shop", OTHER_SITE)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
HISTOGRAM_BINS = 4
EMBEDDER_VERSION = 1

# Colours from distinct 4x4x4 histogram bins (none in white's or black's bin), so each garment identity
# (pair_id, style) has its own embedding and its user crop matches its shop crop exactly.
PALETTE = [
    (224, 32, 32),
    (32, 224, 32),
    (32, 32, 224),
    (224, 224, 32),
    (224, 32, 224),
    (32, 224, 224),
    (160, 96, 32),
    (96, 32, 160),
    (32, 160, 96),
    (160, 32, 96),
    (96, 160, 32),
    (32, 96, 160),
]


class HistogramEmbedder:
    """A stand-in for the classifier's embedding: square-rooted RGB histogram, unit length (Hellinger)."""

    def __init__(self, version: int = EMBEDDER_VERSION, bins: int = HISTOGRAM_BINS) -> None:
        self.version = version
        self.bins = bins
        self.embedding_dim = bins**3
        self.classes = ("shirt", "outwear", "short", "skirt", "dress")
        self.input_size = 32
        self.embedded = 0  # images embedded so far
        self.calls = 0

    def embed(self, images) -> np.ndarray:
        self.calls += 1
        self.embedded += len(images)
        rows = []
        for image in images:
            pixels = np.asarray(image.convert("RGB").resize((32, 32), Image.Resampling.NEAREST)).reshape(-1, 3)
            cells = (pixels.astype(np.int64) * self.bins) // 256
            flat = cells[:, 0] * self.bins**2 + cells[:, 1] * self.bins + cells[:, 2]
            histogram = np.bincount(flat, minlength=self.embedding_dim).astype(np.float32)
            vector = np.sqrt(histogram)
            rows.append(vector / np.linalg.norm(vector))
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.embedding_dim), np.float32)


@dataclass(frozen=True)
class FakeDetection:
    box: tuple[float, float, float, float]
    category: str
    score: float


class PatchDetector:
    """Finds each known colour patch; `colours` maps an RGB colour to its garment category."""

    version = 7
    classes = ("shirt", "outwear", "short", "skirt", "dress")

    def __init__(self, colours: dict[tuple[int, int, int], str]) -> None:
        self.colours = colours
        self.calls = 0

    def detect(self, image: Image.Image, conf: float = 0.25) -> list[FakeDetection]:
        self.calls += 1
        pixels = np.asarray(image.convert("RGB"))
        if tuple(pixels[0, 0]) == BLACK:
            return []
        found = []
        for colour, category in self.colours.items():
            mask = (pixels == np.array(colour, dtype=np.uint8)).all(axis=2)
            if mask.sum() < 20:
                continue
            ys, xs = np.nonzero(mask)
            found.append(
                FakeDetection(
                    (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)), category, 0.9
                )
            )
        return found


@dataclass
class RetrievalWorld:
    paths: DataPaths
    items: pd.DataFrame
    products: pd.DataFrame
    colours: dict[tuple[int, int, int], str]
    expected: dict[str, float] = field(default_factory=dict)

    def detector(self) -> PatchDetector:
        return PatchDetector(self.colours)


# (pair_id, style, category_id) of each garment identity, and where it appears.
_IDENTITIES = [
    # pair, style, category_id (1 = short sleeve top -> shirt, 8 = trousers -> short, 9 skirt, 11 dress)
    (1, 1, 1),
    (1, 2, 9),
    (2, 1, 8),
    (3, 1, 11),
    (4, 1, 1),
    (5, 1, 9),
    (6, 1, 2),  # user only: no shop item of this pair and style (unanswerable)
    (2, 0, 7),  # style 0 in a shop photo: in the gallery, never a match
]


def _draw(
    path: Path,
    size: tuple[int, int],
    patches: list[tuple[tuple[int, int, int], tuple[int, int, int, int]]],
    hidden: bool = False,
) -> None:
    image = Image.new("RGB", size, WHITE)
    for colour, box in patches:
        image.paste(colour, box)
    if hidden:
        image.putpixel((0, 0), BLACK)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)  # PNG: exact colours, so the fake detector and histogram see what was drawn


def build_retrieval_world(root: Path) -> RetrievalWorld:
    paths = DataPaths(root=root)
    colour_of = {(p, s): PALETTE[i] for i, (p, s, _) in enumerate(_IDENTITIES)}
    category_of = {(p, s): CATEGORY_MAP.to_category[c] for p, s, c in _IDENTITIES}
    category_id_of = {(p, s): c for p, s, c in _IDENTITIES}
    image_dir = root / "deepfashion2_sample" / "validation" / "image"
    # image_id, source, pair_id, [(pair, style), ...], hidden-from-detector
    photos = [
        ("000001", "user", 1, [(1, 1), (1, 2)], False),
        ("000002", "shop", 1, [(1, 1)], False),
        ("000003", "shop", 1, [(1, 2)], False),
        ("000004", "user", 2, [(2, 1)], False),
        ("000005", "shop", 2, [(2, 1), (2, 0)], False),
        ("000006", "user", 3, [(3, 1)], True),  # the detector misses this photo
        ("000007", "shop", 3, [(3, 1)], False),
        ("000008", "user", 4, [(4, 1)], False),
        ("000009", "shop", 4, [(4, 1)], False),
        ("000010", "user", 5, [(5, 1)], False),
        ("000011", "shop", 5, [(5, 1)], False),
        ("000012", "user", 6, [(6, 1)], False),
    ]
    rows = []
    for image_id, source, pair_id, identities, hidden in photos:
        size = (160, 120)
        patches = []
        for index, key in enumerate(identities):
            # User photos draw the garment at another place and size than the shop photos.
            x = 10 + 75 * index + (15 if source == "user" else 0)
            y = 20 if source == "user" else 10
            box = (x, y, x + (45 if source == "user" else 60), y + (70 if source == "user" else 90))
            patches.append((colour_of[key], box))
            rows.append(
                {
                    "image_id": image_id,
                    "split": "validation",
                    "source": source,
                    "pair_id": pair_id,
                    "item_index": index + 1,
                    "category_id": category_id_of[key],
                    "category_name": CATEGORY_MAP.names[category_id_of[key]],
                    "style": key[1],
                    "x1": float(box[0]),
                    "y1": float(box[1]),
                    "x2": float(box[2]),
                    "y2": float(box[3]),
                    "image_path": str(image_dir / f"{image_id}.png"),
                    "image_width": size[0],
                    "image_height": size[1],
                    "category": category_of[key],
                }
            )
        _draw(image_dir / f"{image_id}.png", size, patches, hidden)
    items = pd.DataFrame(rows)
    paths.garment_items.parent.mkdir(parents=True, exist_ok=True)
    items.to_parquet(paths.garment_items, index=False)

    # The catalog: demo-shop products for pairs 1-4 (pair 5's product is not for sale), another shop's
    # products in the same categories (distractors), and one product whose image never downloaded.
    product_rows = []
    image_root = paths.catalog_images_dir
    for key in [(1, 1), (1, 2), (2, 1), (3, 1), (4, 1)]:
        sku = f"{key[0]:06d}-{key[1]}-{category_id_of[key]}"
        path = image_root / "demo_shop" / f"{sku}.png"
        _draw(path, (64, 96), [(colour_of[key], (4, 4, 60, 92))])
        product_rows.append(_product("demo_shop", sku, category_of[key], path, 20.0 + key[0]))
    for i, colour in enumerate(PALETTE[8:12]):
        category = ("shirt", "skirt", "short", "dress")[i]
        path = image_root / OTHER_SITE / f"o{i}.png"
        _draw(path, (64, 96), [(colour, (4, 4, 60, 92))])
        product_rows.append(_product(OTHER_SITE, f"o{i}", category, path, 10.0 + i))
    product_rows.append(_product(OTHER_SITE, "dead", "shirt", None, 5.0))
    products = pd.DataFrame(product_rows)
    paths.products.parent.mkdir(parents=True, exist_ok=True)
    products.to_parquet(paths.products, index=False)

    paths.classifier_dir.mkdir(parents=True, exist_ok=True)
    (paths.classifier_dir / "metadata.json").write_text(
        json.dumps(
            {
                "registered_model": "garment-classifier",
                "registered_version": EMBEDDER_VERSION,
                "classes": list(HistogramEmbedder().classes),
                "input_size": 32,
                "embedding_dim": HistogramEmbedder().embedding_dim,
                "mlflow_run_id": "test",
            }
        )
    )
    colours = {colour_of[key]: category_of[key] for key in colour_of}
    colours.update({c: ("shirt", "skirt", "short", "dress")[i] for i, c in enumerate(PALETTE[8:12])})
    # Answerable queries: user items (1,1), (1,2), (2,1), (3,1), (4,1), (5,1); (6,1) has no shop item.
    # Ground-truth boxes find every one first; the detector misses photo 000006, i.e. (3,1): 5/6.
    # Exact product: user items of pairs 1-4 are for sale (5 items); detected: (3,1) missed -> 4/5.
    expected = {
        "c2s_queries": 6,
        "c2s_unanswerable": 1,
        "c2s_gt_top1": 1.0,
        "c2s_detected_top1": 5 / 6,
        "exact_queries": 5,
        "exact_gt_top1": 1.0,
        "exact_detected_top1": 4 / 5,
    }
    return RetrievalWorld(paths=paths, items=items, products=products, colours=colours, expected=expected)


def _product(site: str, sku: str, category: str, image_path: Path | None, price: float) -> dict:
    return {
        "product_id": f"{site}:{sku}",
        "site": site,
        "sku": sku,
        "name": f"{category} {sku}",
        "url": f"http://127.0.0.1:9/{site}/{sku}",
        "image_url": f"http://127.0.0.1:9/{site}/{sku}.png",
        "image_path": str(image_path) if image_path is not None else None,
        "price": price,
        "currency": "USD",
        "price_usd": price,
        "category": category,
        "first_seen": pd.Timestamp("2026-01-01", tz="UTC"),
        "last_seen": pd.Timestamp("2026-01-02", tz="UTC"),
    }


def demo_shop_catalog(items: pd.DataFrame, paths: DataPaths) -> pd.DataFrame:
    """products.parquet of one demo-shop product per validation shop item (its crop as the product photo)."""
    from fashion_pipeline.lib.common.images import load_image
    from fashion_pipeline.lib.retrieval.retrieval_eval import crop_item, demo_shop_sku

    shop = items[(items["split"] == "validation") & (items["source"] == "shop") & (items["style"] > 0)]
    rows = []
    for item in shop.drop_duplicates(["pair_id", "style", "category_id"]).itertuples(index=False):
        sku = demo_shop_sku(item.pair_id, item.style, item.category_id)
        path = paths.catalog_images_dir / "demo_shop" / f"{sku}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop_item(load_image(item.image_path), (item.x1, item.y1, item.x2, item.y2)).save(path)
        rows.append(_product("demo_shop", sku, item.category, path, 30.0))
    products = pd.DataFrame(rows)
    paths.products.parent.mkdir(parents=True, exist_ok=True)
    products.to_parquet(paths.products, index=False)
    return products


@pytest.fixture
def retrieval_world(tmp_path: Path) -> RetrievalWorld:
    """A tiny validation split, catalog and champion metadata under a fresh data root (see module doc)."""
    return build_retrieval_world(tmp_path / "data")


@dataclass
class RetrievalRuns:
    """The runs of one `materialize_retrieval`: site partition (None: the unpartitioned assets) -> its run."""

    by_partition: dict[str | None, dg.ExecuteInProcessResult]

    @property
    def success(self) -> bool:
        return all(result.success for result in self.by_partition.values())

    def checks(self, partition: str | None = None) -> dict[str, dg.AssetCheckEvaluation]:
        """Check name -> evaluation in the run of `partition` (None: the unpartitioned assets' run)."""
        return {e.check_name: e for e in self.by_partition[partition].get_asset_check_evaluations()}

    def metadata(self, asset: str, partition: str | None = None) -> dict:
        events = self.by_partition[partition].get_asset_materialization_events()
        [event] = [e for e in events if e.asset_key.to_user_string() == asset]
        return {key: value.value for key, value in event.materialization.metadata.items()}

    def materialized(self) -> set[tuple[str, str | None]]:
        """(asset, partition) of every materialization."""
        return {
            (event.asset_key.to_user_string(), partition)
            for partition, result in self.by_partition.items()
            for event in result.get_asset_materialization_events()
        }


def materialize_retrieval(
    selection: Sequence[dg.AssetsDefinition],
    root: Path,
    sites: Sequence[str] = WORLD_SITES,
    resources: dict | None = None,
    run_config: dict | None = None,
    raise_on_error: bool = True,
    instance: dg.DagsterInstance | None = None,
) -> RetrievalRuns:
    """The partitioned assets of `selection` once per site in `sites`, then the others in one run (a job cannot
    mix them). `run_config`'s ops settings go to the runs whose assets they name."""
    resources = {"paths": DataPathsResource(data_dir=str(root), df2_root=""), **(resources or {})}
    ops = (run_config or {}).get("ops", {})

    def run(assets: list[dg.AssetsDefinition], partition: str | None) -> dg.ExecuteInProcessResult:
        names = {key.to_user_string() for asset in assets for key in asset.keys}
        return dg.materialize(
            assets,
            partition_key=partition,
            resources=resources,
            run_config={"ops": {name: config for name, config in ops.items() if name in names}},
            raise_on_error=raise_on_error,
            instance=instance,
        )

    partitioned = [asset for asset in selection if asset.partitions_def is not None]
    rest = [asset for asset in selection if asset.partitions_def is None]
    runs: dict[str | None, dg.ExecuteInProcessResult] = {}
    for site in sites if partitioned else ():
        runs[site] = run(partitioned, site)
    if rest:
        runs[None] = run(rest, None)
    return RetrievalRuns(runs)
