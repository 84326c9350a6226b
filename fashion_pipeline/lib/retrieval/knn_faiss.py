"""The faiss backends of `knn.build_index`: IVF-Flat, and IVF-PQ for categories too large to hold as floats.

IVF-PQ keeps `pq_bytes` bytes of product-quantised code per vector in memory instead of 4 x dimension
(48 instead of 2,304 at 576-d), at the price of approximate scores. Alone it finds only about half of the
true top 10 on clustered embeddings (benchmarks/bench_knn.py); so each query takes a shortlist of `rerank`
candidates from the codes and re-scores them exactly against the full vectors, which stay on disk in the
index folder and are memory-mapped: only the shortlisted rows are read. Recall then matches IVF-Flat's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fashion_pipeline.lib.common.frameworks import DEFAULT_THREADS

# Code bytes per vector: divides both embedding sizes (576 = 48 x 12, 960 = 48 x 20), 8 bits per sub-code.
DEFAULT_PQ_BYTES = 48
# Candidates re-scored exactly per query. The codes rank the true top 10 worse the denser the category: a
# shortlist of 50 kept recall@10 at 0.998 at 100k but 0.45 at 1M x 576; 200 gave 0.905, 500 gives 0.996 at
# 2.2 ms p50 (1,000: 0.996 at 12 ms), measured on benchmarks/bench_knn.py's clustered vectors.
DEFAULT_RERANK = 500
# faiss wants about 39 training points per centroid; a sample this size trains the coarse lists and the
# codebooks as well as all the vectors would, in a fraction of the time.
TRAINING_POINTS_PER_LIST = 40
MIN_TRAINING_POINTS = 10_000


def faiss_module():
    import faiss

    faiss.omp_set_num_threads(DEFAULT_THREADS)
    return faiss


def _quantizer(dim: int):
    faiss = faiss_module()
    return faiss.IndexFlatIP(dim), faiss.METRIC_INNER_PRODUCT


def _configure(index: Any, nlist: int, nprobe: int) -> None:
    index.cp.spherical = True  # centroids on the unit sphere, like the vectors
    index.cp.seed = 1234  # reproducible builds
    index.nprobe = min(nprobe, nlist)


def build_ivf_flat(vectors: np.ndarray, nprobe: int, nlist: int | None = None):
    """A trained, filled faiss IVF-Flat inner-product index; labels are the row positions."""
    faiss = faiss_module()
    n, dim = vectors.shape
    nlist = nlist or max(1, round(np.sqrt(n)))
    quantizer, metric = _quantizer(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
    _configure(index, nlist, nprobe)
    index.train(vectors)  # faiss samples at most 256 points per list for training
    index.add(vectors)
    return index


def build_ivf_pq(vectors: np.ndarray, nprobe: int, pq_bytes: int = DEFAULT_PQ_BYTES, seed: int = 0):
    """A trained, filled faiss IVF-PQ inner-product index (`pq_bytes` code bytes per vector)."""
    faiss = faiss_module()
    n, dim = vectors.shape
    if dim % pq_bytes:
        raise ValueError(f"pq_bytes {pq_bytes} must divide the vector dimension {dim}")
    nlist = max(1, round(np.sqrt(n)))
    size = min(n, max(MIN_TRAINING_POINTS, TRAINING_POINTS_PER_LIST * nlist))
    # 8 bits per sub-code (256 centroids each) needs 256 training points; a tiny category gets fewer bits.
    nbits = min(8, max(1, int(np.log2(size))))
    quantizer, metric = _quantizer(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_bytes, nbits, metric)
    _configure(index, nlist, nprobe)
    sample = vectors if size == n else vectors[np.sort(np.random.default_rng(seed).choice(n, size, replace=False))]
    index.train(np.ascontiguousarray(sample))
    index.add(vectors)
    return index


def index_bytes(index: Any) -> int:
    """The index's size as faiss writes it: what a process holds in memory once it is loaded."""
    return int(faiss_module().serialize_index(index).nbytes)


class RerankedPq:
    """IVF-PQ shortlist, re-scored exactly against the memory-mapped full vectors: `search(unit, k, allowed)`."""

    # At most this many allowed rows (a price or site filter) are all scored exactly, skipping the codes.
    FEW_ALLOWED = 4096

    def __init__(self, index: Any, vectors: np.ndarray, rerank: int = DEFAULT_RERANK) -> None:
        self.index = index
        self.vectors = vectors  # np.load(..., mmap_mode="r"): rows are read from disk when touched
        self.rerank = rerank

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def d(self) -> int:
        return int(self.index.d)

    def search(self, unit: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of unit queries (among the `allowed` rows when given): exact scores desc, row positions."""
        shortlist = max(k, self.rerank)
        if allowed is None:
            candidates = list(self.index.search(unit, shortlist)[1])
        else:
            rows = np.flatnonzero(allowed)
            if len(rows) <= self.FEW_ALLOWED:
                candidates = [rows] * len(unit)
            else:
                faiss = faiss_module()
                bitmap = np.packbits(allowed, bitorder="little")  # bit i = id i (ids are row positions)
                selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
                params = faiss.SearchParametersIVF(sel=selector, nprobe=self.index.nprobe)
                found = self.index.search(unit, shortlist, params=params)[1]
                # Probed lists holding fewer than k allowed rows: that query is answered over all allowed rows.
                candidates = [f if (f >= 0).sum() >= min(k, len(rows)) else rows for f in found]
        scores_out = np.full((unit.shape[0], k), -np.inf, dtype=np.float32)
        positions_out = np.full((unit.shape[0], k), -1, dtype=np.int64)
        for row, (query, found) in enumerate(zip(unit, candidates, strict=True)):
            found = np.sort(found[found >= 0])  # ascending positions: the mapped file is read front to back
            if not len(found):
                continue
            exact = np.asarray(self.vectors[found], dtype=np.float32) @ query
            order = np.argsort(-exact, kind="stable")[:k]
            scores_out[row, : len(order)] = exact[order]
            positions_out[row, : len(order)] = found[order]
        return scores_out, positions_out
