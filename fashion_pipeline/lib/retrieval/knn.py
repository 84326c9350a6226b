"""Per-category nearest-neighbour indexes over unit embeddings (cosine), saved without pickle.

Two backends behind one `CategoryIndex.search`:

- `exact`: the vectors as a plain `.npy` file plus the product ids as Parquet. Searched by a numpy scan
  (one matrix-vector product + argpartition); scikit-learn `NearestNeighbors(algorithm="brute",
  metric="cosine")`, the original project's index, is rebuilt from the same files with `engine="sklearn"`.
  The numpy scan returns the same neighbours 14-60x faster on one query (1.7 ms vs 0.03 ms at 1k,
  140 ms vs 10 ms at 100k x 576 here), because scikit-learn re-validates and re-normalises per call.
- `faiss-ivf`: a faiss `IndexIVFFlat` (inner product, spherical k-means, nlist ~ sqrt(N)), written with
  `faiss.write_index`. Chosen automatically from `APPROXIMATE_MIN_COUNT` vectors on (see
  benchmarks/bench_knn.py for the measurements behind the threshold and `nprobe`).
- `faiss-ivfpq`: IVF-PQ codes in memory (48 bytes per vector instead of 2,304 at 576-d) and an exact
  re-rank of a shortlist against the full vectors, memory-mapped from disk (knn_faiss.py). Chosen
  automatically from `COMPRESSED_MIN_COUNT` vectors on.

Row positions returned by `search` index into `CategoryIndex.product_ids`. Each manifest records the vector
layout (lib/retrieval/layout.py) its vectors were made with; `build_index` refuses vectors of another
dimension than the layout's, and `load_indexes` refuses a set of indexes made with different layouts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fashion_pipeline.lib.common.atomic import atomic_dir, write_json, write_parquet
from fashion_pipeline.lib.retrieval import knn_faiss
from fashion_pipeline.lib.retrieval.layout import VectorLayout, legacy_layout, read_layout

MANIFEST_FILE = "manifest.json"
PRODUCT_IDS_FILE = "product_ids.parquet"
VECTORS_FILE = "vectors.npy"
FAISS_FILE = "index.faiss"

METRIC = "cosine"
BACKENDS = ("exact", "faiss-ivf", "faiss-ivfpq")
FAISS_BACKENDS = ("faiss-ivf", "faiss-ivfpq")
EXACT_ENGINES = ("numpy", "sklearn")

# From this many vectors in a category on, `backend="auto"` builds the IVF index. Below it an exact scan
# costs <= ~10 ms per query at 576-d and returns the true neighbours; DESIGN.md sets ~100k as the move.
APPROXIMATE_MIN_COUNT = 100_000
# Lists probed per query. Query cost grows with nprobe * N / nlist = nprobe * sqrt(N): at 1M x 576 nprobe 8
# answers in 0.8-1.0 ms p50 on 2 busy cores (nprobe 4: 0.6-0.7 ms, 16: 1.9-2.4 ms) at recall@10 1.000 on
# clustered data; at 100k, where recall is hardest, nprobe 8 keeps 0.97-1.0 (4: 0.965). benchmarks/bench_knn.py
DEFAULT_NPROBE = 8
# From this many vectors in a category on, `backend="auto"` builds IVF-PQ: 1M x 576 floats take 2.3 GB per
# process serving them, the codes 59 MB; recall@10 0.996 (IVF-Flat: 1.000) thanks to the re-rank (bench_knn.py).
COMPRESSED_MIN_COUNT = 1_000_000


class KnnIndexError(ValueError):
    """Inputs or files that cannot make or be a valid index; the message says what is wrong."""


@dataclass(frozen=True)
class IndexManifest:
    category: str
    model_version: int
    count: int
    dimension: int
    metric: str = METRIC
    backend: str = "exact"
    # Backend settings, e.g. {"nlist": 1000, "nprobe": 16} for faiss-ivf; empty for exact.
    params: dict[str, Any] = field(default_factory=dict)
    # VectorLayout.to_json() of the vectors; None in manifests written before layouts (the embedding alone).
    layout: dict[str, Any] | None = None

    @property
    def vector_layout(self) -> VectorLayout:
        return read_layout(self.layout, self.dimension)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> IndexManifest:
        missing = {"category", "model_version", "count", "dimension", "metric", "backend"} - raw.keys()
        if missing:
            raise KnnIndexError(f"index manifest lacks {sorted(missing)}")
        return cls(
            category=str(raw["category"]),
            model_version=int(raw["model_version"]),
            count=int(raw["count"]),
            dimension=int(raw["dimension"]),
            metric=str(raw["metric"]),
            backend=str(raw["backend"]),
            params=dict(raw.get("params") or {}),
            layout=raw.get("layout"),
        )


def choose_backend(count: int, compressed_min_count: int = COMPRESSED_MIN_COUNT) -> str:
    if count >= compressed_min_count:
        return "faiss-ivfpq"
    return "faiss-ivf" if count >= APPROXIMATE_MIN_COUNT else "exact"


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Float32, C-contiguous, each non-zero row scaled to unit length (cosine = inner product)."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def exact_search(
    vectors: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products of unit `queries` (Q, D) against `vectors` (N, D): scores desc, row positions.

    `allowed` (bool (N,)) masks rows out before the top-k is taken. Rows past N (or past the allowed ones)
    are padded with score -inf and position -1.
    """
    n = vectors.shape[0]
    q = queries.shape[0]
    scores_out = np.full((q, k), -np.inf, dtype=np.float32)
    positions_out = np.full((q, k), -1, dtype=np.int64)
    take = min(k, n if allowed is None else int(allowed.sum()))
    refused = None if allowed is None else ~allowed
    if take == 0 or q == 0:
        return scores_out, positions_out
    # Chunked so that a large query batch never allocates a (Q, N) matrix of more than ~256 MB.
    chunk = max(1, int(64_000_000 // max(n, 1)))
    for start in range(0, q, chunk):
        scores = queries[start : start + chunk] @ vectors.T  # (q_chunk, N)
        if refused is not None:
            scores[:, refused] = -np.inf  # the same scan as unfiltered: a filter never costs a second pass
        if take < n:
            top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        else:
            top = np.broadcast_to(np.arange(n), (scores.shape[0], n))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        positions_out[start : start + chunk, :take] = np.take_along_axis(top, order, axis=1)
        scores_out[start : start + chunk, :take] = np.take_along_axis(top_scores, order, axis=1)
    return scores_out, positions_out


def _validate(vectors: np.ndarray, product_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise KnnIndexError(f"need a non-empty (N, D) matrix of vectors, got shape {array.shape}")
    ids = np.asarray([str(p) for p in product_ids], dtype=object)
    if len(ids) != array.shape[0]:
        raise KnnIndexError(f"{array.shape[0]} vectors but {len(ids)} product ids")
    if len(set(ids)) != len(ids):
        duplicated = pd.Series(ids).loc[pd.Series(ids).duplicated()].unique()[:5].tolist()
        raise KnnIndexError(f"duplicate product ids, e.g. {duplicated}")
    if not np.isfinite(array).all():
        raise KnnIndexError("vectors contain NaN or infinite values")
    return normalize_rows(array), ids


def build_index(
    vectors: np.ndarray,
    product_ids: Sequence[str],
    out_dir: Path,
    *,
    category: str,
    model_version: int,
    backend: str = "auto",
    nprobe: int = DEFAULT_NPROBE,
    compressed_min_count: int = COMPRESSED_MIN_COUNT,
    pq_bytes: int = knn_faiss.DEFAULT_PQ_BYTES,
    rerank: int = knn_faiss.DEFAULT_RERANK,
    layout: VectorLayout | None = None,
) -> IndexManifest:
    """Build one category's index into `out_dir` (replaced atomically) and return its manifest.

    `layout` says how the vectors were made (default: the classifier's embedding alone); it is recorded in
    the manifest, and vectors of another dimension are refused.
    """
    unit, ids = _validate(vectors, product_ids)
    layout = layout or legacy_layout(unit.shape[1])
    if unit.shape[1] != layout.dimension:
        raise KnnIndexError(
            f"vectors have dimension {unit.shape[1]} but the layout {layout.layout_id} ({layout.describe()}) has "
            f"{layout.dimension}: rematerialize catalog_embeddings"
        )
    if backend == "auto":
        backend = choose_backend(unit.shape[0], compressed_min_count)
    if backend not in BACKENDS:
        raise KnnIndexError(f"unknown index backend {backend!r}; choose one of {('auto', *BACKENDS)}")
    count, dimension = unit.shape
    params: dict[str, Any] = {}
    with atomic_dir(Path(out_dir)) as tmp:
        write_parquet(pd.DataFrame({"product_id": ids.astype(str)}), tmp / PRODUCT_IDS_FILE)
        if backend == "exact":
            np.save(tmp / VECTORS_FILE, unit, allow_pickle=False)
        elif backend == "faiss-ivf":
            index = knn_faiss.build_ivf_flat(unit, nprobe=nprobe)
        else:
            np.save(tmp / VECTORS_FILE, unit, allow_pickle=False)  # read back row by row for the re-rank
            index = knn_faiss.build_ivf_pq(unit, nprobe=nprobe, pq_bytes=pq_bytes)
            params = {"pq_bytes": int(pq_bytes), "rerank": int(rerank)}
        if backend in FAISS_BACKENDS:
            memory = round(knn_faiss.index_bytes(index) / count, 1)  # bytes per vector held once loaded
            params = {"nlist": int(index.nlist), "nprobe": int(index.nprobe), **params, "bytes_per_vector": memory}
            knn_faiss.faiss_module().write_index(index, str(tmp / FAISS_FILE))
        manifest = IndexManifest(
            category=category,
            model_version=int(model_version),
            count=int(count),
            dimension=int(dimension),
            metric=METRIC,
            backend=backend,
            params=params,
            layout=layout.to_json(),
        )
        write_json(manifest.to_json(), tmp / MANIFEST_FILE)
    return manifest


class CategoryIndex:
    """One loaded category index: `search(queries, k)` -> (scores desc, row positions into product_ids)."""

    def __init__(self, manifest: IndexManifest, product_ids: np.ndarray, searcher: Any, engine: str = "numpy") -> None:
        self.manifest = manifest
        self.product_ids = product_ids
        self._searcher = searcher
        self._engine = engine

    def __len__(self) -> int:
        return self.manifest.count

    @property
    def layout(self) -> VectorLayout:
        return self.manifest.vector_layout

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`allowed` (bool, one per row) restricts the answer to those rows (a price or site filter)."""
        if k < 1:
            raise KnnIndexError(f"k must be at least 1, got {k}")
        unit = normalize_rows(queries)
        if unit.shape[1] != self.manifest.dimension:
            raise KnnIndexError(
                f"query dimension {unit.shape[1]} != index dimension {self.manifest.dimension} "
                f"(category {self.manifest.category!r}, model version {self.manifest.model_version})"
            )
        if allowed is not None and not allowed.all() and self.manifest.backend == "faiss-ivfpq":
            return self._searcher.search(unit, k, np.asarray(allowed, dtype=bool))  # filtered shortlist
        if allowed is not None and not allowed.all():
            from fashion_pipeline.lib.retrieval.knn_filter import filtered_search  # imports this module

            return filtered_search(self.manifest.backend, self._searcher, unit, k, np.asarray(allowed, dtype=bool))
        if self.manifest.backend in FAISS_BACKENDS:
            scores, positions = self._searcher.search(unit, k)
            positions = positions.astype(np.int64)
            scores = np.where(positions >= 0, scores, -np.inf).astype(np.float32)
            return scores, positions
        if self._engine == "sklearn":
            return self._sklearn_search(unit, k)
        return exact_search(self._searcher, unit, k)

    def _sklearn_search(self, unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        take = min(k, self.manifest.count)
        distances, positions = self._searcher.kneighbors(unit, n_neighbors=take)
        scores = np.full((unit.shape[0], k), -np.inf, dtype=np.float32)
        padded = np.full((unit.shape[0], k), -1, dtype=np.int64)
        scores[:, :take] = 1.0 - distances
        padded[:, :take] = positions
        return scores, padded


def read_manifest(directory: Path) -> IndexManifest:
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: materialize the knn_index asset")
    return IndexManifest.from_json(json.loads(path.read_text()))


def load_index(directory: Path, engine: str = "numpy", nprobe: int | None = None) -> CategoryIndex:
    """Load an index folder written by `build_index`.

    `engine` picks the exact scan (numpy or sklearn); `nprobe` overrides the IVF lists probed per query.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest.metric != METRIC:
        raise KnnIndexError(f"{directory}: metric {manifest.metric!r} is not supported (only {METRIC!r})")
    if engine not in EXACT_ENGINES:
        raise KnnIndexError(f"unknown exact engine {engine!r}; choose one of {EXACT_ENGINES}")
    product_ids = pd.read_parquet(directory / PRODUCT_IDS_FILE)["product_id"].astype(str).to_numpy()
    if manifest.backend == "exact":
        vectors = np.load(directory / VECTORS_FILE, allow_pickle=False)
        searcher: Any = vectors
        if engine == "sklearn":
            from sklearn.neighbors import NearestNeighbors

            searcher = NearestNeighbors(algorithm="brute", metric="cosine").fit(vectors)
        shape = vectors.shape
    elif manifest.backend in FAISS_BACKENDS:
        searcher = knn_faiss.faiss_module().read_index(str(directory / FAISS_FILE))
        searcher.nprobe = int(nprobe or manifest.params.get("nprobe", DEFAULT_NPROBE))
        shape = (searcher.ntotal, searcher.d)
        if manifest.backend == "faiss-ivfpq":
            vectors = np.load(directory / VECTORS_FILE, mmap_mode="r", allow_pickle=False)
            if vectors.shape != shape:
                raise KnnIndexError(f"{directory}: {VECTORS_FILE} holds {vectors.shape}, the index {shape}")
            rerank = int(manifest.params.get("rerank", knn_faiss.DEFAULT_RERANK))
            searcher = knn_faiss.RerankedPq(searcher, vectors, rerank)
    else:
        raise KnnIndexError(f"{directory}: unknown backend {manifest.backend!r} in {MANIFEST_FILE}")
    if manifest.vector_layout.dimension != manifest.dimension:
        raise KnnIndexError(
            f"{directory}: the manifest's layout makes {manifest.vector_layout.dimension}-d vectors but the index "
            f"holds {manifest.dimension}-d ones; rematerialize knn_index"
        )
    if shape != (manifest.count, manifest.dimension) or len(product_ids) != manifest.count:
        raise KnnIndexError(
            f"{directory}: files disagree with {MANIFEST_FILE}: index holds {shape}, {len(product_ids)} ids, "
            f"manifest says {manifest.count} x {manifest.dimension}; rematerialize knn_index"
        )
    return CategoryIndex(manifest, product_ids, searcher, engine=engine)


def load_indexes(index_dir: Path, engine: str = "numpy") -> dict[str, CategoryIndex]:
    """Every category index under `index_dir` (one subfolder with a manifest.json each), by category.

    Refuses indexes made with different vector layouts: one query vector must fit them all.
    """
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise FileNotFoundError(f"{index_dir} does not exist: materialize the knn_index asset")
    indexes = {}
    for child in sorted(index_dir.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and (child / MANIFEST_FILE).is_file():
            index = load_index(child, engine=engine)
            indexes[index.manifest.category] = index
    layouts = {category: index.layout.layout_id for category, index in indexes.items()}
    if len(set(layouts.values())) > 1:
        raise KnnIndexError(
            f"the indexes under {index_dir} were built with different vector layouts {layouts}: "
            "rematerialize catalog_embeddings and knn_index"
        )
    return indexes


def clustered_unit_vectors(
    n: int, dim: int, *, centres: int = 3_000, spread: float = 0.8, seed: int = 0, chunk: int = 100_000
) -> np.ndarray:
    """Synthetic embeddings for benchmarks and tests: unit vectors scattered around `centres` unit centres.

    Each point is a centre plus Gaussian noise of expected norm `spread`, renormalised, so a point's cosine
    to its centre is about 1 / sqrt(1 + spread^2) (0.78 at the default): clustered like the embeddings of
    a catalog with many near-identical products, unlike uniform random vectors, which defeat every
    approximate index. Generated in chunks so 1M x 576 needs little more than its own 2.3 GB.
    """
    rng = np.random.default_rng(seed)
    centre_vectors = normalize_rows(rng.standard_normal((centres, dim), dtype=np.float32))
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        assignment = rng.integers(0, centres, size=stop - start)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * np.float32(spread / np.sqrt(dim))
        out[start:stop] = normalize_rows(centre_vectors[assignment] + noise)
    return out
