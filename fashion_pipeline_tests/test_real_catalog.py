"""Retrieval scored on a labelled catalog: the metrics on a hand-made catalog, the splits, the weight choice,
street-to-shop, and the assets on ../shared's real catalog (skipped without it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fashion_pipeline.lib.retrieval import catalog_metrics as metrics
from fashion_pipeline.lib.retrieval import colour, knn, labelled_catalog, projection_fit, real_catalog_eval
from fashion_pipeline.lib.retrieval.layout import BACKBONE, COLOUR, COLOUR_CLASS, TYPE, RetrievalEmbedder, legacy_layout


def _table(rows: list[tuple[str, str, str, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"product_id": p, "image_path": "", "category": c, "article_type": t, "colour_family": f}
            for p, c, t, f in rows
        ]
    )


def test_metrics_on_a_hand_made_catalog_with_a_known_answer() -> None:
    # Four shirts on a line: a and b close together, c and d close together; a sits nearer c than d.
    table = _table(
        [
            ("a", "shirt", "Tshirts", "red"),
            ("b", "shirt", "Tshirts", "blue"),
            ("c", "shirt", "Shirts", "red"),
            ("d", "shirt", "Tshirts", None),
            ("e", "short", "Jeans", "blue"),  # another category: never a shirt's neighbour
        ]
    )
    angles = np.radians([0, 10, 40, 60, 1])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    splits = np.full(5, metrics.REPORT)

    [shirt] = labelled_catalog.score_vectors(table, vectors, np.ones(5, bool), splits, "report", ["shirt"], k=2)

    # Neighbours at k=2: a -> b, c; b -> a, c; c -> d, b; d -> c, b.
    # Same type: a 1/2, b 1/2, c 0/2, d 1/2 -> 0.375. Random: Tshirts 2/3, Shirts 0/3 -> (3 * 2/3 + 0) / 4 = 0.5.
    assert shirt.same_type.value == pytest.approx(0.375)
    assert shirt.same_type.chance == pytest.approx(0.5)
    # Same colour (d has none: not a query, and a miss as a neighbour): a 1/2 (c), b 0/2, c 0/2 -> 1/6.
    # Random: red 1/3 (a and c), blue 0/3 -> (1/3 + 0 + 1/3) / 3 = 2/9.
    assert shirt.same_colour.value == pytest.approx(1 / 6)
    assert shirt.same_colour.chance == pytest.approx(2 / 9)
    assert (shirt.products, shirt.same_type.queries, shirt.same_colour.queries) == (4, 4, 3)


def test_splits_never_share_a_product_and_are_stable() -> None:
    ids = [f"product-{i}" for i in range(3000)]

    splits = metrics.split_of(ids, 0.4, 0.3)
    again = metrics.split_of(list(reversed(ids)), 0.4, 0.3)[::-1]

    assert (splits == again).all()  # a product's split depends on its id alone, not on the catalog around it
    shares = {s: float(np.mean(splits == s)) for s in metrics.SPLITS}
    assert shares == pytest.approx({"train": 0.4, "validation": 0.3, "report": 0.3}, abs=0.03)
    for protocol, (queries, gallery) in labelled_catalog.PROTOCOLS.items():
        query_mask, gallery_mask = labelled_catalog.protocol_masks(splits, protocol)
        assert set(splits[query_mask]) == queries and set(splits[gallery_mask]) == queries | gallery
    # The weights are chosen on validation products searched among validation products only.
    assert labelled_catalog.PROTOCOLS["validation"] == ({"validation"}, {"validation"})
    with pytest.raises(ValueError, match="must leave a report split"):
        metrics.split_of(ids, 0.6, 0.4)


def _synthetic_catalog(n: int = 160, seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Shirts of 2 types x 2 colours: the embedding knows the type, the colour descriptor the colour."""
    rng = np.random.default_rng(seed)
    types = np.array(["Tshirts", "Shirts"])[np.arange(n) % 2]
    families = np.array(["red", "blue"])[(np.arange(n) // 2) % 2]
    table = _table([(f"p{i}", "shirt", types[i], families[i]) for i in range(n)])
    noise = lambda dim: rng.standard_normal((n, dim)) * 0.2  # noqa: E731
    parts = {
        BACKBONE: knn.normalize_rows(np.eye(4)[np.arange(n) % 2] * 1.0 + noise(4)),
        TYPE: knn.normalize_rows(rng.standard_normal((n, 3))),
        COLOUR_CLASS: knn.normalize_rows(rng.standard_normal((n, 2))),
        COLOUR: knn.normalize_rows(np.eye(colour.DIMENSION)[(np.arange(n) // 2) % 2] + noise(colour.DIMENSION)),
    }
    return table, parts


def test_the_rule_takes_colour_where_it_costs_no_type_and_reads_no_report_row() -> None:
    table, parts = _synthetic_catalog()
    splits = metrics.split_of(table["product_id"], 0.2, 0.5)
    # Report rows are never read: poison them.
    poisoned = {p: np.where((splits == metrics.REPORT)[:, None], np.nan, v) for p, v in parts.items()}
    settings = projection_fit.SelectionSettings(type_categories=("shirt",), colour_categories=("shirt",), step=0.5, k=5)

    selection = projection_fit.select_weights(table, poisoned, np.ones(len(table), bool), splits, settings)

    assert selection.baseline.same_type["shirt"] == pytest.approx(1.0)
    assert selection.baseline.same_colour["shirt"] < 0.7
    assert selection.chosen.weights == {BACKBONE: 0.5, COLOUR: 0.5}
    assert selection.chosen.same_colour["shirt"] > 0.95
    assert selection.chosen.keeps_type
    assert {tuple(sorted(c.weights)) for c in selection.candidates} == {
        (BACKBONE,),
        (BACKBONE, TYPE),
        (BACKBONE, COLOUR_CLASS),
        (BACKBONE, COLOUR),
    }  # every candidate keeps at least min_backbone_weight of the embedding


def test_street_precision_macro_and_class_prior() -> None:
    scores = metrics.street_precision(
        ["shirt", "shirt", "short"],
        np.array([["shirt", "short"], ["shirt", "shirt"], ["dress", ""]], dtype=object),
        ["shirt", "shirt", "shirt", "short"],
    )
    assert scores.per_category == {"shirt": 0.75, "short": 0.0}
    assert scores.prior == {"shirt": 0.75, "short": 0.25}
    assert (scores.macro, scores.macro_prior) == (pytest.approx(0.375), pytest.approx(0.5))


class MeanColourEmbedder:
    version, embedding_dim = 1, 3

    def embed(self, images):
        return knn.normalize_rows(np.stack([np.asarray(i, np.float32).reshape(-1, 3).mean(0) + 1 for i in images]))


class BoxDetector:
    """Finds the first garment of every photo and calls it a shirt."""

    def __init__(self, boxes: dict[str, tuple]) -> None:
        self.boxes = boxes

    def detect(self, image, conf=0.25):
        from types import SimpleNamespace

        return [SimpleNamespace(box=self.boxes[image.info["name"]], category="shirt", score=0.9)]


def test_street_to_shop_with_and_without_the_detected_category(tmp_path: Path, monkeypatch) -> None:
    photo = Image.new("RGB", (100, 100), (255, 255, 255))
    photo.paste((220, 20, 20), (0, 0, 50, 100))  # a red shirt on the left
    photo.paste((20, 20, 220), (50, 0, 100, 100))  # blue shorts on the right
    photo.save(tmp_path / "street.png")
    rows = pd.DataFrame(
        {
            "image_path": str(tmp_path / "street.png"),
            "category": ["shirt", "short"],
            "x1": [0, 50],
            "y1": [0, 0],
            "x2": [50, 100],
            "y2": [100, 100],
        }
    )
    catalog = knn.normalize_rows(np.array([[221, 21, 21], [21, 21, 221], [200, 40, 40], [40, 40, 200]], np.float32) + 1)
    categories = ["shirt", "short", "shirt", "short"]
    embedder = RetrievalEmbedder(MeanColourEmbedder(), legacy_layout(3))

    def load(path):
        image = Image.open(path).convert("RGB")
        image.info["name"] = "street"
        return image

    monkeypatch.setattr(real_catalog_eval, "load_image", load)
    result = real_catalog_eval.street_to_shop(
        rows, embedder, catalog, categories, BoxDetector({"street": (0, 0, 50, 100)}), k=2
    )

    assert result.unfiltered.per_category == {"shirt": 1.0, "short": 1.0}  # colour alone finds them here
    # The detector found only the shirt (the shorts are missed, counted apart); its category filters the search.
    assert result.filtered.per_category == {"shirt": 1.0}
    assert result.found_by_detector == {"shirt": 1, "short": 0}
