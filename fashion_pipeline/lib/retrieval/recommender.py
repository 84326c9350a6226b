"""The recommender: photo -> garments -> crops -> embeddings -> nearest catalog products per category.

Loaded once from the materialized files (detector, classifier embedding, k-NN indexes, product catalog) and
shared by the HTTP app and the `recommend` command, which both return `RecommendAnswer.to_dict()`, the
answer shape of DESIGN.md's `POST /api/recommend` (the query and answer types are in `query`; the
components' interfaces and the catalog aligned with each index in `recommender_components`).
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.common.images import load_image, upright_size
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.deepfashion2.crops import CropSettings, crop_box
from fashion_pipeline.lib.retrieval.category_rule import DEFAULT_RULE, CategoryRule, decide_garment, readings
from fashion_pipeline.lib.retrieval.colour import dominant_family
from fashion_pipeline.lib.retrieval.layout import LayoutError, RetrievalEmbedder, legacy_layout
from fashion_pipeline.lib.retrieval.query import (
    DEFAULT_K,
    MAX_K,
    NO_GARMENT_MESSAGE,
    Garment,
    Query,
    QueryError,
    RecommendAnswer,
    Recommendation,
    RecommenderError,
    explain,
)
from fashion_pipeline.lib.retrieval.recommender_components import (
    CategoryCatalog,
    Detector,
    Embedder,
    Products,
    SearchIndex,
    check_index_versions,
    prepare_products,
    read_products,
    text_or_none,
)

log = logging.getLogger(__name__)
MAX_DETECTIONS = 10  # garments per photo we embed and search for; bounds the work one request can cause
MIN_BOX_SIDE = 8  # px; a smaller detection has too little pixel content to embed meaningfully
CROP_PREVIEW_SIDE = 224  # px, longest side of the crop previews the page shows
# px: an upload is decoded to at most about this size (JPEG in draft mode), then detected and cropped from.
# Twice the largest detector input (640); a garment a fifth of the photo wide still gives a crop larger than
# the classifier's largest input (224). A 64 MP photo then costs about 5 MB decoded instead of 192 MB.
DECODE_MAX_SIDE = 1280


# --- the recommender ------------------------------------------------------------------------------------
class Recommender:
    """Loaded once; `recommend` is safe to call from several threads when the components are."""

    def __init__(
        self,
        detector: Detector,
        embedder: Embedder,
        indexes: Mapping[str, SearchIndex],
        products: pd.DataFrame,
        *,
        paths: DataPaths | None = None,
        embeddings_versions: set[int] | None = None,
        detection_confidence: float = 0.25,
        category_rule: CategoryRule = DEFAULT_RULE,
    ) -> None:
        embedder = _layout_embedder(embedder, indexes)
        check_index_versions(indexes, embedder, embeddings_versions)
        self.detector = detector
        self.embedder = embedder
        self.detection_confidence = detection_confidence
        self.category_rule = category_rule  # how a box's category is decided (lib/retrieval/category_rule.py)
        self.paths = paths  # where downloaded product images are looked up; None serves none
        self.products = Products(prepare_products(products))
        self.sites: tuple[str, ...] = tuple(sorted(set(self.products.table["site"].astype(str))))
        self._position = pd.Index(self.products.table["product_id"].astype(str))
        self._catalogs = {category: self._align(category, index) for category, index in indexes.items()}

    @classmethod
    def from_paths(cls, paths: DataPaths) -> Recommender:
        """Load the champion detector and embedder, the indexes and the catalog from the data root."""
        for asset, folder in (("garment_detector", paths.detector_dir), ("garment_classifier", paths.classifier_dir)):
            if not (folder / "metadata.json").exists():
                raise RecommenderError(f"no model in {folder}: materialize the {asset} asset first")
        if not paths.index_dir.is_dir():
            raise RecommenderError(
                f"no k-NN index in {paths.index_dir}: materialize the catalog_embeddings and knn_index assets"
            )
        products = read_products(paths.products)
        # Imported here: they pull in ONNX Runtime and TensorFlow, which the CLI must not load to show --help.
        from fashion_pipeline.lib.retrieval.knn import KnnIndexError, load_indexes
        from fashion_pipeline.lib.retrieval.layout_store import index_embedder
        from fashion_pipeline.lib.retrieval.projection import ProjectionError
        from fashion_pipeline.lib.training.detector import load_detector
        from fashion_pipeline.lib.training.embedder import load_embedder

        try:
            detector = load_detector(paths.detector_dir)
            indexes = load_indexes(paths.index_dir)
            # The indexes' layout and projection make the query vectors, exactly as catalog_embeddings made theirs.
            embedder = index_embedder(load_embedder(paths.classifier_dir), _indexes_layout(indexes), paths.index_dir)
        except (FileNotFoundError, KnnIndexError, LayoutError, ProjectionError) as exc:
            # Their messages name the file and the asset to materialize; the caller shows them as they are.
            raise RecommenderError(str(exc)) from exc
        from fashion_pipeline.lib.retrieval.site_embeddings import model_versions

        # Decides which asset a stale index names: knn_index alone, or catalog_embeddings first.
        embeddings_versions = model_versions(paths.embeddings_dir)
        recommender = cls(detector, embedder, indexes, products, paths=paths, embeddings_versions=embeddings_versions)
        recommender.warm_up()
        return recommender

    @classmethod
    def from_release(cls, paths: DataPaths, release_dir: Path) -> Recommender:
        """Load a serving release (lib/retrieval/release.py) of the data root `paths`.

        The release folder holds the served files in the data root's own layout (models/, index/,
        catalog/products.parquet), so it loads as a data root; product images and the demo shop stay under
        `paths`, which the loaded recommender serves them from.
        """
        recommender = cls.from_paths(DataPaths(root=Path(release_dir)))
        recommender.paths = paths
        return recommender

    def warm_up(self) -> None:
        """Run each model once, so graph tracing and allocation happen now and not in a shopper's request."""
        blank = Image.new("RGB", (64, 64), (128, 128, 128))
        self.detector.detect(blank, conf=self.detection_confidence)
        self.embedder.embed([blank])

    def _align(self, category: str, index: SearchIndex) -> CategoryCatalog:
        positions = self._position.get_indexer(np.asarray(index.product_ids).astype(str))
        known = positions >= 0
        if not known.all():
            # The catalog moved on since the index was built; those products can no longer be sold.
            log.warning(
                "index %s lists %d products no longer in the catalog: rematerialize knn_index",
                category,
                int((~known).sum()),
            )
        safe = np.where(known, positions, 0)
        table = self.products.table
        price_usd = np.where(known, pd.to_numeric(table["price_usd"], errors="coerce").to_numpy()[safe], np.nan)
        site = np.where(known, table["site"].astype(str).to_numpy()[safe], "")
        return CategoryCatalog(index=index, known=known, positions=positions, price_usd=price_usd, site=site)

    # --- what the app shows about itself -----------------------------------------------------------------
    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(c for c in CATEGORIES if c in self._catalogs) + tuple(
            sorted(c for c in self._catalogs if c not in CATEGORIES)
        )

    @property
    def product_count(self) -> int:
        return len(self.products.table)

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "detector_version": int(self.detector.version),
            "embedder_version": int(self.embedder.version),
            "products": self.product_count,
            "indexes": {c: int(self._catalogs[c].index.manifest.count) for c in self.categories},
            "sites": list(self.sites),
            "categories": list(self.categories),
            "max_k": MAX_K,
        }

    def product_image_path(self, product_id: str) -> Path | None:
        """The downloaded image of a catalog product, only if it is a file inside the data root.

        `image_path` is absolute, or relative to the catalog images folder or to the data root.
        """
        position = self._position.get_indexer([product_id])[0]
        if position < 0 or self.paths is None:
            return None
        stored = text_or_none(self.products.columns["image_path"][position])
        if not stored:
            return None
        root = self.paths.root.resolve()
        for base in (self.paths.catalog_images_dir, self.paths.root):
            path = (base / stored).resolve()  # an absolute `stored` replaces `base`
            # The catalog is our own file, but a path that leads outside the data root is never served.
            if path.is_relative_to(root) and path.is_file():
                return path
        return None

    # --- queries -----------------------------------------------------------------------------------------
    def make_query(
        self,
        k: int | str | None = None,
        category: str | None = None,
        max_price: float | str | None = None,
        site: str | None = None,
        include_crops: bool = False,
    ) -> Query:
        """A validated `Query` from raw values (form fields, CLI flags); `QueryError` says what is wrong."""
        if k is None or k == "":
            k_value = DEFAULT_K
        else:
            try:
                k_value = int(k)
            except (TypeError, ValueError):
                raise QueryError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}") from None
            if not 1 <= k_value <= MAX_K:
                raise QueryError(f"k must be from 1 to {MAX_K}, got {k_value}")
        category = category or None
        if category is not None and category not in self.categories:
            raise QueryError(f"unknown category {category!r}: choose one of {', '.join(self.categories)}")
        price: float | None = None
        if max_price is not None and max_price != "":
            try:
                price = float(max_price)
            except (TypeError, ValueError):
                raise QueryError(f"max_price must be a number of US dollars, got {max_price!r}") from None
            if not math.isfinite(price) or price < 0:
                raise QueryError(f"max_price must be a non-negative number of US dollars, got {max_price!r}")
        site = site or None
        if site is not None and site not in self.sites:
            raise QueryError(f"unknown site {site!r}: choose one of {', '.join(self.sites)}")
        return Query(k=k_value, category=category, max_price_usd=price, site=site, include_crops=include_crops)

    def recommend_bytes(self, data: bytes | Path | str, query: Query | None = None) -> RecommendAnswer:
        """Decode the photo with the one image loader (`ImageError` when it is unusable), then recommend."""
        image = load_image(data, max_side=DECODE_MAX_SIDE)
        answer = self.recommend(image, query)
        full = upright_size(data)
        if full == image.size:
            return answer
        # Analysed downscaled: boxes and size are given in pixels of the photo as uploaded, as documented.
        sx, sy = full[0] / image.size[0], full[1] / image.size[1]
        scaled = [
            replace(g, box=[round(v * (sx, sy)[i % 2], 1) for i, v in enumerate(g.box)]) for g in answer.detections
        ]
        return replace(answer, detections=scaled, image_size=full)

    def recommend(self, image: Image.Image, query: Query | None = None) -> RecommendAnswer:
        query = query or Query()
        image = image.convert("RGB") if image.mode != "RGB" else image
        detections = sorted(
            self.detector.detect(image, conf=self.detection_confidence), key=lambda d: d.score, reverse=True
        )
        margin = CropSettings().margin  # the classifier was trained on crops with this margin
        boxes: list[tuple[int, int, int, int]] = []
        found: list[tuple[list[float], str | None, float]] = []  # box, the detector's category, its score
        for detection in detections:
            pixels = crop_box(image, detection.box, margin)
            if pixels[2] - pixels[0] < MIN_BOX_SIDE or pixels[3] - pixels[1] < MIN_BOX_SIDE:
                continue
            box = [round(float(v), 1) for v in detection.box]
            found.append((box, detection.category, round(float(detection.score), 4)))
            boxes.append(pixels)
            if len(found) == MAX_DETECTIONS:
                break
        whole = not found
        if whole and (query.category is not None or self.embedder.classes):
            # Nothing boxed: a product shot or a flat lay is one garment. Search the whole photo as the
            # shopper's category, or as the classifier's when it is sure enough (category_rule.whole_photo).
            boxes = [(0, 0, image.width, image.height)]
            found = [([0.0, 0.0, float(image.width), float(image.height)], None, 0.0)]
        if not found:
            return RecommendAnswer(detections=[], message=NO_GARMENT_MESSAGE, image_size=image.size)

        crops = [image.crop(pixels) for pixels in boxes]
        # One forward pass per photo: the crops' embeddings and the classifier's reading of each crop.
        embeddings, colours, probabilities = self.embedder.embed_classify(crops)
        decisions = [
            decide_garment(detected, score, reading, query.category, self.category_rule)
            for (_, detected, score), reading in zip(
                found, readings(self.embedder.classes, probabilities, len(crops)), strict=True
            )
        ]
        if decisions[0] is None:  # the whole photo, and the classifier is unsure what it shows
            return RecommendAnswer(detections=[], message=NO_GARMENT_MESSAGE, image_size=image.size)
        message = decisions[0].message if whole else None
        results = self._search(np.asarray(embeddings, np.float32), [d.category for d in decisions], query)
        garments = []
        for (box, detected, score), decision, recommendations, crop, family in zip(
            found, decisions, results, crops, dominant_family(colours), strict=True
        ):
            category, probability = decision.category, decision.probability
            why = [
                replace(r, why=explain(category, decision.searched_as, family, r, probability)) for r in recommendations
            ]
            garments.append(
                Garment(
                    box=box,
                    category=category,
                    score=score,
                    recommendations=why,
                    crop=_data_url(crop) if query.include_crops else None,
                    colour_family=family,
                    searched_as=decision.searched_as,
                    detected_category=detected,
                    classifier_probability=None if probability is None else round(probability, 4),
                )
            )
        if message is None and not any(g.recommendations for g in garments):
            message = (
                "No product matches these filters; try a higher price or another site."
                if query.filtered
                else "No products in the detected categories yet."
            )
        return RecommendAnswer(detections=garments, message=message, image_size=image.size)

    def _search(self, embeddings: np.ndarray, categories: list[str], query: Query) -> list[list[Recommendation]]:
        results: list[list[Recommendation]] = [[] for _ in categories]
        for category in dict.fromkeys(categories):
            catalog = self._catalogs.get(category)
            if catalog is None:
                continue  # no product of this category in the catalog
            members = [i for i, c in enumerate(categories) if c == category]
            for i, hits in zip(members, self._nearest(catalog, embeddings[members], query), strict=True):
                results[i] = [self.products.record(int(catalog.positions[row]), score) for row, score in hits]
        return results

    @staticmethod
    def _nearest(catalog: CategoryCatalog, queries: np.ndarray, query: Query) -> list[list[tuple[int, float]]]:
        """The k best allowed rows per query; the index applies the filter (knn_filter), in one search."""
        allowed = catalog.allowed(query)
        wanted = min(query.k, int(allowed.sum()))
        if wanted == 0:
            return [[] for _ in range(len(queries))]
        if allowed.all():
            scores, rows = catalog.index.search(queries, wanted)
        else:
            scores, rows = catalog.index.search(queries, wanted, allowed=allowed)
        return [
            [(int(r), float(s)) for r, s in zip(row_list, score_list, strict=True) if r >= 0 and allowed[r]]
            for row_list, score_list in zip(rows, scores, strict=True)
        ]


