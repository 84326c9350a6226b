"""The default path end to end: `Recommender.from_paths` with the real loaders, ONNX Runtime and Keras.

The models are tiny and untrained (see fixtures_serving.build_tiny_real_models): they find no garment, so
these tests check the plumbing (loading, decoding, the version check, the answer), not the quality.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from fashion_pipeline import cli
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.retrieval.query import NO_GARMENT_MESSAGE, RecommenderError
from fashion_pipeline.lib.retrieval.recommender import Recommender
from fashion_pipeline_tests.fixtures_serving import REAL_MODEL_VERSION, TWO_GARMENTS, LiveServer, encode, garment_photo
from serve.app import create_app


@pytest.fixture(scope="module")
def serving_real_server(tiny_real_catalog):
    with LiveServer(create_app(Recommender.from_paths(tiny_real_catalog.paths))) as server:
        yield server


def test_from_paths_loads_the_champions_indexes_and_catalog(serving_real_server):
    health = httpx.get(f"{serving_real_server.url}/healthz").json()
    assert (health["detector_version"], health["embedder_version"]) == (4, REAL_MODEL_VERSION)
    assert health["products"] == 30
    assert set(health["indexes"]) == {"shirt", "outwear", "short", "skirt", "dress"}


def test_every_real_seed_photo_goes_through_the_real_models(serving_real_server, real_data):
    for photo in sorted((real_data / "seed-demo-photos").iterdir()):
        response = httpx.post(
            f"{serving_real_server.url}/api/recommend",
            files={"image": (photo.name, photo.read_bytes(), "application/octet-stream")},
            data={"category": "dress", "k": "3"},
            timeout=60,
        )
        assert response.status_code == 200, f"{photo.name}: {response.text}"
        for garment in response.json()["detections"]:
            assert garment["category"] == "dress"
            assert len(garment["recommendations"]) == 3
            assert all(p["product_id"].split(":")[1].startswith("dress-") for p in garment["recommendations"])


def test_untrained_detector_finds_nothing_and_says_so(serving_real_server):
    response = httpx.post(
        f"{serving_real_server.url}/api/recommend",
        files={"image": ("look.jpg", encode(garment_photo(TWO_GARMENTS)), "image/jpeg")},
    )
    assert response.status_code == 200
    assert response.json()["detections"] == [] and response.json()["message"] == NO_GARMENT_MESSAGE


def test_cli_with_the_default_path_answers_as_the_api(
    serving_real_server, tiny_real_catalog, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("FASHION_DATA_DIR", str(tiny_real_catalog.paths.root))
    photo = tmp_path / "look.webp"
    photo.write_bytes(encode(garment_photo(TWO_GARMENTS), "WEBP"))

    assert cli.main(["recommend", str(photo), "--category", "skirt", "--k", "2", "--json"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    response = httpx.post(
        f"{serving_real_server.url}/api/recommend",
        files={"image": ("look.webp", photo.read_bytes(), "image/webp")},
        data={"category": "skirt", "k": "2"},
    )
    assert from_cli == response.json()
    assert len(from_cli["detections"][0]["recommendations"]) == 2


def test_a_new_champion_without_new_indexes_refuses_to_start(tiny_real_catalog, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_real_catalog.paths.root, root)
    paths = DataPaths(root=root)
    metadata = json.loads((paths.classifier_dir / "metadata.json").read_text())
    (paths.classifier_dir / "metadata.json").write_text(json.dumps({**metadata, "registered_version": 8}))

    with pytest.raises(RecommenderError) as refused:
        Recommender.from_paths(paths)
    message = str(refused.value)
    assert f"(version {REAL_MODEL_VERSION})" in message and "champion (version 8)" in message
    assert "rematerialize the catalog_embeddings asset, then knn_index" in message


def test_an_index_that_disagrees_with_its_manifest_refuses_to_start(tiny_real_catalog, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_real_catalog.paths.root, root)
    manifest_path = DataPaths(root=root).index_dir / "skirt" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "count": manifest["count"] + 1}))

    with pytest.raises(RecommenderError, match="rematerialize knn_index"):
        Recommender.from_paths(DataPaths(root=root))


def test_concurrent_requests_through_the_real_models_agree(serving_real_server):
    """Two inference threads share one ONNX session and one Keras model: answers must not mix."""
    photos = [
        encode(garment_photo({}, size=(200 + 40 * i, 160), background=(40 * i, 90, 160)), "PNG") for i in range(4)
    ]

    def ask(photo: bytes) -> dict:
        response = httpx.post(
            f"{serving_real_server.url}/api/recommend",
            files={"image": ("p.png", photo, "image/png")},
            data={"category": "shirt", "k": "6"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return response.json()

    expected = [ask(photo) for photo in photos]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, photos * 4))
    assert answers == expected * 4
