"""The vector layout: colour families and descriptor, weighted parts, the projection file, and refusing mixed layouts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from fashion_pipeline.lib.retrieval import colour, embeddings, index_checks, knn
from fashion_pipeline.lib.retrieval.layout import (
    BACKBONE,
    COLOUR,
    LayoutError,
    RetrievalEmbedder,
    VectorLayout,
    default_layout,
    legacy_layout,
)
from fashion_pipeline.lib.retrieval.projection import Projection, ProjectionError, fit_projection
from fashion_pipeline.lib.retrieval.query import Recommendation, explain


def garment(fill: tuple[int, int, int], outline: tuple[int, int, int] | None = None) -> Image.Image:
    """A garment-sized block of `fill` on a white studio backdrop."""
    image = Image.new("RGB", (96, 128), (252, 252, 252))
    ImageDraw.Draw(image).rectangle((24, 24, 72, 104), fill=fill, outline=outline, width=2)
    return image


class UnitEmbedder:
    """The champion's interface: fixed unit rows of dimension 4 by image mean brightness."""

    version = 3
    embedding_dim = 4

    def embed(self, images):
        rows = [[np.asarray(i).mean(), 1.0, 0.5, 0.25] for i in images]
        return knn.normalize_rows(np.asarray(rows, np.float32))


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("Navy Blue", "blue"),
        ("navy  blue", "blue"),
        ("Blue", "blue"),
        ("Turquoise Blue", "blue"),
        ("Maroon", "red"),
        ("Off White", "white"),
        ("Cream", "white"),
        ("Grey Melange", "grey"),
        ("Charcoal", "grey"),
        ("Olive", "green"),
        ("Beige", "brown"),
        ("Mustard", "yellow"),
        ("Magenta", "pink"),
        ("Lavender", "purple"),
        ("Multi", "multi"),
        ("Chartreuse", None),
        ("", None),
        (None, None),
        (math.nan, None),
    ],
)
def test_colour_names_fold_into_families(name, family) -> None:
    assert colour.colour_family(name) == family


def test_descriptor_describes_the_garment_not_the_backdrop() -> None:
    red, navy, white = garment((200, 30, 40)), garment((25, 35, 80)), garment((250, 250, 250), outline=(150, 150, 150))

    descriptors = colour.colour_descriptors([red, navy, white, garment((205, 35, 45))])

    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)
    # The white garment keeps its colour: only near-white pixels connected to the border are backdrop.
    assert colour.dominant_family(descriptors) == ["red", "blue", "white", "red"]
    assert descriptors[0] @ descriptors[3] > 0.95  # two reds
    assert descriptors[0] @ descriptors[1] < 0.2  # red and navy


def test_dominant_family_says_none_when_no_family_holds_half() -> None:
    image = Image.new("RGB", (64, 64), (200, 30, 40))
    ImageDraw.Draw(image).rectangle((0, 32, 63, 63), fill=(45, 95, 190))  # half red, half blue

    assert colour.dominant_family(colour.colour_descriptors([image])) == [None]


def test_layout_cosine_is_the_weighted_sum_of_its_parts() -> None:
    rng = np.random.default_rng(0)
    backbone = knn.normalize_rows(rng.standard_normal((2, 4)))
    colours = knn.normalize_rows(rng.random((2, colour.DIMENSION)))
    layout = VectorLayout.with_weights(4, {BACKBONE: 0.6, COLOUR: 0.4})

    vectors = layout.vectors({BACKBONE: backbone, COLOUR: colours})

    assert vectors.shape == (2, 4 + colour.DIMENSION) == (2, layout.dimension)
    assert vectors[0] @ vectors[1] == pytest.approx(0.6 * backbone[0] @ backbone[1] + 0.4 * colours[0] @ colours[1])
    np.testing.assert_allclose(layout.part(vectors, COLOUR), colours, atol=1e-6)


def test_layout_record_round_trips_and_a_tampered_one_is_refused() -> None:
    layout = default_layout(4, 0.25)
    record = layout.to_json()

    assert VectorLayout.from_json(record) == layout
    assert record["parts"] == [
        {"name": "backbone", "dimension": 4, "weight": 0.75},
        {"name": "colour", "dimension": colour.DIMENSION, "weight": 0.25},
    ]
    with pytest.raises(LayoutError, match="cannot be reproduced"):
        tampered = [{**record["parts"][0], "weight": 0.7}, {**record["parts"][1], "weight": 0.3}]
        VectorLayout.from_json({**record, "parts": tampered})  # another weighting under the same id
    assert legacy_layout(4).layout_id != layout.layout_id


def test_retrieval_embedder_is_the_layouts_vectors_of_the_champions_embedding() -> None:
    images = [garment((200, 30, 40)), garment((25, 35, 80))]
    layout = default_layout(4, 0.3)
    embedder = RetrievalEmbedder(UnitEmbedder(), layout)

    vectors = embedder.embed(images)

    expected = layout.vectors({BACKBONE: UnitEmbedder().embed(images), COLOUR: colour.colour_descriptors(images)})
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert (embedder.version, embedder.embedding_dim) == (3, 4 + colour.DIMENSION)
    with pytest.raises(LayoutError, match="embeds in 4 dimensions, the layout expects 8"):
        RetrievalEmbedder(UnitEmbedder(), default_layout(8))


def _labelled(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, list, list]:
    rng = np.random.default_rng(seed)
    types = [["Tshirts", "Shirts", "Tops"][i % 3] for i in range(n)]
    families = [["red", "blue"][i % 2] for i in range(n)]
    backbone = knn.normalize_rows(rng.standard_normal((n, 6)) + np.eye(6)[[i % 3 for i in range(n)]] * 3)
    colours = knn.normalize_rows(rng.random((n, colour.DIMENSION)))
    bands = rng.random((n, colour.BAND_DIMENSION)).astype(np.float32)
    return backbone, colours, bands, types, families


