"""Merge speed at DeepFashion2's real size: `read_deepfashion2` against the original scripts' plain loop.

Generates a tree of 224,114 annotation files (191,961 train + 32,153 validation) with realistic JSON
(1-3 items, segmentation polygons and landmarks of the official lengths) and one small image hard-linked
under every name, then times both readers, each in a fresh subprocess so peak memory is its own.

    python benchmarks/bench_merge.py                  # full size (about 1 GB of JSON in /tmp)
    python benchmarks/bench_merge.py --scale 0.1      # a tenth, for a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

SPLIT_FILES = {"train": 191_961, "validation": 32_153}
LANDMARKS = [25, 33, 31, 39, 15, 15, 10, 14, 8, 29, 37, 19, 19]


def _item(rng: random.Random, width: int, height: int) -> dict:
    category_id = rng.randint(1, 13)
    x1, y1 = rng.randint(0, width // 2), rng.randint(0, height // 2)
    x2, y2 = rng.randint(x1 + 10, width), rng.randint(y1 + 10, height)
    polygon = [round(rng.uniform(0, width), 2) for _ in range(2 * rng.randint(30, 90))]
    landmarks = [
        v for _ in range(LANDMARKS[category_id - 1]) for v in (rng.randint(0, width), rng.randint(0, height), 2)
    ]
    return {
        "segmentation": [polygon],
        "scale": rng.randint(1, 3),
        "viewpoint": rng.randint(1, 3),
        "zoom_in": rng.randint(1, 3),
        "landmarks": landmarks,
        "style": rng.randint(0, 3),
        "bounding_box": [x1, y1, x2, y2],
        "category_id": category_id,
        "occlusion": rng.randint(1, 3),
        "category_name": "short sleeve top",
    }


def generate_tree(root: Path, scale: float) -> int:
    """Write the tree once; reused when it is already complete."""
    marker = root / f".complete-{scale}"
    if marker.exists():
        return int(marker.read_text())
    rng = random.Random(0)
    width, height = 640, 800
    root.mkdir(parents=True, exist_ok=True)
    total = 0
    for split, n in SPLIT_FILES.items():
        n = max(1, int(n * scale))
        (root / split / "annos").mkdir(parents=True, exist_ok=True)
        (root / split / "image").mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            record = {"source": rng.choice(["user", "shop"]), "pair_id": i // 4 + 1}
            for k in range(1, rng.choice([1, 1, 2, 2, 3]) + 1):
                record[f"item{k}"] = _item(rng, width, height)
            (root / split / "annos" / f"{i:06d}.json").write_text(json.dumps(record))
            image = root / split / "image" / f"{i:06d}.jpg"
            if total % 60_000 == 0:  # ext4 allows about 65,000 links to one file
                template = root / f"template-{total}.jpg"
                Image.new("RGB", (width, height), (128, 128, 128)).save(template, quality=50)
            if not image.exists():
                os.link(template, image)
            total += 1
    marker.write_text(str(total))
    return total


def baseline_merge(root: Path) -> int:
    """The original scripts' way: one json.load at a time, PIL for the size, a list of dicts."""
    rows = []
    for split in SPLIT_FILES:
        annos = root / split / "annos"
        for name in sorted(os.listdir(annos)):
            with open(annos / name) as handle:
                record = json.load(handle)
            image_path = root / split / "image" / name.replace(".json", ".jpg")
            width, height = Image.open(image_path).size
            for key, item in record.items():
                if not key.startswith("item"):
                    continue
                x1, y1, x2, y2 = item["bounding_box"]
                rows.append(
                    {
                        "image_id": name[:-5], "split": split, "source": record["source"], "pair_id": record["pair_id"],
                        "item_index": int(key[4:]), "category_id": item["category_id"],
                        "category_name": item["category_name"], "style": item["style"], "x1": x1, "y1": y1,
                        "x2": x2, "y2": y2, "scale": item["scale"], "occlusion": item["occlusion"],
                        "zoom_in": item["zoom_in"], "viewpoint": item["viewpoint"], "image_path": str(image_path),
                        "image_width": width, "image_height": height,
                    }
                )  # fmt: skip
    import pandas as pd

    return len(pd.DataFrame(rows))


def ours_merge(root: Path) -> int:
    from fashion_pipeline.lib.deepfashion2.reader import read_deepfashion2

    df, report = read_deepfashion2(root)
    assert report.skipped_total == 0, report.skipped
    return len(df)


def _child(method: str, root: Path) -> None:
    start = time.perf_counter()
    rows = {"baseline": baseline_merge, "ours": ours_merge}[method](root)
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest single worker; the total is at most own + workers x cores.
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mib": own / 1024, "worker_peak_mib": workers / 1024}))


def _run(method: str, root: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", method, "--root", str(root)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of DeepFashion2's 224,114 files")
    parser.add_argument("--root", type=Path, default=Path("/tmp/fashion-bench-df2"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", choices=["baseline", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.root)
        return
    root = args.root / f"scale-{args.scale}"
    start = time.perf_counter()
    files = generate_tree(root, args.scale)
    print(f"tree: {files:,} annotation files under {root} ({time.perf_counter() - start:.0f} s to generate)")
    results = {}
    for method in ("baseline", "ours"):
        runs = [_run(method, root) for _ in range(args.repeats)]
        seconds = statistics.median(r["seconds"] for r in runs)
        results[method] = {**runs[0], "seconds": seconds, "files_per_s": files / seconds}
        print(
            f"{method:>8}: {seconds:7.1f} s  {files / seconds:9,.0f} files/s  {runs[0]['rows']:,} rows  "
            f"peak RSS {max(r['peak_rss_mib'] for r in runs):,.0f} MiB (+ {max(r['worker_peak_mib'] for r in runs):,.0f} MiB per worker)"
        )
    assert results["ours"]["rows"] == results["baseline"]["rows"], "the two readers disagree on the row count"
    print(
        f"speed-up: {results['ours']['files_per_s'] / results['baseline']['files_per_s']:.1f}x on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
