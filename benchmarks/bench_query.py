"""End-to-end query latency: photo bytes -> detect -> crop -> embed -> k-NN -> products, p50/p95 on 2 cores.

Ours: `lib.retrieval.recommender.Recommender.recommend_bytes` as the app runs it: the ONNX detector
(onnxruntime, one thread), the Keras embedding model once per photo on all crops (`predict_on_batch`), and
the catalog's k-NN index (`knn.build_index(backend="auto")`, loaded with `knn.load_index`, as knn_index
writes it), with one BLAS thread as `fashion-pipeline serve` sets it.

Baseline, in the same process and run: the original project's way: Ultralytics `YOLO.predict` (PyTorch),
then Keras `model.predict` once per crop, then a scikit-learn brute-force `NearestNeighbors` freshly
unpickled from disk for every request (pickle only here, to reproduce the original).

Models: the champions under the data root when both are materialized (`--models data`), else untrained
ones built here offline with the demo or full profile's architecture and input sizes (MobileNetV3 with
weights=None, yolo11n from its yaml exported to ONNX), so the compute per query is real. Untrained weights
find nothing, so both pipelines run the detector network in full and then take two fixed garment boxes per
photo (the same for both); a trained detector's few candidates make its post-processing cheap, so the
candidates are thresholded high for both. Every query searches one index of `--products` vectors
(synthetic, clustered like real embeddings): conservative, since a real catalog spreads over 5 categories.

Photos: ../shared/data/real/seed-demo-photos (JPEG, WebP, PNG, JFIF), decoded by lib.common.images in both.

Vectors (`--layout`, lib/retrieval/layout.py): `fitted` (default) is the layout retrieval_projection chose on
../shared's catalog (embedding x 0.1 + article-type projection x 0.4 + colour-family projection x 0.5; the
projections here have the fitted ones' shapes with random values, the same compute), `colour` the layout
without a labelled catalog (embedding + colour descriptor), `embedding` the embedding alone. Ours computes
the colour and band descriptors of every crop and the projections, as the app does; the baseline does not.

    .venv/bin/python benchmarks/bench_query.py                      # demo profile, 10k and 100k
    .venv/bin/python benchmarks/bench_query.py --profile full       # 640 px detector, MobileNetV3Large 224
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path

# Two cores, as the project's machines: set before any framework starts its thread pools.
if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 2:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
os.environ.setdefault("FASHION_THREADS", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fashion_pipeline.lib.common import frameworks  # noqa: E402
from fashion_pipeline.lib.common.images import load_image  # noqa: E402
from fashion_pipeline.lib.common.paths import DataPaths  # noqa: E402
from fashion_pipeline.lib.retrieval import knn  # noqa: E402
from fashion_pipeline.lib.retrieval.category_rule import CategoryRule  # noqa: E402
from fashion_pipeline.lib.retrieval.recommender import Recommender  # noqa: E402
from fashion_pipeline.lib.training import classifier_model, detector, detector_training  # noqa: E402
from fashion_pipeline.lib.training.embedder import load_embedder  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_models import (  # noqa: E402
    CATEGORY,
    FixedBoxDetector,
    Models,
    build_untrained_models,
    champion_models,
    fixed_boxes,
    retrieval_embedder,
    synthetic_catalog,
)

PHOTOS = REPO.parent / "shared" / "data" / "real" / "seed-demo-photos"
# Two garments per photo, as fractions of its width/height (x1, y1, x2, y2).
FIXED_BOXES = ((0.15, 0.10, 0.65, 0.55), (0.30, 0.45, 0.85, 0.95))
UNTRAINED_CONFIDENCE = 0.999  # untrained heads score everything ~0.5: keep NMS as light as a trained model's


# --- the two pipelines ----------------------------------------------------------------------------------
def percentiles(seconds: list[float]) -> dict[str, float]:
    return {
        "p50_ms": float(np.median(seconds) * 1e3),
        "p95_ms": float(np.percentile(seconds, 95) * 1e3),
        "queries": len(seconds),
    }


def time_ours(recommender: Recommender, photos: list[bytes], queries: int, k: int, **filters) -> dict:
    """p50/p95 of whole queries and per stage; `filters` (max_price, site) as the app passes them."""
    query = recommender.make_query(k=k, **filters)
    expected = min(k, int(recommender._catalogs[CATEGORY].allowed(query).sum()))
    stages: dict[str, list[float]] = {"detect": [], "embed": [], "search": []}

    def timed(stage, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                stages[stage].append(time.perf_counter() - start)

        return wrapper

    # Instance attributes shadow the methods while timing; deleted afterwards, the methods are back.
    timed_objects = [recommender.detector, recommender.embedder, *(c.index for c in recommender._catalogs.values())]
    recommender.detector.detect = timed("detect", recommender.detector.detect)
    # embed_classify: the champion's embedding and class probabilities (one forward pass), the colour
    # descriptors and the projections of every crop.
    recommender.embedder.embed_classify = timed("embed", recommender.embedder.embed_classify)
    for catalog in recommender._catalogs.values():
        catalog.index.search = timed("search", catalog.index.search)
    for photo in photos[:3]:  # warm-up
        recommender.recommend_bytes(photo, query)
    for values in stages.values():
        values.clear()
    seconds = []
    for i in range(queries):
        start = time.perf_counter()
        answer = recommender.recommend_bytes(photos[i % len(photos)], query)
        seconds.append(time.perf_counter() - start)
        assert len(answer.detections) == 2 and len(answer.detections[0].recommendations) == expected
    for target in timed_objects:
        for name in ("detect", "embed_classify", "search"):
            target.__dict__.pop(name, None)
    return {**percentiles(seconds), "stages_p50_ms": {s: float(np.median(v) * 1e3) for s, v in stages.items()}}


class OriginalPipeline:
    """The original project's serving path, reproduced: everything per request, nothing kept warm but models."""

    def __init__(self, models: Models, pickle_path: Path, products: pd.DataFrame, confidence: float) -> None:
        frameworks.ultralytics()
        from ultralytics import YOLO

        keras = frameworks.keras()
        self.yolo = YOLO(models.yolo_weights, task="detect")
        metadata = json.loads((models.detector_dir / "metadata.json").read_text())
        self.yolo_size = int(metadata["input_size"])
        classifier_metadata = json.loads((models.classifier_dir / "metadata.json").read_text())
        full = keras.models.load_model(models.classifier_dir / classifier_metadata["model_file"], compile=False)
        self.embedding_model = keras.Model(full.inputs, full.get_layer(classifier_model.EMBEDDING_LAYER).output)
        self.input_size = int(classifier_metadata["input_size"])
        self.resize = classifier_metadata.get("resize", classifier_model.DEFAULT_RESIZE)
        self.pickle_path = pickle_path
        self.products = products
        self.confidence = confidence

    def query(self, photo: bytes, k: int) -> list[list[dict]]:
        image = load_image(photo)
        self.yolo.predict(image, imgsz=self.yolo_size, conf=self.confidence, verbose=False)
        with self.pickle_path.open("rb") as handle:
            index = pickle.load(handle)  # the original's way, measured as the baseline: never in lib/
        answers = []
        for box in fixed_boxes(*image.size):
            crop = image.crop(tuple(int(v) for v in box))
            x = classifier_model.prepare_image(crop, self.input_size, self.resize)[None].astype(np.float32)
            embedding = self.embedding_model.predict(x, verbose=0)  # (1, D), one call per crop
            distances, rows = index.kneighbors(embedding, n_neighbors=k)
            found = self.products.iloc[rows[0]].assign(score=1 - distances[0])
            answers.append(found.to_dict("records"))
        return answers