def test_projection_file_round_trips_with_its_id(tmp_path: Path) -> None:
    backbone, colours, bands, types, families = _labelled(60)
    projection = fit_projection(backbone, colours, bands, types, families)

    projection.save(tmp_path / "projection.npz")
    loaded = Projection.load(tmp_path / "projection.npz", projection.projection_id)

    assert (loaded.type_dim, loaded.colour_dim) == (2, 1)  # classes - 1 discriminant directions
    np.testing.assert_allclose(loaded.project_type(backbone), projection.project_type(backbone), atol=1e-6)
    # The projection separates the types it was fitted on: each product is nearest its own type's centre.
    projected = projection.project_type(backbone)
    centres = np.stack([projected[[t == name for t in types]].mean(axis=0) for name in ("Tshirts", "Shirts", "Tops")])
    assert (np.argmax(projected @ centres.T, axis=1) == [i % 3 for i in range(60)]).mean() > 0.9
    with pytest.raises(ProjectionError, match="the vectors were made with"):
        Projection.load(tmp_path / "projection.npz", "0123456789abcdef")


def test_build_index_refuses_vectors_of_another_layout(tmp_path: Path) -> None:
    layout = default_layout(4, 0.3)
    with pytest.raises(knn.KnnIndexError, match=f"the layout {layout.layout_id}"):
        knn.build_index(
            np.eye(3, 4), ["a", "b", "c"], tmp_path / "shirt", category="shirt", model_version=1, layout=layout
        )


def test_indexes_of_different_layouts_are_refused_together(tmp_path: Path) -> None:
    with_colour = default_layout(4, 0.3)
    vectors = with_colour.vectors({BACKBONE: np.eye(3, 4), COLOUR: np.eye(3, colour.DIMENSION)})
    knn.build_index(vectors, ["a", "b", "c"], tmp_path / "shirt", category="shirt", model_version=1, layout=with_colour)
    knn.build_index(np.eye(3, 4), ["d", "e", "f"], tmp_path / "short", category="short", model_version=1)

    with pytest.raises(knn.KnnIndexError, match="built with different vector layouts"):
        knn.load_indexes(tmp_path)


def _embeddings_table(layout: VectorLayout, ids: list[str], category: str = "shirt") -> pd.DataFrame:
    vectors = layout.vectors({BACKBONE: np.eye(len(ids), 4), COLOUR: np.eye(len(ids), colour.DIMENSION)})
    table = pd.DataFrame(
        {
            "product_id": ids,
            "category": category,
            "model_version": 1,
            "embedding": list(vectors[:, : layout.dimension]),
            "image_sha256": "x",
            "layout_id": layout.layout_id,
        }
    )
    table.attrs["layout"] = layout
    return table


def test_consistency_check_refuses_an_index_of_another_layout_and_mixed_rows(tmp_path: Path) -> None:
    old, new = default_layout(4, 0.2), default_layout(4, 0.3)
    built = _embeddings_table(old, ["a", "b"])
    knn.build_index(
        np.stack(built["embedding"]), ["a", "b"], tmp_path / "shirt", category="shirt", model_version=1, layout=old
    )
    catalog = pd.DataFrame({"product_id": ["a", "b"], "category": ["shirt", "shirt"]})

    assert index_checks.consistency_problems(tmp_path, built, catalog, 1, 4) == []
    problems = index_checks.consistency_problems(tmp_path, _embeddings_table(new, ["a", "b"]), catalog, 1, 4)
    assert len(problems) == 1 and f"built with vector layout {old.layout_id}" in problems[0]

    mixed = pd.concat([_embeddings_table(old, ["a"]), _embeddings_table(new, ["b"])], ignore_index=True)
    mixed.attrs["layout"] = old
    text = "\n".join(index_checks.consistency_problems(tmp_path, mixed, catalog, 1, 4))
    assert "the embeddings mix vector layouts" in text


def test_catalog_rows_of_another_layout_are_embedded_again(tmp_path: Path) -> None:
    for name, fill in (("red", (200, 30, 40)), ("navy", (25, 35, 80))):
        garment(fill).save(tmp_path / f"{name}.png")
    products = pd.DataFrame(
        {
            "product_id": ["red", "navy"],
            "category": "shirt",
            "image_path": [str(tmp_path / "red.png"), str(tmp_path / "navy.png")],
        }
    )
    first, _ = embeddings.embed_catalog(products, RetrievalEmbedder(UnitEmbedder(), default_layout(4, 0.2)))
    embeddings.write_embeddings(first, tmp_path / "e.parquet", first.attrs["layout"].dimension)
    previous = embeddings.read_embeddings(tmp_path / "e.parquet")
    assert previous.attrs["layout"] == default_layout(4, 0.2)

    again, stats = embeddings.embed_catalog(
        products, RetrievalEmbedder(UnitEmbedder(), default_layout(4, 0.3)), previous
    )

    assert (stats.embedded, stats.reused) == (2, 0)
    assert "vector layout changed" in stats.full_rebuild_reason
    assert set(again["layout_id"]) == {default_layout(4, 0.3).layout_id}


def test_why_names_the_category_and_only_a_shared_colour_family() -> None:
    product = Recommendation("p", "Navy shirt", 10.0, "USD", 10.0, "shop", "u", None, 0.9, colour_family="blue")

    assert explain("shirt", "detected", "blue", product) == (
        "shirt, the category detected in your photo; same colour family as your photo (blue)"
    )
    assert explain("shirt", "chosen", "red", product) == "shirt, the category you chose"
    assert explain("short", "whole photo", None, product) == "short, searched with the whole photo"
