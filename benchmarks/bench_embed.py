"""Catalog embedding throughput (images/s): the pipeline's batched path against one-image-at-a-time `predict`.

The model is the demo classifier's architecture (`classifier_model.build_model`, MobileNetV3Small at 128 px by
default) built with weights=None, so nothing is downloaded; speed does not depend on the weights. Images
are generated product photos written as JPEG files, so the pipeline rows include reading, hashing and
decoding, as `catalog_embeddings` does.

- baseline `model.predict` per image: the original project's way (load, resize, `predict` on a batch of 1);
- `GarmentEmbedder.embed`, one image per call: the per-request path of the recommender;
- `embed_catalog`, batched (`--batch-size`): the `catalog_embeddings` asset on a fresh catalog;
- `embed_catalog` again with nothing changed: the incremental rerun (hash only, no model call).

Each row is the median of `--repeats` runs (the machine is shared: compare ratios). Usage:

    .venv/bin/python benchmarks/bench_embed.py                       # about two minutes
    .venv/bin/python benchmarks/bench_embed.py --architecture large --input-size 224
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
import pandas as pd
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fashion_pipeline.lib.common import frameworks
from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.common.frameworks import DEFAULT_THREADS
from fashion_pipeline.lib.common.images import load_image
from fashion_pipeline.lib.retrieval import embeddings
from fashion_pipeline.lib.training import classifier_model
from fashion_pipeline.lib.training.embedder import GarmentEmbedder


def generate_products(folder: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """`n` product photos (a garment-like shape on a light background) and their catalog rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        image = Image.new("RGB", (400, 500), tuple(int(v) for v in rng.integers(200, 256, 3)))
        draw = ImageDraw.Draw(image)
        colour = tuple(int(v) for v in rng.integers(0, 200, 3))
        x, y = rng.integers(40, 120, 2)
        draw.rectangle((int(x), int(y), int(x) + 220, int(y) + 300), fill=colour)
        draw.ellipse((int(x) + 60, int(y) - 30, int(x) + 160, int(y) + 40), fill=colour)
        path = folder / f"{i:05d}.jpg"
        image.save(path, quality=90)
        rows.append({"product_id": f"bench:{i}", "category": CATEGORIES[i % len(CATEGORIES)], "image_path": str(path)})
    return pd.DataFrame(rows)


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="catalog size for the batched rows")
    parser.add_argument("--baseline-images", type=int, default=48, help="images for the one-at-a-time rows")
    parser.add_argument("--architecture", choices=("small", "large"), default="small")
    parser.add_argument("--input-size", type=int, default=128, help="the demo profile's size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "embed.json")
    args = parser.parse_args()

    settings = classifier_model.settings_for(
        "demo", architecture=f"mobilenet_v3_{args.architecture}", pretrained="none", input_size=args.input_size
    )
    model = classifier_model.build_model(settings)
    dim = int(model.get_layer(classifier_model.EMBEDDING_LAYER).output.shape[-1])
    metadata = {
        "registered_version": 1,
        "classes": list(CATEGORIES),
        "input_size": args.input_size,
        "embedding_dim": dim,
    }
    embedder = GarmentEmbedder(model, metadata)
    keras = frameworks.keras()
    embedding_model = keras.Model(model.inputs, model.get_layer(classifier_model.EMBEDDING_LAYER).output)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_embed_") as tmp:
        products = generate_products(Path(tmp), args.images)
        few = products["image_path"].tolist()[: args.baseline_images]
        # Warm up every path at the batch shapes it will see: the first call per shape builds a graph.
        embedding_model.predict(
            classifier_model.prepare_image(load_image(few[0]), args.input_size)[None].astype(np.float32), verbose=0
        )
        embedder.embed([load_image(few[0])])
        embedder.embed([load_image(few[0])] * args.batch_size)
        if len(products) % args.batch_size:
            embedder.embed([load_image(few[0])] * (len(products) % args.batch_size))

        def predict_each() -> None:
            for path in few:
                x = classifier_model.prepare_image(load_image(path), args.input_size)[None].astype(np.float32)
                embedding_model.predict(x, verbose=0)

        def embed_each() -> None:
            for path in few:
                embedder.embed([load_image(path)])

        catalog_state: dict = {}

        def embed_batched() -> None:
            catalog_state["table"], _ = embeddings.embed_catalog(products, embedder, None, batch_size=args.batch_size)

        def rerun_unchanged() -> None:
            _, stats = embeddings.embed_catalog(products, embedder, catalog_state["table"], batch_size=args.batch_size)
            assert stats.embedded == 0

        for name, fn, n in (
            ("keras model.predict per image (baseline)", predict_each, len(few)),
            ("GarmentEmbedder.embed per image", embed_each, len(few)),
            (f"embed_catalog batched ({args.batch_size})", embed_batched, len(products)),
            ("embed_catalog rerun, nothing changed", rerun_unchanged, len(products)),
        ):
            median, runs = timed(fn, args.repeats)
            rows.append({"name": name, "images": n, "median_s": median, "images_per_s": n / median, "runs_s": runs})
            print(f"{name}: {n / median:.1f} images/s", flush=True)

    base = rows[0]["images_per_s"]
    print(
        f"\nMobileNetV3{args.architecture.capitalize()} {args.input_size} px, embedding {dim}-d, weights=None, "
        f"{DEFAULT_THREADS} threads (machine shared: compare ratios)"
    )
    print(f"{'path':44s} {'images':>7s} {'images/s':>9s} {'vs baseline':>12s}")
    for r in rows:
        print(f"{r['name']:44s} {r['images']:7d} {r['images_per_s']:9.1f} {r['images_per_s'] / base:11.1f}x")
    result = {
        "benchmark": "embed",
        "architecture": args.architecture,
        "input_size": args.input_size,
        "embedding_dim": dim,
        "batch_size": args.batch_size,
        "threads": DEFAULT_THREADS,
        "machine": platform.platform(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = args.out.with_name(f"{args.out.stem}_{args.architecture}_{args.input_size}{args.out.suffix}")
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