def time_baseline(pipeline: OriginalPipeline, photos: list[bytes], queries: int, k: int) -> dict:
    pipeline.query(photos[0], k)  # warm-up
    seconds = []
    for i in range(queries):
        start = time.perf_counter()
        answers = pipeline.query(photos[i % len(photos)], k)
        seconds.append(time.perf_counter() - start)
        assert len(answers) == 2 and len(answers[0]) == k
    return percentiles(seconds)


# --- main -----------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo", choices=sorted(detector_training.PROFILES), help="model sizes")
    parser.add_argument("--models", default="untrained", help="'untrained' (built here) or 'data' (champions)")
    parser.add_argument("--products", default="10000,100000", help="index sizes, comma-separated")
    parser.add_argument("--queries", type=int, default=40, help="timed queries of ours per size")
    parser.add_argument("--baseline-queries", type=int, default=10, help="timed queries of the baseline")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--backend", default="auto", choices=("auto", *knn.BACKENDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", default="fitted", choices=("fitted", "colour", "embedding"), help="vectors")
    parser.add_argument("--out", type=Path, default=None, help="default: results/query_<profile>.json")
    args = parser.parse_args()
    args.out = args.out or Path(__file__).resolve().parent / "results" / f"query_{args.profile}.json"

    load_at_start = os.getloadavg()[0]  # other work on the machine inflates every figure: it is recorded
    photos = [p.read_bytes() for p in sorted(PHOTOS.iterdir())]
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        work = Path(tmp)
        if args.models == "data":
            models = champion_models(DataPaths.from_env())
        else:
            print(f"building untrained {args.profile}-profile models ...", flush=True)
            models = build_untrained_models(args.profile, work)
        confidence = 0.25 if models.trained else UNTRAINED_CONFIDENCE
        onnx_detector = detector.load_detector(models.detector_dir)
        champion = load_embedder(models.classifier_dir)
        embedder = retrieval_embedder(champion, args.layout, args.seed)
        model_info = {
            "trained": models.trained,
            "detector_input": onnx_detector.input_size,
            "classifier": json.loads((models.classifier_dir / "metadata.json").read_text()).get(
                "architecture", f"MobileNetV3 ({args.profile} profile)"
            ),
            "classifier_input": champion.input_size,
            "embedding_dim": champion.embedding_dim,
            "layout": embedder.layout.describe(),
            "bytes_per_vector": 4 * embedder.layout.dimension,
        }
        print(f"models: {model_info}", flush=True)
        results = []
        for n in [int(v) for v in args.products.split(",")]:
            print(f"\n{n:,} products: generating vectors and building the index ...", flush=True)
            vectors, products = synthetic_catalog(n, embedder.embedding_dim, args.seed)
            index_dir = work / f"index-{n}" / CATEGORY
            start = time.perf_counter()
            manifest = knn.build_index(
                vectors,
                products["product_id"],
                index_dir,
                category=CATEGORY,
                model_version=embedder.version,
                backend=args.backend,
                layout=embedder.layout,
            )
            build_s = time.perf_counter() - start
            recommender = Recommender(
                FixedBoxDetector(onnx_detector, confidence),
                embedder,
                {CATEGORY: knn.load_index(index_dir)},
                products,
                # Every box searched in the one synthetic category, whatever the classifier reads in it: its
                # reading comes from the embedding's forward pass anyway, so the timed work is the same.
                category_rule=CategoryRule("detector"),
            )
            with threadpool_limits(limits=1, user_api="blas"):  # as `fashion-pipeline serve` sets it
                ours = time_ours(recommender, photos, args.queries, args.k)
                # Filtered: a price leaving only the cheapest product (worst case of a widening fetch), and 30 %.
                prices = np.sort(products["price_usd"].to_numpy())
                filtered = {
                    "max_price_leaves_1": time_ours(
                        recommender, photos, args.queries, args.k, max_price=str(prices[0])
                    ),
                    "max_price_leaves_30pct": time_ours(
                        recommender, photos, args.queries, args.k, max_price=str(prices[int(0.3 * n)])
                    ),
                }
            print(
                f"  ours ({manifest.backend}): p50 {ours['p50_ms']:.1f} ms, p95 {ours['p95_ms']:.1f} ms, "
                f"stages p50 {ours['stages_p50_ms']}",
                flush=True,
            )
            for name, timing in filtered.items():
                print(f"  ours, {name}: p50 {timing['p50_ms']:.1f} ms, stages p50 {timing['stages_p50_ms']}")

            from sklearn.neighbors import NearestNeighbors

            pickle_path = work / f"nn-{n}.pkl"
            with pickle_path.open("wb") as handle:
                # The original indexed the embedding alone: the first columns of our vectors, renormalised.
                original = knn.normalize_rows(vectors[:, : champion.embedding_dim])
                pickle.dump(NearestNeighbors(algorithm="brute", metric="cosine").fit(original), handle)
            baseline = time_baseline(
                OriginalPipeline(models, pickle_path, products, confidence), photos, args.baseline_queries, args.k
            )
            print(f"  baseline: p50 {baseline['p50_ms']:.1f} ms, p95 {baseline['p95_ms']:.1f} ms", flush=True)
            results.append(
                {
                    "products": n,
                    "backend": manifest.backend,
                    "index_params": manifest.params,
                    "index_build_s": build_s,
                    "pickle_mb": pickle_path.stat().st_size / 1e6,
                    "ours": ours,
                    "ours_filtered": filtered,
                    "baseline": baseline,
                    "speedup_p50": baseline["p50_ms"] / ours["p50_ms"],
                }
            )
            pickle_path.unlink()
            del vectors, recommender

    report = {
        "load_average_1min_at_start_and_end": [load_at_start, os.getloadavg()[0]],
        "machine": {
            "cpus_used": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "profile": args.profile,
        "models": model_info,
        "k": args.k,
        "garments_per_photo": len(FIXED_BOXES),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nprofile {args.profile}: {model_info}")
    print("| products | index | ours p50 | ours p95 | baseline p50 | baseline p95 | speed-up (p50) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['products']:,} | {r['backend']} | {r['ours']['p50_ms']:.0f} ms | {r['ours']['p95_ms']:.0f} ms | "
            f"{r['baseline']['p50_ms']:.0f} ms | {r['baseline']['p95_ms']:.0f} ms | {r['speedup_p50']:.1f}x |"
        )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
