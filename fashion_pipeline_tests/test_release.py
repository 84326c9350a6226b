"""Serving releases (issue 11 §1): built and checked as one piece, switched by one pointer, followed by a running
app between requests, rolled back in one command, pruned without losing the current or previous release.

Most tests serve the colour fakes of fixtures_serving over a tiny real catalog and real k-NN indexes; the
loader reads the release's classifier version the way the real one does, so a champion without its indexes
is refused exactly as `Recommender.from_paths` refuses it. One test runs the real loaders (ONNX, Keras).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import pytest

from fashion_pipeline import cli
from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.defs.retrieval import release as release_asset
from fashion_pipeline.lib.common.atomic import atomic_dir, write_json, write_parquet
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.retrieval import release, release_watch
from fashion_pipeline.lib.retrieval.knn import KnnIndexError, load_indexes
from fashion_pipeline.lib.retrieval.query import RecommenderError
from fashion_pipeline.lib.retrieval.recommender import Recommender
from fashion_pipeline.lib.retrieval.release_pointer import (
    current_release_id,
    prune,
    read_history,
    release_ids,
    rollback,
)
from fashion_pipeline.lib.retrieval.release_watch import ServedRelease, load_current
from fashion_pipeline_tests.fixtures_serving import (
    DETECTOR_VERSION,
    EMBEDDER_VERSION,
    REAL_MODEL_VERSION,
    TWO_GARMENTS,
    ColourDetector,
    ColourEmbedder,
    LiveServer,
    ServingCatalog,
    encode,
    garment_photo,
    write_catalog,
)
from serve.app import create_app

SHIRT_PHOTO = encode(garment_photo({"shirt": (40, 30, 140, 130)}), "PNG")


def _publish(folder: Path, version: int, weights: bytes) -> None:
    """A champion published as training publishes it: the folder swapped in whole, with its metadata."""
    with atomic_dir(folder) as tmp:
        (tmp / "model.bin").write_bytes(weights)
        write_json(
            {"registered_model": folder.name, "registered_version": version, "mlflow_run_id": f"run-{version}"},
            tmp / "metadata.json",
        )


def _rename_products(paths: DataPaths, suffix: str) -> None:
    """A new catalog (every name changed), so the next release answers differently from the last."""
    products = pd.read_parquet(paths.products)
    write_parquet(products.assign(name=products["name"] + suffix), paths.products)


def fake_load(paths: DataPaths, folder: Path, detector: ColourDetector | None = None) -> Recommender:
    """The release loaded with the colour fakes; the embedder carries the release's classifier version."""
    served = DataPaths(root=folder)
    embedder = ColourEmbedder()
    embedder.version = json.loads((served.classifier_dir / "metadata.json").read_text())["registered_version"]
    try:
        indexes = load_indexes(served.index_dir)
    except KnnIndexError as exc:
        raise RecommenderError(str(exc)) from exc
    return Recommender(detector or ColourDetector(), embedder, indexes, pd.read_parquet(served.products), paths=paths)


def _build(paths: DataPaths, **options) -> release.BuildOutcome:
    outcome = release.build_release(paths, load=fake_load, **options)
    assert outcome.status == "released", outcome.problems
    return outcome


def _shirts(url: str) -> list[str]:
    response = httpx.post(f"{url}/api/recommend", files={"image": ("look.png", SHIRT_PHOTO, "image/png")}, timeout=30)
    assert response.status_code == 200, response.text
    [garment] = response.json()["detections"]
    return [product["name"] for product in garment["recommendations"]]


def _health(url: str) -> dict:
    return httpx.get(f"{url}/healthz", timeout=30).json()


def _leftovers(paths: DataPaths) -> list[str]:
    return sorted(p.name for p in paths.releases_dir.iterdir() if p.name.startswith(".") and p.name != ".lock")


@pytest.fixture
def data_root(tmp_path, serving_shop) -> ServingCatalog:
    """The serving catalog and indexes (model version 3) with both champions published, in a fresh data root."""
    shop_url, shop_root = serving_shop
    catalog = write_catalog(tmp_path / "data", shop_url, shop_root)
    _publish(catalog.paths.classifier_dir, EMBEDDER_VERSION, b"classifier weights v3")
    _publish(catalog.paths.detector_dir, DETECTOR_VERSION, b"detector weights v2")
    return catalog


