"""The per-category k-NN indexes: exact neighbours, approximate recall, files without pickle, consistency."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import NearestNeighbors

from fashion_pipeline.lib.retrieval import index_checks, knn
from fashion_pipeline.lib.retrieval.layout import legacy_layout


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return knn.normalize_rows(rng.standard_normal((n, dim)))


def test_exact_backend_returns_the_true_nearest_neighbours(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vectors, queries = _unit(rng, 400, 24), _unit(rng, 15, 24)
    ids = [f"p{i}" for i in range(400)]
    manifest = knn.build_index(vectors, ids, tmp_path / "shirt", category="shirt", model_version=3)
    assert manifest.backend == "exact"

    scores, positions = knn.load_index(tmp_path / "shirt").search(queries, 7)

    cosine = queries @ vectors.T
    truth = np.argsort(-cosine, axis=1)[:, :7]
    np.testing.assert_array_equal(positions, truth)
    np.testing.assert_allclose(scores, np.take_along_axis(cosine, truth, axis=1), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 0).all()
    # The original project's index (scikit-learn brute force, cosine) agrees, through either engine.
    reference = NearestNeighbors(algorithm="brute", metric="cosine").fit(vectors).kneighbors(queries, 7)[1]
    np.testing.assert_array_equal(positions, reference)
    _, sklearn_positions = knn.load_index(tmp_path / "shirt", engine="sklearn").search(queries, 7)
    np.testing.assert_array_equal(sklearn_positions, reference)


def test_fewer_products_than_k_pads_with_minus_one(tmp_path: Path) -> None:
    vectors = np.eye(3, 4, dtype=np.float32)
    knn.build_index(vectors, ["a", "b", "c"], tmp_path / "skirt", category="skirt", model_version=1)
    index = knn.load_index(tmp_path / "skirt")

    scores, positions = index.search(np.array([[2.0, 0.1, 0, 0]]), 5)  # unnormalised query: cosine anyway

    assert positions[0].tolist() == [0, 1, 2, -1, -1]
    assert index.product_ids[positions[0, 0]] == "a"
    assert scores[0, 0] == pytest.approx(2 / np.sqrt(4.01), abs=1e-6)
    assert np.isneginf(scores[0, 3:]).all()


def test_faiss_backend_recall_on_clustered_embeddings(tmp_path: Path) -> None:
    data = knn.clustered_unit_vectors(20_100, 64, centres=200, spread=0.8, seed=3)
    vectors, queries = data[:20_000], data[20_000:]
    ids = [f"p{i}" for i in range(len(vectors))]
    manifest = knn.build_index(vectors, ids, tmp_path / "dress", category="dress", model_version=1, backend="faiss-ivf")
    assert manifest.backend == "faiss-ivf"
    assert manifest.params["nlist"] == 141 and manifest.params["nprobe"] == knn.DEFAULT_NPROBE
    assert manifest.params["bytes_per_vector"] >= 4 * 64  # IVF-Flat holds the float vectors
    assert (tmp_path / "dress" / knn.FAISS_FILE).is_file()

    _, found = knn.load_index(tmp_path / "dress").search(queries, 10)

    _, truth = knn.exact_search(vectors, queries, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95


def test_auto_backend_switches_to_faiss_past_the_threshold(tmp_path: Path, monkeypatch) -> None:
    vectors = knn.clustered_unit_vectors(600, 16, centres=10, seed=0)
    ids = [str(i) for i in range(600)]
    assert knn.build_index(vectors, ids, tmp_path / "a", category="a", model_version=1).backend == "exact"
    monkeypatch.setattr(knn, "APPROXIMATE_MIN_COUNT", 500)
    assert knn.build_index(vectors, ids, tmp_path / "b", category="b", model_version=1).backend == "faiss-ivf"


def test_index_files_roundtrip_without_pickle(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    index_dir = tmp_path / "index"
    for category, n in (("shirt", 30), ("dress", 12)):
        vectors = _unit(rng, n, 8)
        knn.build_index(
            vectors, [f"{category}:{i}" for i in range(n)], index_dir / category, category=category, model_version=4
        )
    knn.build_index(
        knn.clustered_unit_vectors(400, 8, centres=5),
        [f"s{i}" for i in range(400)],
        index_dir / "short",
        category="short",
        model_version=4,
        backend="faiss-ivf",
    )

    files = sorted(p.relative_to(index_dir).as_posix() for p in index_dir.rglob("*") if p.is_file())
    assert files == [
        "dress/manifest.json",
        "dress/product_ids.parquet",
        "dress/vectors.npy",
        "shirt/manifest.json",
        "shirt/product_ids.parquet",
        "shirt/vectors.npy",
        "short/index.faiss",
        "short/manifest.json",
        "short/product_ids.parquet",
    ]
    stored = np.load(index_dir / "shirt" / "vectors.npy", allow_pickle=False)
    assert stored.dtype == np.float32 and stored.shape == (30, 8)
    assert json.loads((index_dir / "shirt" / "manifest.json").read_text()) == {
        "category": "shirt",
        "model_version": 4,
        "count": 30,
        "dimension": 8,
        "metric": "cosine",
        "backend": "exact",
        "params": {},
        # Vectors built without a layout are the embedding alone, and say so.
        "layout": legacy_layout(8).to_json(),
    }

    indexes = knn.load_indexes(index_dir)

    assert sorted(indexes) == ["dress", "shirt", "short"]
    shirt = indexes["shirt"]
    assert shirt.product_ids.tolist() == [f"shirt:{i}" for i in range(30)]
    _, positions = shirt.search(stored[[5, 17]], 1)  # a stored vector finds itself first
    assert positions[:, 0].tolist() == [5, 17]
    assert indexes["short"].manifest.params["nprobe"] == knn.DEFAULT_NPROBE


def test_rebuilding_replaces_the_previous_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    knn.build_index(
        knn.clustered_unit_vectors(300, 8, centres=4),
        [str(i) for i in range(300)],
        tmp_path / "x",
        category="x",
        model_version=1,
        backend="faiss-ivf",
    )
    knn.build_index(_unit(rng, 5, 8), list("abcde"), tmp_path / "x", category="x", model_version=2)

    assert not (tmp_path / "x" / knn.FAISS_FILE).exists()
    assert knn.load_index(tmp_path / "x").manifest.model_version == 2
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no temporary folder left behind


@pytest.mark.parametrize(
    ("vectors", "ids", "message"),
    [
        (np.ones((2, 3)), ["a", "a"], "duplicate product ids"),
        (np.array([[1.0, np.nan], [0, 1]]), ["a", "b"], "NaN"),
        (np.ones((3, 4)), ["a", "b"], "3 vectors but 2 product ids"),
        (np.ones((0, 4)), [], "non-empty"),
    ],
)
def test_bad_inputs_are_refused_with_the_reason(tmp_path: Path, vectors, ids, message: str) -> None:
    with pytest.raises(knn.KnnIndexError, match=message):
        knn.build_index(vectors, ids, tmp_path / "c", category="c", model_version=1)
    assert not (tmp_path / "c").exists()


def test_query_of_another_dimension_names_both(tmp_path: Path) -> None:
    knn.build_index(np.eye(4), list("abcd"), tmp_path / "c", category="c", model_version=1)
    with pytest.raises(knn.KnnIndexError, match="query dimension 3 != index dimension 4"):
        knn.load_index(tmp_path / "c").search(np.ones((1, 3)), 2)


def test_missing_index_names_the_asset(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="materialize the knn_index asset"):
        knn.load_indexes(tmp_path / "nothing")


def _consistent_setup(tmp_path: Path) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    embeddings = pd.DataFrame(
        {
            "product_id": ["s:1", "s:2", "s:3"],
            "category": ["shirt", "shirt", "dress"],
            "model_version": [2, 2, 2],
            "embedding": list(np.eye(3, 4, dtype=np.float32)),
        }
    )
    catalog = pd.DataFrame(
        {"product_id": ["s:1", "s:2", "s:3", "s:4"], "category": ["shirt", "shirt", "dress", "dress"]}
    )
    index_dir = tmp_path / "index"
    for category, group in embeddings.groupby("category"):
        knn.build_index(
            np.stack(group["embedding"]), group["product_id"], index_dir / category, category=category, model_version=2
        )
    return index_dir, embeddings, catalog


def test_consistency_passes_when_index_catalog_and_model_agree(tmp_path: Path) -> None:
    index_dir, embeddings, catalog = _consistent_setup(tmp_path)
    # s:4's image could not be read: it is known to be missing from the index.
    assert index_checks.consistency_problems(index_dir, embeddings, catalog, 2, 4, failed=["s:4"]) == []


def test_consistency_names_each_disagreement(tmp_path: Path) -> None:
    index_dir, embeddings, catalog = _consistent_setup(tmp_path)

    problems = index_checks.consistency_problems(index_dir, embeddings, catalog, model_version=3, dimension=4)

    text = "\n".join(problems)
    assert "embeddings come from model version(s) [2], the champion is version 3" in text
    assert "index 'shirt' was built from model version 2, the champion is version 3" in text
    assert "the catalog has 1 'dress' products that are neither embedded nor known to have failed" in text
    assert len(problems) == 4  # versions of embeddings, of both indexes, and the uncovered product

    newer_catalog = catalog[catalog["product_id"] != "s:2"]
    problems = index_checks.consistency_problems(index_dir, embeddings, newer_catalog, 2, 4, failed=["s:4"])
    assert problems == [
        "1 embedded 'shirt' products are no longer in the catalog (or changed category): rematerialize "
        "catalog_embeddings and knn_index"
    ]
