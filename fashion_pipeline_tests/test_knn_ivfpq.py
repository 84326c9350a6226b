"""The compressed k-NN backend: IVF-PQ codes in memory, exact re-rank from the memory-mapped vectors."""

from __future__ import annotations

import numpy as np
import pytest

from fashion_pipeline.lib.retrieval import knn

N, DIM, PQ_BYTES, K = 12_000, 96, 16, 10


@pytest.fixture(scope="module")
def clustered() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = knn.clustered_unit_vectors(N + 100, DIM, centres=400, spread=0.8, seed=3)
    vectors, queries = data[:N], data[N:]
    _, truth = knn.exact_search(vectors, queries, K)
    return vectors, queries, truth


@pytest.fixture(scope="module")
def built(clustered, tmp_path_factory) -> dict[str, tuple[knn.IndexManifest, knn.CategoryIndex]]:
    vectors, _, _ = clustered
    ids = [f"p{i}" for i in range(N)]
    out = {}
    for backend in ("faiss-ivf", "faiss-ivfpq"):
        folder = tmp_path_factory.mktemp(backend) / "dress"
        manifest = knn.build_index(
            vectors, ids, folder, category="dress", model_version=3, backend=backend, pq_bytes=PQ_BYTES, rerank=50
        )
        out[backend] = (manifest, knn.load_index(folder))
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true neighbours (padding -1 aside) that came back, averaged over queries."""
    hits = [len(set(f[f >= 0]) & set(t[t >= 0])) / max(1, (t >= 0).sum()) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def test_ivfpq_holds_a_fraction_of_the_memory_of_ivf_flat(built) -> None:
    flat, _ = built["faiss-ivf"]
    compressed, _ = built["faiss-ivfpq"]
    assert compressed.params["pq_bytes"] == PQ_BYTES and compressed.params["rerank"] == 50
    assert flat.params["bytes_per_vector"] >= 4 * DIM  # the float vectors themselves
    # Codes of PQ_BYTES bytes and an 8-byte id per vector, plus codebooks and centroids spread over N.
    assert PQ_BYTES + 8 <= compressed.params["bytes_per_vector"] < flat.params["bytes_per_vector"] / 6


def test_ivfpq_with_rerank_finds_the_true_neighbours_with_exact_scores(built, clustered) -> None:
    vectors, queries, truth = clustered
    _, index = built["faiss-ivfpq"]
    # The full vectors are read from disk, not loaded: only the shortlisted rows are touched.
    assert isinstance(index._searcher.vectors, np.memmap)
    scores, positions = index.search(queries, K)
    assert recall(positions, truth) >= 0.95
    exact = np.einsum("qd,qkd->qk", queries, vectors[positions])
    np.testing.assert_allclose(scores, exact, rtol=0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    assert index.product_ids[positions[0, 0]] == f"p{positions[0, 0]}"


def test_auto_picks_ivfpq_from_the_compressed_size_on(clustered, tmp_path) -> None:
    vectors, queries, _ = clustered
    small = knn.build_index(vectors[:500], [f"s{i}" for i in range(500)], tmp_path / "small", category="skirt",
                            model_version=1, compressed_min_count=1_000, pq_bytes=PQ_BYTES)  # fmt: skip
    large = knn.build_index(vectors, [f"p{i}" for i in range(N)], tmp_path / "large", category="dress",
                            model_version=1, compressed_min_count=1_000, pq_bytes=PQ_BYTES)  # fmt: skip
    assert (small.backend, large.backend) == ("exact", "faiss-ivfpq")
    assert knn.choose_backend(knn.COMPRESSED_MIN_COUNT) == "faiss-ivfpq"
    assert knn.choose_backend(knn.COMPRESSED_MIN_COUNT - 1) == "faiss-ivf"
    # Fewer results than k in a tiny index are padded, never invented.
    tiny = knn.build_index(vectors[:3], ["a", "b", "c"], tmp_path / "tiny", category="short", model_version=1,
                           backend="faiss-ivfpq", pq_bytes=PQ_BYTES)  # fmt: skip
    scores, positions = knn.load_index(tmp_path / "tiny").search(queries[:2], 5)
    assert tiny.count == 3 and (positions[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()


def test_a_code_size_that_does_not_divide_the_dimension_is_refused(clustered, tmp_path) -> None:
    vectors, _, _ = clustered
    with pytest.raises(ValueError, match="pq_bytes 7 must divide the vector dimension 96"):
        knn.build_index(vectors[:2_000], [f"p{i}" for i in range(2_000)], tmp_path / "x", category="dress",
                        model_version=1, backend="faiss-ivfpq", pq_bytes=7)  # fmt: skip
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_ivfpq_filters_inside_the_index(built, clustered) -> None:
    vectors, queries, _ = clustered
    _, index = built["faiss-ivfpq"]
    rng = np.random.default_rng(0)
    for share in (0.3, 0.0005):  # a broad filter (through the codes), and one leaving 6 products (all scored)
        allowed = rng.random(N) < share
        assert 0 < allowed.sum() < N
        scores, positions = index.search(queries, K, allowed=allowed)
        found = positions[positions >= 0]
        assert allowed[found].all(), "a filtered-out product came back"
        _, truth = knn.exact_search(vectors, queries, K, allowed)
        assert recall(positions, truth) >= 0.95
        if allowed.sum() <= K:  # fewer allowed than k: all of them, the rest padded
            assert ((positions >= 0).sum(axis=1) == allowed.sum()).all() and np.isneginf(
                scores[:, allowed.sum() :]
            ).all()