def _indexes_layout(indexes: Mapping[str, SearchIndex]) -> Any:
    """The vector layout the indexes share (knn.load_indexes refuses mixed ones); the embedding alone for
    indexes that record none."""
    layouts = {}
    for category, index in indexes.items():
        layout = getattr(index, "layout", None) or legacy_layout(int(index.manifest.dimension))
        layouts[layout.layout_id] = (category, layout)
    if len(layouts) > 1:
        raise RecommenderError(
            f"the k-NN indexes were built with different vector layouts {sorted(layouts)}: rematerialize "
            "catalog_embeddings and knn_index"
        )
    return next(iter(layouts.values()))[1]


def _layout_embedder(embedder: Embedder, indexes: Mapping[str, SearchIndex]) -> RetrievalEmbedder:
    """The embedder that makes query vectors of the indexes' layout; refuses one made for another layout."""
    if not indexes:
        raise RecommenderError("no k-NN index found: materialize the catalog_embeddings and knn_index assets")
    layout = _indexes_layout(indexes)
    if isinstance(embedder, RetrievalEmbedder):
        if embedder.layout.layout_id != layout.layout_id:
            raise RecommenderError(
                f"the embedder makes vectors of layout {embedder.layout.layout_id}, the indexes hold layout "
                f"{layout.layout_id}: rematerialize catalog_embeddings and knn_index"
            )
        return embedder
    if layout.uses_projection:
        raise RecommenderError(
            f"the indexes' layout {layout.layout_id} needs its projection: use Recommender.from_paths"
        )
    try:
        return RetrievalEmbedder(embedder, layout)
    except LayoutError as exc:
        raise RecommenderError(str(exc)) from exc


def _data_url(crop: Image.Image) -> str:
    preview = crop.copy()
    preview.thumbnail((CROP_PREVIEW_SIDE, CROP_PREVIEW_SIDE))
    buffer = io.BytesIO()
    preview.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
