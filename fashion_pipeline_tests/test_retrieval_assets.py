"""The retrieval assets materialized in-process on a tiny world, with fake models of the real interfaces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fashion_pipeline.defs.resources import DataPathsResource, MlflowResource
from fashion_pipeline.defs.retrieval import assets, evaluation, loading
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.retrieval import colour, embeddings, knn, retrieval_eval
from fashion_pipeline_tests.fixtures_retrieval import (
    OTHER_SITE,
    WORLD_SITES,
    HistogramEmbedder,
    RetrievalRuns,
    RetrievalWorld,
    demo_shop_catalog,
    materialize_retrieval,
)

RETRIEVAL_ASSETS = [assets.catalog_embeddings, assets.knn_index, evaluation.retrieval_evaluation]


@pytest.fixture
def fake_models(retrieval_world: RetrievalWorld, monkeypatch) -> dict:
    """Each asset run loads a fresh HistogramEmbedder (as load_embedder would) and the world's detector."""
    loaded: dict = {"embedders": [], "version": 1}

    def load_embedder(model_dir: Path) -> HistogramEmbedder:
        assert model_dir == retrieval_world.paths.classifier_dir
        embedder = HistogramEmbedder(version=loaded["version"])
        loaded["embedders"].append(embedder)
        return embedder

    monkeypatch.setattr(loading, "load_embedder", load_embedder)
    monkeypatch.setattr(loading, "load_detector", lambda model_dir: retrieval_world.detector())
    return loaded


