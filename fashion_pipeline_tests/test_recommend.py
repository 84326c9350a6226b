"""The recommender (lib/retrieval) and `fashion-pipeline recommend`, on fake models over a real index."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from fashion_pipeline import cli
from fashion_pipeline.lib.common.images import ImageError
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.retrieval.knn import build_index, load_indexes
from fashion_pipeline.lib.retrieval.query import MAX_K, NO_GARMENT_MESSAGE, QueryError, RecommenderError
from fashion_pipeline.lib.retrieval.recommender import Recommender
from fashion_pipeline_tests.fixtures_serving import (
    EMBEDDER_VERSION,
    TWO_GARMENTS,
    ColourDetector,
    ColourEmbedder,
    encode,
    garment_photo,
    make_recommender,
)


def test_each_garment_gets_the_products_of_its_own_category_best_first(serving_recommender):
    answer = serving_recommender.recommend(garment_photo(TWO_GARMENTS), serving_recommender.make_query(k=3)).to_dict()

    found = {d["category"]: d for d in answer["detections"]}
    assert set(found) == {"shirt", "skirt"}
    assert found["shirt"]["box"] == [40.0, 30.0, 140.0, 130.0]
    shirt_products = found["shirt"]["recommendations"]
    assert shirt_products[0]["product_id"] == "demo_shop:shirt-0"  # the patch's exact colour
    assert all(p["product_id"].split(":")[1].startswith("shirt-") for p in shirt_products)
    assert found["skirt"]["recommendations"][0]["product_id"] == "demo_shop:skirt-0"
    scores = [p["score"] for p in shirt_products]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3
    assert answer["message"] is None
    assert answer["image"] == {"width": 320, "height": 240}
    assert set(shirt_products[0]) >= {"product_id", "name", "price", "currency", "url", "image_url", "score"}


def test_crops_of_one_photo_are_embedded_in_one_batch(serving_catalog):
    recommender = make_recommender(serving_catalog)
    recommender.recommend(garment_photo(TWO_GARMENTS))
    assert recommender.embedder.backbone.batch_sizes == [2]  # the champion behind the layout embedder


def test_filters_keep_only_products_within_price_and_site(serving_recommender):
    query = serving_recommender.make_query(k=10, max_price="35", site="other_shop")
    answer = serving_recommender.recommend(garment_photo(TWO_GARMENTS), query)

    for garment in answer.detections:
        assert garment.recommendations, garment.category
        for product in garment.recommendations:
            assert product.site == "other_shop"
            assert product.price_usd <= 35
    # other_shop prices in EUR: 30 EUR is 32.40 USD (kept), 50 EUR is 54 USD (dropped)
    shirt = next(g for g in answer.detections if g.category == "shirt")
    assert [(p.price, p.currency, p.price_usd) for p in shirt.recommendations] == [(30.0, "EUR", 32.4)]


def test_filters_that_exclude_everything_answer_with_a_message(serving_recommender):
    answer = serving_recommender.recommend(garment_photo(TWO_GARMENTS), serving_recommender.make_query(max_price=1))
    assert [g.recommendations for g in answer.detections] == [[], []]
    assert "filters" in answer.message


def test_category_override_searches_the_chosen_category(serving_recommender):
    answer = serving_recommender.recommend(
        garment_photo({"shirt": TWO_GARMENTS["shirt"]}), serving_recommender.make_query(category="dress")
    )
    [garment] = answer.detections
    assert garment.category == "dress"
    assert all(p.product_id.split(":")[1].startswith("dress-") for p in garment.recommendations)


def test_a_photo_without_garment_gives_an_empty_list_and_a_message(serving_recommender):
    answer = serving_recommender.recommend(garment_photo({}))
    assert answer.detections == []
    assert answer.message == NO_GARMENT_MESSAGE


def test_a_chosen_category_with_no_garment_found_searches_the_whole_photo(serving_recommender):
    answer = serving_recommender.recommend(
        garment_photo({}, size=(100, 80)), serving_recommender.make_query(category="skirt", k=2)
    )
    [garment] = answer.detections
    assert (garment.category, garment.box, garment.score) == ("skirt", [0.0, 0.0, 100.0, 80.0], 0.0)
    assert len(garment.recommendations) == 2
    assert "whole photo" in answer.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"k": 0}, "k must be from 1"),
        ({"k": MAX_K + 1}, "k must be from 1"),
        ({"k": "ten"}, "whole number"),
        ({"category": "hat"}, "unknown category 'hat': choose one of shirt, outwear, short, skirt, dress"),
        ({"site": "nowhere"}, "unknown site 'nowhere': choose one of demo_shop, other_shop"),
        ({"max_price": "-5"}, "non-negative"),
        ({"max_price": "nan"}, "non-negative"),
        ({"max_price": "cheap"}, "number of US dollars"),
    ],
)
def test_bad_query_values_are_refused_with_what_is_allowed(serving_recommender, raw, expected):
    with pytest.raises(QueryError, match=expected):
        serving_recommender.make_query(**raw)


def test_query_defaults(serving_recommender):
    query = serving_recommender.make_query(k="", category="", max_price="", site="")
    assert (query.k, query.category, query.max_price_usd, query.site) == (10, None, None, None)


def test_unreadable_bytes_raise_image_error(serving_recommender):
    with pytest.raises(ImageError):
        serving_recommender.recommend_bytes(b"definitely not an image")


def test_refuses_an_index_built_by_another_model_version(serving_catalog, tmp_path):
    paths = DataPaths(root=tmp_path)
    vectors = np.eye(3, ColourEmbedder.embedding_dim, dtype=np.float32)
    build_index(vectors, ["a", "b", "c"], paths.index_dir / "shirt", category="shirt", model_version=1)
    indexes = load_indexes(paths.index_dir)

    with pytest.raises(RecommenderError, match=r"shirt \(version 1\).*version 3.*catalog_embeddings.*knn_index"):
        Recommender(ColourDetector(), ColourEmbedder(), indexes, serving_catalog.products)
    # Embeddings already redone with the loaded model: only the index is stale.
    with pytest.raises(RecommenderError, match="rematerialize the knn_index asset"):
        Recommender(ColourDetector(), ColourEmbedder(), indexes, serving_catalog.products, embeddings_versions={3})


def test_refuses_to_start_without_indexes(serving_catalog):
    with pytest.raises(RecommenderError, match="materialize the catalog_embeddings and knn_index"):
        Recommender(ColourDetector(), ColourEmbedder(), {}, serving_catalog.products)


def test_products_gone_from_the_catalog_are_never_recommended(serving_catalog):
    products = serving_catalog.products
    recommender = Recommender(
        ColourDetector(),
        ColourEmbedder(),
        load_indexes(serving_catalog.paths.index_dir),
        products[products["product_id"] != "demo_shop:shirt-0"],
        paths=serving_catalog.paths,
    )
    answer = recommender.recommend(garment_photo({"shirt": TWO_GARMENTS["shirt"]}), recommender.make_query(k=100))
    ids = [p.product_id for p in answer.detections[0].recommendations]
    assert "demo_shop:shirt-0" not in ids and len(ids) == 5


def test_product_images_are_served_only_from_inside_the_data_root(serving_catalog, tmp_path):
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    products = serving_catalog.products.copy()
    products.loc[0, "image_path"] = str(outside)
    products.loc[1, "image_path"] = "../../../../../../etc/passwd"
    products.loc[2, "image_path"] = None
    recommender = Recommender(
        ColourDetector(),
        ColourEmbedder(),
        load_indexes(serving_catalog.paths.index_dir),
        products,
        paths=serving_catalog.paths,
    )
    ids = products["product_id"].tolist()
    assert [recommender.product_image_path(i) for i in ids[:3]] == [None, None, None]
    assert (
        recommender.product_image_path(ids[3])
        == serving_catalog.paths.catalog_images_dir / products.loc[3, "image_path"]
    )
    assert recommender.product_image_path("no such product") is None


def test_from_paths_names_the_missing_asset(tmp_path):
    with pytest.raises(RecommenderError, match="garment_detector"):
        Recommender.from_paths(DataPaths(root=tmp_path))


def test_health_reports_versions_and_counts(serving_recommender):
    health = serving_recommender.health()
    assert (health["detector_version"], health["embedder_version"]) == (2, EMBEDDER_VERSION)
    assert health["products"] == 30
    assert health["indexes"] == {"shirt": 6, "outwear": 6, "short": 6, "skirt": 6, "dress": 6}


# --- the CLI --------------------------------------------------------------------------------------------
@pytest.fixture
def cli_uses(monkeypatch):
    """Make `Recommender.from_paths` (what the CLI loads) return the given recommender."""

    def use(recommender: Recommender) -> None:
        monkeypatch.setattr(Recommender, "from_paths", classmethod(lambda cls, paths: recommender))

    return use


def test_cli_json_is_the_api_answer(serving_server, cli_uses, tmp_path, capsys):
    photo = tmp_path / "look.jpg"
    photo.write_bytes(encode(garment_photo(TWO_GARMENTS), "JPEG", quality=90))
    cli_uses(serving_server.recommender)

    assert cli.main(["recommend", str(photo), "--k", "4", "--site", "demo_shop", "--json"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    response = httpx.post(
        f"{serving_server.url}/api/recommend",
        files={"image": ("look.jpg", photo.read_bytes(), "image/jpeg")},
        data={"k": "4", "site": "demo_shop"},
    )
    assert response.status_code == 200
    assert from_cli == response.json()
    assert len(from_cli["detections"]) == 2


def test_cli_prints_products_with_prices_and_links(serving_recommender, cli_uses, tmp_path, capsys):
    photo = tmp_path / "look.png"
    photo.write_bytes(encode(garment_photo({"short": (10, 10, 120, 200)}), "PNG"))
    cli_uses(serving_recommender)

    assert cli.main(["recommend", str(photo), "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert "1. short (confidence 0.90)" in out
    assert "Short no. 0  20.00 USD  [demo_shop]" in out
    assert "Short no. 1  30.00 EUR (~32.40 USD)  [other_shop]" in out
    assert "/product/short-0.html" in out


def test_cli_reports_a_bad_image_and_a_bad_k(serving_recommender, cli_uses, tmp_path, capsys):
    cli_uses(serving_recommender)
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    assert cli.main(["recommend", str(text)]) == 2
    assert "not a readable image" in capsys.readouterr().err
    photo = tmp_path / "p.jpg"
    photo.write_bytes(encode(garment_photo({}), "JPEG"))
    assert cli.main(["recommend", str(photo), "--k", "0"]) == 2
    assert "k must be from 1" in capsys.readouterr().err
    assert cli.main(["recommend", str(tmp_path / "missing.jpg")]) == 2


def test_cli_refuses_when_the_files_are_not_materialized(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FASHION_DATA_DIR", str(tmp_path))
    photo = tmp_path / "p.jpg"
    photo.write_bytes(encode(garment_photo({}), "JPEG"))
    assert cli.main(["recommend", str(photo)]) == 1
    assert "materialize the garment_detector asset" in capsys.readouterr().err


def test_a_catalog_without_usd_prices_still_serves(serving_catalog):
    products = serving_catalog.products.drop(columns=["price_usd"]).assign(extra=1)
    recommender = Recommender(
        ColourDetector(), ColourEmbedder(), load_indexes(serving_catalog.paths.index_dir), products
    )
    answer = recommender.recommend(garment_photo(TWO_GARMENTS), recommender.make_query(k=1))
    assert answer.detections[0].recommendations[0].price_usd is None
