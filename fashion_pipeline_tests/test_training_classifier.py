"""The garment classifier: one tiny training run, tracked, registered, published, and deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np

from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.common.images import load_image
from fashion_pipeline.lib.training import tracking
from fashion_pipeline_tests.fixtures_training import TrainedModels, materialization_metadata, run_id_of


def test_training_run_is_tracked_registered_and_promoted(trained_models: TrainedModels) -> None:
    result = trained_models.classifier_result
    assert result.success
    client = mlflow.MlflowClient(trained_models.tracking_uri, registry_uri=trained_models.tracking_uri)
    run = client.get_run(run_id_of(result, "garment_classifier"))

    assert run.info.status == "FINISHED"
    assert run.data.params["architecture"] == "mobilenet_v3_small"
    assert run.data.params["input_size"] == "64"
    assert run.data.params["profile"] == "demo"
    assert len(run.data.params["data_version"]) == 16
    assert 0.0 <= run.data.metrics["accuracy"] <= 1.0
    assert {f"f1_{c}" for c in CATEGORIES} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1]
    # `accuracy` is the validation accuracy of the kept model: what the asset reports and the gate compares.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")] == [0]
    assert materialization_metadata(result, "garment_classifier")["accuracy"] == round(run.data.metrics["accuracy"], 4)
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
    from fashion_pipeline.lib.training.embedder import GarmentEmbedder, load_embedder

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
    mlflow.set_registry_uri(trained_models.tracking_uri)
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


def test_gate_refuses_a_model_worse_than_the_champion(trained_models: TrainedModels, tmp_path: Path) -> None:
    """A version scoring below the champion stays candidate; the champion and its published files stay.

    Versions of the trained model are registered under a name of their own, so the session's registry
    state that other tests read is left alone.
    """
    target = tracking.TrackingTarget(trained_models.tracking_uri)
    tracking.configure(target)
    client = mlflow.MlflowClient(trained_models.tracking_uri, registry_uri=trained_models.tracking_uri)
    trained = client.get_model_version_by_alias("garment-classifier", "champion")
    accuracy = client.get_run(trained.run_id).data.metrics["accuracy"]  # the champion's score, read by the gate
    name, published = "gate-test", tmp_path / "published"

    def outcome(score: float) -> tracking.TrainingOutcome:
        return tracking.TrainingOutcome(
            run_id=trained.run_id,
            run_url="",
            experiment_id="",
            registered_model=name,
            version=tracking.register(trained.source, name),
            gate_metric="accuracy",
            gate_value=score,
            metrics={},
            model_dir=trained_models.paths.classifier_dir,
            data_version="v",
        )

    first = tracking.gate_champion(outcome(accuracy), threshold=0.0, publish_to=published)
    assert first.passed and first.champion_before is None
    assert json.loads((published / "metadata.json").read_text())["registered_version"] == 1

    worse = tracking.gate_champion(outcome(accuracy - 0.01), threshold=0.0, publish_to=published)
    assert not worse.passed
    assert "worse than champion v1" in worse.reason
    assert int(client.get_model_version_by_alias(name, "champion").version) == 1
    assert int(client.get_model_version_by_alias(name, "candidate").version) == 2
    assert json.loads((published / "metadata.json").read_text())["registered_version"] == 1
    assert client.get_model_version(name, "2").tags["champion_gate"] == worse.reason

    # The same score as the champion is "not worse": it passes and is published.
    same = tracking.gate_champion(outcome(accuracy), threshold=0.0, publish_to=published)
    assert same.passed
    assert int(client.get_model_version_by_alias(name, "champion").version) == 3
    assert json.loads((published / "metadata.json").read_text())["registered_version"] == 3


def test_gate_compares_only_scores_on_the_same_data(trained_models: TrainedModels, tmp_path: Path) -> None:
    """A champion validated on other data (the generated sample) does not block a model validated on real
    photos that scores lower: the threshold decides; on the same data the champion's score still does."""
    target = tracking.TrackingTarget(trained_models.tracking_uri)
    tracking.configure(target)
    client = mlflow.MlflowClient(trained_models.tracking_uri, registry_uri=trained_models.tracking_uri)
    trained = client.get_model_version_by_alias("garment-classifier", "champion")
    name, published = "gate-data-test", tmp_path / "published"

    def outcome(score: float, data: str) -> tracking.TrainingOutcome:
        return tracking.TrainingOutcome(
            run_id=trained.run_id,
            run_url="",
            experiment_id="",
            registered_model=name,
            version=tracking.register(trained.source, name, {"data_version": data}),
            gate_metric="accuracy",
            gate_value=score,
            metrics={},
            model_dir=trained_models.paths.classifier_dir,
            data_version=data,
        )

    accuracy = client.get_run(trained.run_id).data.metrics["accuracy"]  # what the gate reads for any champion
    assert tracking.gate_champion(outcome(accuracy, "sample"), 0.0, published).passed
    other_data = tracking.gate_champion(outcome(accuracy - 0.01, "real-photos"), 0.0, published, {"profile": "real"})
    assert other_data.passed
    assert "validated on other data (sample), so not compared" in other_data.reason
    assert json.loads((published / "metadata.json").read_text())["profile"] == "real"
    same_data = tracking.gate_champion(outcome(accuracy - 0.02, "real-photos"), 0.0, published)
    assert not same_data.passed and "worse than champion v2" in same_data.reason


def test_batches_keep_one_shape_and_evaluation_padding_weighs_nothing(trained_models: TrainedModels) -> None:
    """Every batch has the same shape (a new one retraces TensorFlow's step): training pads with repeats,
    evaluation with weight-0 copies; the streamed path (for crops past memory) yields the same."""
    from fashion_pipeline.lib.common import frameworks
    from fashion_pipeline.lib.training.classifier_data import pad_to_batches, streamed_batches

    order, weights = pad_to_batches(10, 4, np.random.default_rng(0))
    assert len(order) == 12 and set(order[:10]) == set(range(10)) and weights.tolist() == [1.0] * 12
    order, weights = pad_to_batches(10, 4)
    assert order[:10].tolist() == list(range(10)) and weights.tolist() == [1.0] * 10 + [0.0, 0.0]

    crops = sorted(str(p) for p in (trained_models.paths.crops_dir / "validation").glob("*/*.jpg"))[:5]
    labels = np.arange(5) % len(CATEGORIES)
    batches = streamed_batches(frameworks.keras(), crops, labels, 32, "pad", 2, train=False, seed=0)
    assert len(batches) == 3
    images, batch_labels, batch_weights = batches[2]
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.float32
    assert batch_labels.tolist() == [labels[4], labels[0]] and batch_weights.tolist() == [1.0, 0.0]
