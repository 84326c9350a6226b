"""`fashion-pipeline evaluate`: score the champion models on a labelled folder of your own photos."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--classifier-folder",
        type=Path,
        help="class-folder tree (<folder>/**/<class>/<image>) to score the classifier on",
    )
    parser.add_argument(
        "--classifier-mapping",
        type=Path,
        help="CSV mapping class folder names onto the 5 categories (columns e.g. class10,target5); "
        "default <folder>/labels_5class.csv, else folder names must be the categories",
    )
    parser.add_argument(
        "--detector-folder", type=Path, help="YOLO-format folder (images/, labels/) to score the detector on"
    )
    parser.add_argument(
        "--detector-mapping",
        type=Path,
        help="CSV mapping class ids onto the 5 categories (columns source_class_id,target5); "
        "default <folder>/class_map_5class.csv, else ids must follow the model's class order",
    )
    parser.add_argument("--classifier-model", type=Path, help="model folder (default: the champion under data/)")
    parser.add_argument("--detector-model", type=Path, help="model folder (default: the champion under data/)")
    parser.add_argument("--json", type=Path, help="also write the full results to this JSON file")


def run(args: argparse.Namespace) -> int:
    from fashion_pipeline.lib.common.atomic import write_json
    from fashion_pipeline.lib.common.paths import DataPaths
    from fashion_pipeline.lib.training import evaluation

    if not args.classifier_folder and not args.detector_folder:
        print("evaluate: give --classifier-folder and/or --detector-folder")
        return 2
    paths = DataPaths.from_env()
    results = {}
    try:
        if args.detector_folder:
            results["detector"] = evaluation.evaluate_detector(
                args.detector_model or paths.detector_dir, args.detector_folder, args.detector_mapping
            )
        if args.classifier_folder:
            results["classifier"] = evaluation.evaluate_classifier(
                args.classifier_model or paths.classifier_dir, args.classifier_folder, args.classifier_mapping
            )
    except (FileNotFoundError, ValueError) as exc:
        print(f"evaluate: {exc}")
        return 1
    print(evaluation.format_report(results))
    if args.json:
        write_json(results, args.json)
        print(f"results written to {args.json}")
    return 0
