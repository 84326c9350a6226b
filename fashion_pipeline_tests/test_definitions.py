"""The Definitions object loads with every stage's assets, checks, jobs and schedules."""

from __future__ import annotations

import dagster as dg

from fashion_pipeline.definitions import defs

EXPECTED_ASSETS = {
    "deepfashion2_sample",
    "deepfashion2_annotations",
    "garment_items",
    "garment_crops",
    "yolo_dataset",
    "garment_classifier",
    "garment_detector",
    "catalog_raw",
    "catalog_images",
    "product_catalog",
    "catalog_embeddings",
    "knn_index",
    "retrieval_evaluation",
}

EXPECTED_CHECKS = {
    ("deepfashion2_annotations", "no_skipped_inputs"),
    ("deepfashion2_annotations", "boxes_inside_images"),
    ("garment_items", "every_item_mapped"),
    ("garment_items", "no_empty_category"),
    ("garment_crops", "crops_match_items"),
    ("yolo_dataset", "labels_valid"),
    ("garment_classifier", "champion_gate"),
    ("garment_detector", "champion_gate"),
    ("knn_index", "index_matches_catalog_and_model"),
}


def test_every_stage_asset_is_defined() -> None:
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys >= EXPECTED_ASSETS


def test_dataset_checks_are_defined_and_guarding() -> None:
    graph = defs.resolve_asset_graph()
    checks = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert checks >= EXPECTED_CHECKS
    specs = {
        (spec.asset_key.to_user_string(), spec.name): spec
        for asset in defs.assets
        if isinstance(asset, dg.AssetsDefinition)
        for spec in asset.check_specs
    }
    assert specs[("garment_items", "every_item_mapped")].blocking


def test_assets_carry_groups_and_descriptions() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if key.to_user_string() in EXPECTED_ASSETS:
            assert node.group_name in {"deepfashion2", "training", "catalog", "retrieval"}, key
            assert node.description, f"{key.to_user_string()} has no description"


def test_resources_point_at_the_embedded_default() -> None:
    resources = defs.resources
    assert {"paths", "mlflow"} <= set(resources)
    assert resources["mlflow"].tracking_uri.startswith("sqlite:///")
