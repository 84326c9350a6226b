"""The served index never shrinks by accident: moved images fail a blocking check and the served index stays,
and the index asset's metadata then describes what is served, not the discarded build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from fashion_pipeline.defs.retrieval import assets
from fashion_pipeline.lib.retrieval import knn, shrink_guard
from fashion_pipeline_tests.fixtures_retrieval import RetrievalRuns, RetrievalWorld, materialize_retrieval
from fashion_pipeline_tests.test_retrieval_assets import fake_models  # noqa: F401  (a fixture)


def _run(world: RetrievalWorld, selection, run_config: dict | None = None) -> RetrievalRuns:
    return materialize_retrieval(selection, world.paths.root, run_config=run_config, raise_on_error=False)


def test_moved_images_never_empty_the_served_index(retrieval_world: RetrievalWorld, fake_models, tmp_path: Path):  # noqa: F811
    paths = retrieval_world.paths
    assert _run(retrieval_world, [assets.catalog_embeddings, assets.knn_index]).success
    served = sorted(shrink_guard.served_product_ids(paths.index_dir))
    assert len(served) == 9  # 10 products, one without an image

    shutil.move(paths.catalog_images_dir, tmp_path / "moved-images")
    runs = _run(retrieval_world, [assets.catalog_embeddings])
    check = runs.checks("demo_shop")["catalog_not_lost"]
    assert not check.passed
    assert check.description.startswith(
        "5 of the 5 products in the last embeddings of demo_shop (100%, limit 5%) are still"
    )
    assert not runs.checks("darveys")["catalog_not_lost"].passed
    assert sorted(shrink_guard.served_product_ids(paths.index_dir)) == served

    # knn_index over the emptied embeddings (the automation follows the partitions' updates): refused, the
    # index kept.
    runs = _run(retrieval_world, [assets.knn_index])
    check = runs.checks()["index_matches_catalog_and_model"]
    assert not check.passed
    assert "9 of the 9 products in the served index (100%, limit 5%)" in check.description
    assert sorted(shrink_guard.served_product_ids(paths.index_dir)) == served
    metadata = runs.metadata("knn_index")
    assert metadata["products"] == 9
    assert metadata["served"] == "the previous indexes (the new build was discarded)"
    assert metadata["discarded_build_products"] == 0

    # The share is a setting: an operator who means to drop those products can allow it.
    runs = _run(retrieval_world, [assets.knn_index], {"ops": {"knn_index": {"config": {"max_lost_share": 1.0}}}})
    assert runs.checks()["index_matches_catalog_and_model"].passed
    assert shrink_guard.served_product_ids(paths.index_dir) == []


def test_products_the_catalog_dropped_are_not_counted_as_lost() -> None:
    assert shrink_guard.shrink_problem(["a", "b", "c"], ["a"], ["a"], 0.05, "served index") is None
    assert shrink_guard.lost_products(["a", "b", "c"], ["a"], ["a", "b"]) == ["b"]
    assert shrink_guard.shrink_problem([], [], ["a"], 0.05, "served index") is None  # nothing served yet
    problem = shrink_guard.shrink_problem([f"p{i}" for i in range(100)], [f"p{i}" for i in range(94)],
                                          [f"p{i}" for i in range(100)], 0.05, "served index")  # fmt: skip
    assert problem.startswith("6 of the 100 products in the served index (6%, limit 5%)")


def test_a_kept_index_reports_the_served_model_version(retrieval_world: RetrievalWorld, fake_models) -> None:  # noqa: F811
    """The champion moved on: the discarded build is not described as served (it said version 2 before)."""
    assert _run(retrieval_world, [assets.catalog_embeddings, assets.knn_index]).success
    metadata_file = retrieval_world.paths.classifier_dir / "metadata.json"
    metadata_file.write_text(json.dumps({**json.loads(metadata_file.read_text()), "registered_version": 2}))
    runs = _run(retrieval_world, [assets.knn_index])
    assert not runs.checks()["index_matches_catalog_and_model"].passed
    metadata = runs.metadata("knn_index")
    assert metadata["model_version"] == 1
    assert metadata["discarded_build_products"] == 9
    by_category = pd.DataFrame([m.to_json() for m in shrink_guard.served_manifests(retrieval_world.paths.index_dir)])
    assert metadata["products"] == int(by_category["count"].sum()) == 9
    assert set(by_category["model_version"]) == {1}
    assert knn.load_indexes(retrieval_world.paths.index_dir)["shirt"].manifest.model_version == 1
