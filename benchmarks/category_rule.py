"""Choose the app's category rule (lib/retrieval/category_rule.py) on validation photos with the champions.

Reads the champions and the `labelled_photos` table under the data root (FASHION_DATA_DIR, or --data-dir)
and scores every candidate rule on the table's validation rows only (lib/retrieval/category_rule_fit.py):
street detections matched to labelled boxes, single-garment photos' main box, and the whole-photo
fallback on single-garment photos where nothing was detected. Usage (a few minutes on 2 cores):

    FASHION_DATA_DIR=/path/to/real/data .venv/bin/python benchmarks/category_rule.py \
        --out benchmarks/results/category_rule_validation.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fashion_pipeline.lib.common.atomic import write_text
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.retrieval import category_rule_fit as fit
from fashion_pipeline.lib.retrieval.recommender import DECODE_MAX_SIDE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="data root (default: FASHION_DATA_DIR)")
    parser.add_argument("--out", type=Path, required=True, help="the results JSON to write")
    parser.add_argument("--observations", type=Path, help="cache of the models' outputs (read if it exists)")
    parser.add_argument("--conf", type=float, default=0.25, help="detector confidence, as the app (0.25)")
    args = parser.parse_args(argv)
    paths = DataPaths(root=args.data_dir) if args.data_dir else DataPaths.from_env()

    if args.observations and args.observations.exists():
        observations = fit.Observations.from_json(json.loads(args.observations.read_text()))
    else:
        # Imported here: ONNX Runtime and TensorFlow are only needed when the models run.
        from fashion_pipeline.lib.training.detector import load_detector
        from fashion_pipeline.lib.training.embedder import load_embedder

        table = pd.read_parquet(paths.labelled_photos)
        observations = fit.collect(
            table,
            load_detector(paths.detector_dir),
            load_embedder(paths.classifier_dir),
            conf=args.conf,
            max_side=DECODE_MAX_SIDE,
        )
        if args.observations:
            write_text(json.dumps(observations.to_json()), args.observations)
    rules = fit.score_rules(observations)
    whole = fit.score_whole_photo(observations)
    chosen = fit.choose(rules, whole)
    pd.set_option("display.width", 160)
    print(rules.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(whole.to_string(index=False))
    print(f"chosen: {chosen}")
    metadata = {}
    for name, folder in (("classifier", paths.classifier_dir), ("detector", paths.detector_dir)):
        model = json.loads((folder / "metadata.json").read_text())
        metadata[name] = {key: model.get(key) for key in ("registered_version", "mlflow_run_id", "profile")}
    result = {
        "what": "category rule candidates on validation photos only (labelled_photos split == validation)",
        "data_root": str(paths.root),
        "models": metadata,
        "detector_confidence": args.conf,
        "unreadable_photos": observations.unreadable,
        "rules": rules.astype(object).where(rules.notna(), None).to_dict(orient="records"),
        "whole_photo": whole.to_dict(orient="records"),
        "chosen": vars(chosen),
    }
    write_text(json.dumps(result, indent=2) + "\n", args.out)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
