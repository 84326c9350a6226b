"""Filtered k-NN search: the price/site mask is applied inside the index, in one search, and finds what an exact
scan of the allowed products finds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashion_pipeline.lib.retrieval import knn, knn_filter
from fashion_pipeline_tests.fixtures_serving import TWO_GARMENTS, garment_photo, make_recommender


def _index(tmp_path: Path, backend: str, n: int = 6_000, dim: int = 32) -> tuple[np.ndarray, knn.CategoryIndex]:
    vectors = knn.clustered_unit_vectors(n, dim, centres=60, spread=0.8, seed=5)
    ids = [f"p{i}" for i in range(n)]
    knn.build_index(vectors, ids, tmp_path / backend, category="dress", model_version=1, backend=backend)
    return vectors, knn.load_index(tmp_path / backend)


def _truth(vectors: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(allowed)
    _, positions = knn.exact_search(vectors[rows], knn.normalize_rows(queries), k)
    return np.where(positions >= 0, rows[np.clip(positions, 0, None)], -1)


@pytest.mark.parametrize("backend", ["exact", "faiss-ivf"])
def test_a_filter_leaving_one_product_finds_it(tmp_path: Path, backend: str) -> None:
    vectors, index = _index(tmp_path, backend)
    allowed = np.zeros(len(vectors), dtype=bool)
    allowed[4321] = True
    scores, positions = index.search(vectors[:3], 5, allowed=allowed)
    assert positions.tolist() == [[4321, -1, -1, -1, -1]] * 3
    assert np.isneginf(scores[:, 1:]).all()


@pytest.mark.parametrize("backend", ["exact", "faiss-ivf"])
def test_filtered_results_are_the_best_allowed_rows(tmp_path: Path, backend: str, monkeypatch) -> None:
    # Fewer candidates scored exactly than are allowed, so the IVF index searches through its id selector.
    monkeypatch.setattr(knn_filter, "EXACT_CANDIDATES_MAX", 100)
    vectors, index = _index(tmp_path, backend)
    allowed = np.random.default_rng(1).random(len(vectors)) < 0.3
    queries = vectors[:40] + 0.01
    _, positions = index.search(queries, 10, allowed=allowed)
    assert allowed[positions].all() and (positions >= 0).all()
    truth = _truth(vectors, queries, 10, allowed)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(positions, truth, strict=True)])
    assert recall >= (1.0 if backend == "exact" else 0.9)


def test_ivf_lists_holding_too_few_allowed_rows_fall_back_to_the_allowed_rows(tmp_path: Path, monkeypatch) -> None:
    """No allowed row in the lists the query probes: still k answers, the exact best allowed ones."""
    monkeypatch.setattr(knn_filter, "EXACT_CANDIDATES_MAX", 10)
    vectors, index = _index(tmp_path, "faiss-ivf")
    query = vectors[:1]
    ivf = index._searcher
    _, probed = ivf.quantizer.search(query, ivf.nprobe)
    _, lists = ivf.quantizer.search(vectors, 1)
    allowed = ~np.isin(lists[:, 0], probed[0])
    _, positions = index.search(query, 10, allowed=allowed)
    assert positions.tolist() == _truth(vectors, query, 10, allowed).tolist()


def test_a_filtered_recommendation_is_one_masked_search(serving_catalog) -> None:
    """No widening loop over the whole index: each category is searched once, with the filter's mask."""
    recommender = make_recommender(serving_catalog)
    calls: list[tuple[int, int | None]] = []
    for catalog in recommender._catalogs.values():
        search = catalog.index.search

        def spy(queries, k, allowed=None, _search=search):
            calls.append((k, None if allowed is None else int(allowed.sum())))
            return _search(queries, k, allowed=allowed)

        catalog.index.search = spy
    query = recommender.make_query(k=10, max_price="35", site="other_shop")
    answer = recommender.recommend(garment_photo(TWO_GARMENTS), query)
    shirt = next(g for g in answer.detections if g.category == "shirt")
    assert [(p.price, p.currency, p.price_usd) for p in shirt.recommendations] == [(30.0, "EUR", 32.4)]
    # Two garments, two categories, one product of each within 35 USD on other_shop: one search each, k=1.
    assert calls == [(1, 1), (1, 1)]


def test_a_large_photo_is_analysed_downscaled_but_answered_in_its_own_pixels(serving_catalog) -> None:
    """A 3200 x 2400 photo is detected at 1600 x 1200 (JPEG draft); its boxes come back in uploaded pixels."""
    from fashion_pipeline_tests.fixtures_serving import encode

    recommender = make_recommender(serving_catalog)
    seen: list[tuple[int, int]] = []
    detect = recommender.detector.detect
    recommender.detector.detect = lambda image, conf=0.25: seen.append(image.size) or detect(image, conf=conf)
    small = garment_photo(TWO_GARMENTS)  # 320 x 240, the garments' boxes as drawn
    large = small.resize((small.width * 10, small.height * 10), resample=0)
    answer = recommender.recommend_bytes(encode(large, "JPEG", quality=95))
    assert seen == [(1600, 1200)]  # 1/2 scale: 1/4 would be under 1280
    assert answer.image_size == (3200, 2400)
    boxes = {g.category: g.box for g in answer.detections}
    expected = {c: [v * 10 for v in box] for c, box in TWO_GARMENTS.items()}
    for category, box in expected.items():
        assert boxes[category] == pytest.approx(box, abs=25), category