def test_a_new_champion_without_its_indexes_changes_nothing_served_and_a_restart_serves_the_release(data_root):
    paths = data_root.paths
    first = _build(paths)
    folder = paths.releases_dir / first.release_id
    manifest = release.read_manifest(folder)
    assert manifest["models"]["classifier"]["registered_version"] == EMBEDDER_VERSION
    assert manifest["models"]["classifier"]["mlflow_run_id"] == f"run-{EMBEDDER_VERSION}"
    assert manifest["index"]["by_category"] == {c: 6 for c in ("dress", "outwear", "shirt", "short", "skirt")}
    assert manifest["catalog"]["products"] == 30
    assert manifest["referenced"]["product_images"] == {"named": 30, "present_when_built": 30}
    weights = manifest["files"]["models/classifier/model.bin"]
    assert weights["sha256"] == hashlib.sha256(b"classifier weights v3").hexdigest()
    # Hard links: the release holds the published file itself, no second copy.
    assert (folder / "models/classifier/model.bin").stat().st_ino == (paths.classifier_dir / "model.bin").stat().st_ino
    assert manifest["stored"] == {"linked": len(manifest["files"]), "copied": 0}

    served = ServedRelease.start(paths, load=fake_load, check_interval_s=0)
    with LiveServer(create_app(served)) as server:
        before = _shirts(server.url)
        assert before[:2] == ["Shirt no. 0", "Shirt no. 1"]

        _publish(paths.classifier_dir, EMBEDDER_VERSION + 1, b"classifier weights v4")  # no new indexes

        assert _shirts(server.url) == before
        assert _health(server.url)["release"] == first.release_id
        assert _health(server.url)["newer_release"] is None
        assert (folder / "models/classifier/model.bin").read_bytes() == b"classifier weights v3"

        refused = release.build_release(paths, load=fake_load)
        assert refused.status == "refused"
        assert "built from garment-classifier version(s) [3], the champion is version 4" in refused.problems[0]
        assert current_release_id(paths) == first.release_id
        assert release_ids(paths) == [first.release_id] and _leftovers(paths) == []
        assert _shirts(server.url) == before

    # The data root alone no longer loads (model and indexes disagree); a restart serves the current release.
    with pytest.raises(RecommenderError, match="another garment-classifier version"):
        fake_load(paths, paths.root)
    restarted = ServedRelease.start(paths, load=fake_load)
    assert restarted.release_id == first.release_id
    with LiveServer(create_app(restarted)) as server:
        assert _shirts(server.url) == before


def test_a_release_that_fails_its_load_check_leaves_the_pointer_and_the_history(data_root):
    paths = data_root.paths
    first = _build(paths)
    history = read_history(paths)
    # An index whose files disagree with its manifest (written anew: the release's link keeps the old file).
    manifest_file = paths.index_dir / "skirt" / "manifest.json"
    broken = json.loads(manifest_file.read_text())
    write_json({**broken, "count": broken["count"] + 1}, manifest_file)

    refused = release.build_release(paths, load=fake_load)

    assert refused.status == "refused" and refused.served == first.release_id
    assert refused.problems[0].startswith("the app cannot load it: ") and "manifest.json" in refused.problems[0]
    assert current_release_id(paths) == first.release_id
    assert read_history(paths) == history
    assert release_ids(paths) == [first.release_id] and _leftovers(paths) == []