def _materialize(world: RetrievalWorld, selection, tmp_path: Path, sites=WORLD_SITES) -> RetrievalRuns:
    return materialize_retrieval(
        selection,
        world.paths.root,
        sites,
        resources={"mlflow": MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")},
    )


def test_the_retrieval_stage_end_to_end(retrieval_world: RetrievalWorld, fake_models: dict, tmp_path: Path) -> None:
    runs = _materialize(retrieval_world, RETRIEVAL_ASSETS, tmp_path)

    assert runs.success
    passed = {"one_row_per_product", "dimension_matches_model", "finite_unit_vectors", "catalog_not_lost"}
    # First run: nothing embedded before, nothing to lose.
    assert {name: c.passed for name, c in runs.checks("demo_shop").items()} == dict.fromkeys(
        [*passed, "all_images_embedded"], True
    )
    other = runs.checks(OTHER_SITE)
    assert {name for name, c in other.items() if c.passed} == passed
    # The product whose image never downloaded: a warning, not a block.
    assert other["all_images_embedded"].severity == dg.AssetCheckSeverity.WARN
    assert f"{OTHER_SITE}:dead" in str(other["all_images_embedded"].metadata["failed"].value)
    assert {name: c.passed for name, c in runs.checks().items()} == {
        "index_matches_catalog_and_model": True,
        "retrieval_quality": True,  # c2s top-20 (detected) 5/6 >= 0.3, exact top-10 (detected) 0.8 >= 0.5
    }

    demo, shop = runs.metadata("catalog_embeddings", "demo_shop"), runs.metadata("catalog_embeddings", OTHER_SITE)
    assert (demo["rows"], demo["embedded_now"], demo["failed_images"]) == (5, 5, 0)
    assert (shop["rows"], shop["embedded_now"], shop["failed_images"]) == (4, 4, 1)
    assert shop["path"] == str(retrieval_world.paths.embeddings_dir / f"{OTHER_SITE}.parquet")

    # The index holds both sites' products.
    indexes = knn.load_indexes(retrieval_world.paths.index_dir)
    assert {c: len(i) for c, i in indexes.items()} == {"dress": 2, "shirt": 3, "short": 2, "skirt": 2}
    assert {i.manifest.model_version for i in indexes.values()} == {1}
    indexed = {str(p) for index in indexes.values() for p in index.product_ids}
    assert {p.split(":")[0] for p in indexed} == set(WORLD_SITES)
    assert indexed == set(retrieval_world.products["product_id"]) - {f"{OTHER_SITE}:dead"}
    assert f"| {OTHER_SITE} | 4 | 1 |" in runs.metadata("knn_index")["by_site"]

    evaluation = runs.metadata("retrieval_evaluation")
    assert evaluation["c2s_detected_top20"] == pytest.approx(5 / 6, abs=1e-4)
    saved = json.loads((retrieval_world.paths.evaluation_dir / "retrieval.json").read_text())
    assert saved["metrics"]["exact_detected_top10"] == pytest.approx(0.8)
    assert saved["metrics"]["c2s_gt_top1"] == 1.0

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("fashion-pipeline").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["exact_detected_top1"] == pytest.approx(0.8)
    assert run.info.run_id in evaluation["mlflow_run"]


def test_rematerializing_embeds_only_the_changed_product(
    retrieval_world: RetrievalWorld, fake_models: dict, tmp_path: Path
) -> None:
    _materialize(retrieval_world, [assets.catalog_embeddings], tmp_path)
    changed = retrieval_world.products.iloc[0]
    Image.new("RGB", (64, 96), (40, 200, 40)).save(changed["image_path"])

    runs = _materialize(retrieval_world, [assets.catalog_embeddings], tmp_path)

    metadata = runs.metadata("catalog_embeddings", "demo_shop")
    assert (metadata["embedded_now"], metadata["reused"]) == (1, 4)
    assert runs.metadata("catalog_embeddings", OTHER_SITE)["embedded_now"] == 0
    assert fake_models["embedders"][-2].embedded == 1
    table = embeddings.read_embeddings(retrieval_world.paths.embeddings_dir / f"{OTHER_SITE}.parquet")
    assert table.attrs["failed"] == {f"{OTHER_SITE}:dead": "no image file (download failed or no image URL)"}


def test_index_check_fails_and_keeps_the_served_index_when_the_champion_moved_on(
    retrieval_world: RetrievalWorld, fake_models: dict, tmp_path: Path
) -> None:
    _materialize(retrieval_world, [assets.catalog_embeddings, assets.knn_index], tmp_path)
    served_marker = retrieval_world.paths.index_dir / "shirt" / "served"
    served_marker.write_text("the index the app has loaded")
    metadata_file = retrieval_world.paths.classifier_dir / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata_file.write_text(json.dumps({**metadata, "registered_version": 2}))

    result = dg.materialize(
        [assets.knn_index],
        resources={"paths": DataPathsResource(data_dir=str(retrieval_world.paths.root), df2_root="")},
        raise_on_error=False,
    )

    check = {e.check_name: e for e in result.get_asset_check_evaluations()}["index_matches_catalog_and_model"]
    assert not check.passed
    assert "the champion is version 2: rematerialize catalog_embeddings" in check.description
    assert served_marker.is_file()  # the disagreeing index did not replace the served one
    assert knn.load_indexes(retrieval_world.paths.index_dir)["shirt"].manifest.model_version == 1


def test_evaluation_refuses_indexes_of_another_model_version(
    retrieval_world: RetrievalWorld, fake_models: dict, tmp_path: Path
) -> None:
    _materialize(retrieval_world, [assets.catalog_embeddings, assets.knn_index], tmp_path)
    fake_models["version"] = 2

    with pytest.raises(ValueError, match="rematerialize catalog_embeddings and knn_index"):
        _materialize(retrieval_world, [evaluation.retrieval_evaluation], tmp_path)


def test_real_classifier_embeds_the_catalog(retrieval_world: RetrievalWorld, tmp_path: Path) -> None:
    """The real `load_embedder` on a small untrained MobileNetV3Small (no weights download) at 32 px."""
    from fashion_pipeline.lib.training import classifier_model

    settings = classifier_model.settings_for("demo", input_size=32, pretrained="none")
    model = classifier_model.build_model(settings)
    model_dir = retrieval_world.paths.classifier_dir
    model.save(model_dir / classifier_model.MODEL_FILE)
    metadata = json.loads((model_dir / "metadata.json").read_text())
    metadata.update(input_size=32, embedding_dim=576, model_file=classifier_model.MODEL_FILE)
    (model_dir / "metadata.json").write_text(json.dumps(metadata))

    runs = _materialize(retrieval_world, [assets.catalog_embeddings, assets.knn_index], tmp_path)

    for site in WORLD_SITES:
        checks = runs.checks(site)
        assert all(
            checks[name].passed for name in ("one_row_per_product", "dimension_matches_model", "finite_unit_vectors")
        )
    assert runs.checks()["index_matches_catalog_and_model"].passed
    matrix = embeddings.embedding_matrix(
        embeddings.read_embeddings(retrieval_world.paths.embeddings_dir / "demo_shop.parquet")
    )
    assert matrix.shape == (5, 576 + colour.DIMENSION)  # the embedding and the colour descriptor (default layout)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


def test_trained_models_through_the_whole_stage(trained_models, tiny_dataset, tmp_path: Path) -> None:
    """The real champion embedder and ONNX detector (trained once per session by the training fixtures) over
    the tiny generated sample, with a demo-shop catalog of its shop items: the interfaces compose."""
    root = tmp_path / "data"
    paths = DataPaths(root=root)
    for source, target in (
        (trained_models.paths.classifier_dir, paths.classifier_dir),
        (trained_models.paths.detector_dir, paths.detector_dir),
    ):
        shutil.copytree(source, target)
    items = pd.read_parquet(tiny_dataset.garment_items)
    paths.garment_items.parent.mkdir(parents=True)
    items.to_parquet(paths.garment_items, index=False)
    products = demo_shop_catalog(items, paths)
    world = RetrievalWorld(paths=paths, items=items, products=products, colours={})

    runs = _materialize(world, RETRIEVAL_ASSETS, tmp_path, sites=["demo_shop"])

    assert all(check.passed for check in runs.checks("demo_shop").values())
    assert all(check.passed for name, check in runs.checks().items() if name != "retrieval_quality")
    saved = json.loads((paths.evaluation_dir / "retrieval.json").read_text())
    queries, gallery, _ = retrieval_eval.consumer_to_shop_split(items)
    assert saved["counts"]["c2s_queries"] == len(queries) > 0
    assert saved["counts"]["c2s_gallery_gt"] == len(gallery)
    assert saved["counts"]["exact_queries"] == len(retrieval_eval.demo_shop_targets(items, products)) > 0
    assert all(0.0 <= value <= 1.0 for value in saved["metrics"].values())
    assert len(saved["metrics"]) == 14  # c2s gt/detected top-1/5/10/20, exact gt/detected top-1/5/10
    assert (
        saved["params"]["embedding_model_version"]
        == json.loads((paths.classifier_dir / "metadata.json").read_text())["registered_version"]
    )
