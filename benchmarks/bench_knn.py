"""k-NN index alone: one-query latency (p50/p95) and recall@k of the project's index against exact search.

Data: `--n` clustered unit vectors of the embedding dimension (`--dim`, 576 = MobileNetV3Small pooled, the
demo classifier's), plus `--queries` held-out points from the same distribution. The candidates:

- baseline `numpy exact scan` and `sklearn brute (cosine)`, the original project's index;
- `knn.build_index(..., backend=...)` as the pipeline builds it (written to disk and loaded back with
  `knn.load_index`) for each of `--backends`, swept over `--nprobe` for the faiss backends, with the memory
  each index holds per vector once loaded (IVF-PQ keeps its full vectors on disk for the re-rank).

Queries go one at a time, as a shopper's do; timings are medians over all queries (the machine is shared,
so compare ratios within one run). Usage:

    .venv/bin/python benchmarks/bench_knn.py --n 100000          # about a minute
    .venv/bin/python benchmarks/bench_knn.py                     # 1M vectors: a few minutes, ~7 GB RAM
    .venv/bin/python benchmarks/bench_knn.py --backends faiss-ivf,faiss-ivfpq --nprobe 8   # IVF-Flat vs IVF-PQ
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fashion_pipeline.lib.common.frameworks import DEFAULT_THREADS
from fashion_pipeline.lib.retrieval import knn


def time_queries(search, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query seconds and the (Q, k) positions, one query per call."""
    seconds = np.empty(len(queries))
    positions = np.empty((len(queries), k), dtype=np.int64)
    for i in range(len(queries)):
        start = time.perf_counter()
        _, found = search(queries[i : i + 1], k)
        seconds[i] = time.perf_counter() - start
        positions[i] = found[0]
    return seconds, positions


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true top-k that the candidate's top-k contains, averaged over queries."""
    hits = [len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def memory_per_vector(manifest: knn.IndexManifest) -> float:
    """Bytes per vector a loaded index holds in memory: the float matrix, or what faiss serialises."""
    return float(manifest.params.get("bytes_per_vector", 4 * manifest.dimension))


def row(name: str, seconds: np.ndarray, recall: float, build_s: float | None, **extra) -> dict:
    return {
        "name": name,
        "p50_ms": float(np.median(seconds) * 1e3),
        "p95_ms": float(np.percentile(seconds, 95) * 1e3),
        "recall": recall,
        "build_s": build_s,
        **extra,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="indexed vectors")
    parser.add_argument("--dim", type=int, default=576, help="576 MobileNetV3Small, 960 Large")
    parser.add_argument("--centres", type=int, default=3_000, help="clusters in the synthetic data")
    parser.add_argument("--spread", type=float, default=0.8, help="noise norm around each centre")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--baseline-queries", type=int, default=30, help="queries timed on the slow baselines")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nprobe", default="4,8,16", help="IVF lists probed, comma-separated sweep")
    parser.add_argument("--backends", default="auto", help=f"comma-separated, of auto, {', '.join(knn.BACKENDS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "knn.json")
    args = parser.parse_args()

    print(f"generating {args.n:,} + {args.queries} clustered unit vectors, dim {args.dim} ...", flush=True)
    data = knn.clustered_unit_vectors(
        args.n + args.queries, args.dim, centres=args.centres, spread=args.spread, seed=args.seed
    )
    vectors, queries = data[: args.n], data[args.n :]
    truth_scores, truth = knn.exact_search(vectors, queries, args.k)  # ground truth, batched
    # How clustered the data is, in the terms a real catalog would be judged by.
    neighbour_cosines = {
        "first": float(truth_scores[:, 0].mean()),
        f"k{args.k}": float(truth_scores[:, args.k - 1].mean()),
    }
    rows = []

    few = queries[: args.baseline_queries]
    seconds, found = time_queries(lambda q, k: knn.exact_search(vectors, q, k), queries, args.k)
    rows.append(row("numpy exact scan (baseline)", seconds, recall_at_k(found, truth), 0.0))

    from sklearn.neighbors import NearestNeighbors

    start = time.perf_counter()
    brute = NearestNeighbors(algorithm="brute", metric="cosine").fit(vectors)
    fit_s = time.perf_counter() - start
    seconds, found = time_queries(lambda q, k: brute.kneighbors(q, n_neighbors=k), few, args.k)
    rows.append(row("sklearn brute cosine (baseline)", seconds, recall_at_k(found, truth[: len(few)]), fit_s))

    build_cpu = {}
    ids = [f"p{i}" for i in range(args.n)]
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="bench_knn_") as tmp:
            start, cpu_start = time.perf_counter(), time.process_time()
            manifest = knn.build_index(
                vectors, ids, Path(tmp) / "bench", category="bench", model_version=1, backend=backend
            )
            build_s = time.perf_counter() - start
            build_cpu[manifest.backend] = time.process_time() - cpu_start
            print(
                f"built {manifest.backend} index in {build_s:.1f} s wall, {build_cpu[manifest.backend]:.1f} s CPU "
                f"(train + add + write; {manifest.params})",
                flush=True,
            )
            sweep = [int(p) for p in args.nprobe.split(",")] if manifest.backend in knn.FAISS_BACKENDS else [None]
            for nprobe in sweep:
                index = knn.load_index(Path(tmp) / "bench", nprobe=nprobe)
                seconds, found = time_queries(index.search, queries, args.k)
                label = f"knn {manifest.backend}" + (f" nprobe={nprobe}" if nprobe else "")
                memory = memory_per_vector(manifest)
                extra = {"nprobe": nprobe, "params": manifest.params, "bytes_per_vector": memory}
                rows.append(row(label, seconds, recall_at_k(found, truth), build_s, **extra))

    exact_p50 = rows[0]["p50_ms"]
    print(
        f"\n{args.n:,} x {args.dim}, k={args.k}, {args.queries} queries one at a time, "
        f"{DEFAULT_THREADS} threads (machine shared: compare ratios)"
    )
    print(
        f"{'index':40s} {'p50 ms':>9s} {'p95 ms':>9s} {'recall@' + str(args.k):>10s} {'build s':>8s} {'speed-up':>9s}"
        f" {'bytes/vector':>13s}"
    )
    for r in rows:
        build = f"{r['build_s']:.1f}" if r["build_s"] is not None else "-"
        print(
            f"{r['name']:40s} {r['p50_ms']:9.3f} {r['p95_ms']:9.3f} {r['recall']:10.3f} {build:>8s} "
            f"{exact_p50 / r['p50_ms']:8.1f}x {r.get('bytes_per_vector', 4 * args.dim):13,.0f}"
        )
    result = {
        "benchmark": "knn",
        "n": args.n,
        "dim": args.dim,
        "centres": args.centres,
        "spread": args.spread,
        "neighbour_cosines": neighbour_cosines,
        "k": args.k,
        "queries": args.queries,
        "threads": DEFAULT_THREADS,
        "build_cpu_s": build_cpu,
        "machine": platform.platform(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = args.out.with_name(f"{args.out.stem}_{args.n}_{args.dim}_spread{args.spread}{args.out.suffix}")
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