def test_the_serving_release_asset_switches_then_keeps_then_refuses(data_root, monkeypatch):
    paths = data_root.paths
    monkeypatch.setattr(release_asset, "load_release", fake_load)

    def materialize(succeeds: bool = True) -> tuple[dict, dict[str, bool]]:
        result = dg.materialize(
            [release_asset.serving_release],
            resources={"paths": DataPathsResource(data_dir=str(paths.root), df2_root="")},
            raise_on_error=False,
        )
        assert result.success is succeeds  # a failed blocking check fails the run
        [event] = result.get_asset_materialization_events()
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        return {k: v.value for k, v in event.materialization.metadata.items()}, checks

    released, checks = materialize()
    assert released["outcome"] == "released" and released["release"] == current_release_id(paths)
    assert (released["classifier_version"], released["detector_version"], released["products"]) == (3, 2, 30)
    assert checks == {"release_loads_and_agrees": True, "product_images_present": True}

    unchanged, checks = materialize()
    assert unchanged["outcome"] == "unchanged" and unchanged["release"] == released["release"]
    assert checks["release_loads_and_agrees"] and release_ids(paths) == [released["release"]]

    _publish(paths.classifier_dir, EMBEDDER_VERSION + 1, b"classifier weights v4")
    refused, checks = materialize(succeeds=False)
    assert refused["outcome"] == "refused" and refused["refused_release"] != "none"
    assert refused["release"] == released["release"] == current_release_id(paths)
    assert refused["classifier_version"] == EMBEDDER_VERSION  # the metadata describes what is served
    assert checks["release_loads_and_agrees"] is False


def test_rollback_switches_back_and_a_running_app_follows_between_requests(data_root, monkeypatch, capsys):
    paths = data_root.paths
    first = _build(paths)
    _rename_products(paths, " (new)")
    second = _build(paths)
    served = ServedRelease.start(paths, load=fake_load, check_interval_s=0)
    monkeypatch.setenv("FASHION_DATA_DIR", str(paths.root))

    with LiveServer(create_app(served)) as server:
        assert _shirts(server.url)[0] == "Shirt no. 0 (new)"
        assert _health(server.url)["release"] == second.release_id

        assert cli.main(["release", "rollback"]) == 0
        assert f"serving release {first.release_id} (was {second.release_id})" in capsys.readouterr().out
        _health(server.url)  # a request between: the pointer moved, the first release loads off the request
        served.wait_for_load(timeout=30)

        assert _shirts(server.url)[0] == "Shirt no. 0"
        assert (_health(server.url)["release"], _health(server.url)["newer_release"]) == (first.release_id, None)

        assert cli.main(["release", "list"]) == 0
        listed = capsys.readouterr().out.splitlines()
        assert listed[0].startswith("current ") and first.release_id in listed[0]
        assert listed[1].startswith("   ") and second.release_id in listed[1]  # rolled back from: not "previous"
        # Nothing before the first release: a second plain rollback says so and moves nothing.
        assert cli.main(["release", "rollback"]) == 1
        assert "no release before" in capsys.readouterr().err
        assert cli.main(["release", "rollback", "--to", second.release_id]) == 0
        _health(server.url)
        served.wait_for_load(timeout=30)
        assert _shirts(server.url)[0] == "Shirt no. 0 (new)"


def test_a_request_keeps_the_release_it_started_with_while_a_new_one_is_swapped_in(data_root):
    paths = data_root.paths
    first = _build(paths)
    entered, proceed = threading.Event(), threading.Event()

    class HeldDetector(ColourDetector):
        def detect(self, image, conf=0.25):
            entered.set()
            assert proceed.wait(30)
            return super().detect(image, conf)

    def load(paths: DataPaths, folder: Path) -> Recommender:
        return fake_load(paths, folder, HeldDetector() if folder.name == first.release_id else None)

    served = ServedRelease.start(paths, load=load, check_interval_s=0)
    answers: list[list[str]] = []
    with LiveServer(create_app(served)) as server:
        asking = threading.Thread(target=lambda: answers.append(_shirts(server.url)))
        asking.start()
        assert entered.wait(30)  # the request is inside the first release's detector
        _rename_products(paths, " (new)")
        second = _build(paths)
        _health(server.url)
        served.wait_for_load(timeout=30)
        assert _health(server.url)["release"] == second.release_id  # swapped in mid-request
        proceed.set()
        asking.join(30)

        assert answers[0][0] == "Shirt no. 0"  # answered wholly by the release it started with
        assert _shirts(server.url)[0] == "Shirt no. 0 (new)"


