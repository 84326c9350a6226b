"""The garment classifier: one tiny training run, tracked, registered, published, and deterministic."""

from __future__ import annotations

import json

import mlflow
import numpy as np

from fashion_pipeline.lib import tracking
from fashion_pipeline.lib.categories import CATEGORIES
from fashion_pipeline.lib.images import load_image
from fashion_pipeline_tests.fixtures_training import TrainedModels, materialization_metadata, run_id_of


def test_training_run_is_tracked_registered_and_promoted(trained_models: TrainedModels) -> None:
    result = trained_models.classifier_result
    assert result.success
    client = mlflow.MlflowClient(trained_models.tracking_uri)
    run = client.get_run(run_id_of(result, "garment_classifier"))

    assert run.info.status == "FINISHED"
    assert run.data.params["architecture"] == "small"
    assert run.data.params["input_size"] == "64"
    assert run.data.params["profile"] == "demo"
    assert len(run.data.params["data_version"]) == 16
    assert 0.0 <= run.data.metrics["accuracy"] <= 1.0
    assert {f"f1_{c}" for c in CATEGORIES} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1]
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/confusion_matrix.png", "plots/training_curves.png"}

    version = client.get_model_version_by_alias("garment-classifier", "champion")
    assert version.run_id == run.info.run_id
    assert {"candidate", "champion"} <= set(version.aliases)
    check = next(e for e in result.get_asset_check_evaluations() if e.asset_check_key.name == "champion_gate")
    assert check.passed

    metadata = json.loads((trained_models.paths.classifier_dir / "metadata.json").read_text())
    assert metadata["mlflow_run_id"] == run.info.run_id
    assert metadata["registered_model"] == "garment-classifier"
    assert metadata["registered_version"] == int(version.version)
    assert metadata["classes"] == list(CATEGORIES)
    assert metadata["input_size"] == 64
    assert metadata["embedding_dim"] == 576  # MobileNetV3Small's pooled features
    assert materialization_metadata(result, "garment_classifier")["registered_version"] == int(version.version)


def test_published_model_embeds_the_same_image_the_same_way(trained_models: TrainedModels) -> None:
    from fashion_pipeline.lib.classifier import GarmentEmbedder, load_embedder

    crops = sorted((trained_models.paths.crops_dir / "validation").glob("*/*.jpg"))[:3]
    images = [load_image(p) for p in crops]
    embedder = load_embedder(trained_models.paths.classifier_dir)
    assert embedder.classes == CATEGORIES
    assert embedder.version >= 1

    first = embedder.embed(images)
    assert first.shape == (3, 576)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)
    # Same image, another batch composition, a freshly loaded model: the same vector.
    np.testing.assert_allclose(embedder.embed(images[1:2]), first[1:2], atol=1e-5)
    np.testing.assert_allclose(load_embedder(trained_models.paths.classifier_dir).embed(images), first, atol=1e-5)

    # The registered champion in MLflow is the very model that was published.
    import mlflow.keras

    mlflow.set_tracking_uri(trained_models.tracking_uri)
    registered = mlflow.keras.load_model("models:/garment-classifier@champion")
    np.testing.assert_allclose(GarmentEmbedder(registered, embedder.metadata).embed(images), first, atol=1e-5)

    probabilities = embedder.classify(images)
    assert probabilities.shape == (3, len(CATEGORIES))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_training_stayed_offline_and_left_no_stray_run(trained_models: TrainedModels) -> None:
    assert trained_models.network_attempts == []
    assert trained_models.active_run_after is None
    assert trained_models.autolog_enabled_after == []
    # Exactly one run per model: ultralytics' own MLflow callback or autolog would have added more.
    names = sorted(r.info.run_name for r in trained_models.runs_after_training)
    assert names == ["garment_classifier", "garment_detector"]
    assert {r.info.status for r in trained_models.runs_after_training} == {"FINISHED"}


def test_gate_refuses_a_model_worse_than_the_champion(trained_models: TrainedModels) -> None:
    """A new version scoring below the champion stays candidate; champion and published files stay put."""
    from dataclasses import replace

    target = tracking.TrackingTarget(trained_models.tracking_uri)
    tracking.configure(target)
    client = mlflow.MlflowClient(trained_models.tracking_uri)
    champion = client.get_model_version_by_alias("garment-classifier", "champion")
    champion_accuracy = client.get_run(champion.run_id).data.metrics["accuracy"]
    published = (trained_models.paths.classifier_dir / "metadata.json").read_text()

    # A second version of the same logged model, reported as scoring lower than the champion.
    version = tracking.register(champion.source, "garment-classifier")
    outcome = tracking.TrainingOutcome(
        run_id=champion.run_id,
        run_url="",
        experiment_id="",
        registered_model="garment-classifier",
        version=version,
        gate_metric="accuracy",
        gate_value=champion_accuracy - 0.01,
        metrics={},
        model_dir=trained_models.paths.root / "unused",
        data_version="",
    )
    decision = tracking.gate_champion(outcome, threshold=0.0, publish_to=trained_models.paths.classifier_dir)

    assert not decision.passed
    assert "worse than champion" in decision.reason
    assert int(client.get_model_version_by_alias("garment-classifier", "champion").version) == int(champion.version)
    assert int(client.get_model_version_by_alias("garment-classifier", "candidate").version) == version
    assert (trained_models.paths.classifier_dir / "metadata.json").read_text() == published

    # The same score as the champion is "not worse": it passes and is published.
    decision = tracking.gate_champion(
        replace(outcome, gate_value=champion_accuracy, model_dir=trained_models.paths.classifier_dir),
        threshold=0.0,
        publish_to=trained_models.paths.root / "models" / "classifier_copy",
    )
    assert decision.passed
    assert int(client.get_model_version_by_alias("garment-classifier", "champion").version) == version