def test_healthz_says_a_newer_release_is_loading_then_that_it_failed(data_root):
    paths = data_root.paths
    first = _build(paths)
    entered, proceed = threading.Event(), threading.Event()

    def load(paths: DataPaths, folder: Path) -> Recommender:
        if folder.name != first.release_id:
            entered.set()
            assert proceed.wait(30)
        return fake_load(paths, folder)

    served = ServedRelease.start(paths, load=load, check_interval_s=0)
    _rename_products(paths, " (new)")
    second = _build(paths)
    # Damaged after it was switched in (a new file in place of the linked one: the data root keeps its own).
    damaged = paths.releases_dir / second.release_id / "index" / "shirt" / "manifest.json"
    manifest = json.loads(damaged.read_text())
    damaged.unlink()
    damaged.write_text(json.dumps({**manifest, "count": 99}))

    with LiveServer(create_app(served)) as server:
        _health(server.url)
        assert entered.wait(30)
        health = _health(server.url)
        assert health["release"] == first.release_id
        assert health["newer_release"] == {"release": second.release_id, "state": "loading", "error": None}
        assert _shirts(server.url)[0] == "Shirt no. 0"

        proceed.set()
        served.wait_for_load(timeout=30)
        health = _health(server.url)
        assert health["release"] == first.release_id
        assert health["newer_release"]["release"] == second.release_id
        assert health["newer_release"]["state"] == "failed"
        assert "manifest.json" in health["newer_release"]["error"] and "99" in health["newer_release"]["error"]
        assert _shirts(server.url)[0] == "Shirt no. 0"

        # Back to the release being served: nothing waits any more.
        assert rollback(paths) == (second.release_id, first.release_id)
        assert _health(server.url)["newer_release"] is None


def test_pruning_keeps_the_newest_and_always_the_current_and_previous_release(data_root):
    paths = data_root.paths
    ids = []
    for n in range(4):
        if n:
            _rename_products(paths, f" v{n}")
        ids.append(_build(paths, keep=3).release_id)
    assert ids == sorted(ids)
    assert release_ids(paths) == ids[1:]  # the fourth release pruned the first

    assert rollback(paths, to=ids[1]) == (ids[3], ids[1])
    # keep=1 keeps the newest (ids[3], also the previous one) and the current one, old as it is.
    assert prune(paths, keep=1) == [ids[2]]
    assert release_ids(paths) == [ids[1], ids[3]]
    assert rollback(paths) == (ids[1], ids[3])
    assert current_release_id(paths) == ids[3]


def test_without_a_release_the_app_serves_the_data_root_and_follows_the_first_release(data_root, caplog):
    paths = data_root.paths
    served = ServedRelease.start(
        paths, load=fake_load, load_without_release=lambda p: fake_load(p, p.root), check_interval_s=0
    )
    assert served.release_id is None
    assert "no serving release" in caplog.text and "materialize serving_release" in caplog.text
    with LiveServer(create_app(served)) as server:
        assert _health(server.url)["release"] is None
        first = _build(paths)
        _health(server.url)
        served.wait_for_load(timeout=30)
        assert _health(server.url)["release"] == first.release_id


def test_the_real_loaders_restart_from_the_current_release_after_a_new_champion(tiny_real_catalog, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_real_catalog.paths.root, root)
    paths = DataPaths(root=root)
    built = release.build_release(paths, load=release_watch.load_release)
    assert built.status == "released", built.problems
    metadata_file = paths.classifier_dir / "metadata.json"
    write_json({**json.loads(metadata_file.read_text()), "registered_version": 8}, metadata_file)
    with pytest.raises(RecommenderError, match="champion \\(version 8\\)"):
        Recommender.from_paths(paths)

    recommender, release_id = load_current(paths)

    assert release_id == built.release_id
    assert recommender.health()["embedder_version"] == REAL_MODEL_VERSION
    assert recommender.paths == paths  # product images are served from the data root
    query = recommender.make_query(category="skirt", k=2)
    answer = recommender.recommend_bytes(encode(garment_photo(TWO_GARMENTS)), query)
    assert len(answer.detections[0].recommendations) == 2
    assert release.build_release(paths, load=release_watch.load_release).status == "refused"
