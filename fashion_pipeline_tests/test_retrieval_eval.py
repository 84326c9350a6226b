"""Retrieval metrics on hand-built rankings, the DeepFashion2 query/gallery rules, and both evaluations end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fashion_pipeline.lib.retrieval import embeddings, knn, retrieval_eval, retrieval_metrics
from fashion_pipeline_tests.fixtures_retrieval import PALETTE, HistogramEmbedder, RetrievalWorld


def test_topk_hits_counts_the_first_match_within_k() -> None:
    query_keys = ["a", "b", "c", "d"]
    gallery_keys = ["x", "a", "b", "c", "y"]
    ranked = np.array(
        [
            [1, 0, 4],  # a: first
            [0, 4, 2],  # b: third
            [-1, -1, -1],  # c: missed (no detection)
            [0, 1, 2],  # d: never in the gallery
        ]
    )

    assert retrieval_metrics.topk_hits(query_keys, gallery_keys, ranked, ks=(1, 2, 3)) == {
        "top1": 0.25,
        "top2": 0.25,
        "top3": 0.5,
    }


def test_topk_hits_accepts_key_sets_for_detected_gallery_boxes() -> None:
    # A detected shop box overlapping two items of the same photo matches either; an empty set matches nothing.
    gallery_keys = [frozenset({(1, 1), (1, 2)}), frozenset(), (2, 1)]
    ranked = np.array([[1, 0], [2, 1], [1, 2]])

    hits = retrieval_metrics.topk_hits([(1, 2), (2, 1), (3, 1)], gallery_keys, ranked, ks=(1, 2))

    assert hits == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3)}


def test_topk_hits_refuses_a_ranking_shorter_than_k() -> None:
    with pytest.raises(ValueError, match="top-20 asked but only 10 ranked"):
        retrieval_metrics.topk_hits(["a"], ["a"], np.zeros((1, 10), dtype=int))


def test_chance_is_the_random_ranking_hit_rate() -> None:
    # 1 match among 7: top-1 1/7; top-5 = 1 - C(6,5)/C(7,5) = 1 - 6/21. 2 matches: top-1 2/7.
    chance = retrieval_metrics.chance_topk([("p", 1), ("q", 1)], [("p", 1), ("q", 1), ("q", 1), *"wxyz"], ks=(1, 5))

    assert chance["top1"] == pytest.approx((1 / 7 + 2 / 7) / 2)
    assert chance["top5"] == pytest.approx(((1 - 6 / 21) + (1 - 1 / 21)) / 2)


def test_iou_of_boxes() -> None:
    ious = retrieval_metrics.iou_matrix(
        np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    )
    np.testing.assert_allclose(ious, [[1.0, 50 / 150, 0.0]])


def test_each_item_is_represented_by_its_best_scoring_overlapping_detection() -> None:
    gt = np.array([[0, 0, 100, 100], [200, 0, 300, 100], [400, 0, 500, 100]], dtype=float)
    detections = np.array(
        [
            [0, 0, 100, 95],  # item 0, score 0.6
            [2, 2, 100, 100],  # item 0, score 0.9: wins
            [200, 0, 260, 100],  # item 1 at IoU 0.6, score 0.3
            [400, 0, 440, 100],  # item 2 at IoU 0.4: below 0.5, so item 2 is missed
        ],
        dtype=float,
    )

    chosen = retrieval_metrics.select_query_detections(gt, detections, np.array([0.6, 0.9, 0.3, 0.95]))

    assert chosen == [1, 2, None]


def test_queries_are_answerable_user_items_and_the_gallery_is_every_shop_item(retrieval_world: RetrievalWorld) -> None:
    queries, gallery, unanswerable = retrieval_eval.consumer_to_shop_split(retrieval_world.items)

    assert sorted(zip(queries["pair_id"], queries["style"], strict=True)) == [
        (1, 1),
        (1, 2),
        (2, 1),
        (3, 1),
        (4, 1),
        (5, 1),
    ]
    assert unanswerable == 1  # (6, 1): no shop photo of that pair and style
    assert len(gallery) == 7 and (gallery["source"] == "shop").all()
    assert (2, 0) in set(zip(gallery["pair_id"], gallery["style"], strict=True))  # style 0 stays as a distractor


def test_demo_shop_targets_are_user_items_whose_product_is_for_sale(retrieval_world: RetrievalWorld) -> None:
    targets = retrieval_eval.demo_shop_targets(retrieval_world.items, retrieval_world.products)

    assert sorted(targets["product_id"]) == [
        "demo_shop:000001-1-1",
        "demo_shop:000001-2-9",
        "demo_shop:000002-1-8",
        "demo_shop:000003-1-11",
        "demo_shop:000004-1-1",
    ]
    assert (targets["source"] == "user").all()


def _indexes(world: RetrievalWorld, embedder: HistogramEmbedder) -> dict[str, knn.CategoryIndex]:
    table, _ = embeddings.embed_catalog(world.products, embedder)
    for category, group in table.groupby("category"):
        knn.build_index(
            embeddings.embedding_matrix(group),
            group["product_id"],
            world.paths.index_dir / category,
            category=category,
            model_version=embedder.version,
        )
    return knn.load_indexes(world.paths.index_dir)


def test_both_evaluations_on_a_world_with_known_answers(retrieval_world: RetrievalWorld) -> None:
    embedder = HistogramEmbedder()
    detector = retrieval_world.detector()

    report = retrieval_eval.evaluate_retrieval(
        retrieval_world.items,
        embedder.embed,
        detector,
        products=retrieval_world.products,
        indexes=_indexes(retrieval_world, embedder),
        batch_size=5,
    )

    expected = retrieval_world.expected
    metrics = report.metrics
    for k in (1, 5, 10, 20):
        assert metrics[f"c2s_gt_top{k}"] == expected["c2s_gt_top1"]
        assert metrics[f"c2s_detected_top{k}"] == pytest.approx(expected["c2s_detected_top1"])
    for k in (1, 5, 10):
        assert metrics[f"exact_gt_top{k}"] == expected["exact_gt_top1"]
        assert metrics[f"exact_detected_top{k}"] == pytest.approx(expected["exact_detected_top1"])
    assert report.counts == {
        "c2s_queries": 6,
        "c2s_unanswerable": 1,
        "c2s_gallery_gt": 7,
        "c2s_gallery_detected": 7,
        "c2s_detected_missed": 1,
        "exact_queries": 5,
        "exact_detected_missed": 1,
    }
    assert report.chance["c2s_gt_top1"] == pytest.approx(1 / 7)
    assert detector.calls == 11  # each photo with a query, gallery item or target detected once (not 000012)
    assert report.unreadable_images == []


def test_a_wrong_embedding_scores_low_and_missing_inputs_leave_figures_out(retrieval_world: RetrievalWorld) -> None:
    def constant(images) -> np.ndarray:  # every crop looks the same: ties broken by gallery order
        return np.ones((len(images), 4), dtype=np.float32) / 2

    report = retrieval_eval.evaluate_retrieval(retrieval_world.items, constant, detector=None)

    assert report.metrics["c2s_gt_top1"] < 0.5
    assert report.metrics["c2s_gt_top20"] == 1.0  # the gallery has only 7 items
    assert not any(name.startswith(("c2s_detected", "exact")) for name in report.metrics)


def test_unreadable_photo_counts_as_a_miss(retrieval_world: RetrievalWorld) -> None:
    items = retrieval_world.items
    user_photo = items.loc[(items["pair_id"] == 4) & (items["source"] == "user"), "image_path"].iloc[0]
    with open(user_photo, "wb") as handle:
        handle.write(b"broken")
    embedder = HistogramEmbedder()

    report = retrieval_eval.evaluate_retrieval(items, embedder.embed, retrieval_world.detector())

    assert report.metrics["c2s_gt_top1"] == pytest.approx(5 / 6)
    assert report.metrics["c2s_detected_top1"] == pytest.approx(4 / 6)
    assert len(report.unreadable_images) == 1 and user_photo in report.unreadable_images[0]


def test_sku_format_matches_the_demo_shop() -> None:
    assert retrieval_eval.demo_shop_sku(12, 2, 7) == "000012-2-7"
    rows = pd.DataFrame({"site": ["demo_shop"], "sku": ["000012-2-7"], "product_id": ["demo_shop:000012-2-7"]})
    items = pd.DataFrame(
        {"split": ["validation"], "source": ["user"], "pair_id": [12], "style": [2], "category_id": [7]}
    )
    assert retrieval_eval.demo_shop_targets(items, rows)["product_id"].tolist() == ["demo_shop:000012-2-7"]


def test_a_detection_too_small_to_embed_is_a_miss(retrieval_world: RetrievalWorld) -> None:
    detector = retrieval_world.detector()
    detect = detector.detect
    shrunk_colour_box = (10.0, 10.0, 14.0, 14.0)  # 4 x 4 px: the app would not embed it

    def detect_with_one_tiny_box(image, conf=0.25):
        found = detect(image, conf)
        pixels = np.asarray(image)
        if (pixels[20:90, 25:70] == PALETTE[4]).all():  # pair 4's user photo: its garment comes back tiny
            return [type(d)(shrunk_colour_box, d.category, d.score) for d in found]
        return found

    detector.detect = detect_with_one_tiny_box
    embedder = HistogramEmbedder()

    report = retrieval_eval.evaluate_retrieval(retrieval_world.items, embedder.embed, detector)

    assert report.metrics["c2s_detected_top20"] == pytest.approx(4 / 6)  # photo 000006 and pair 4 missed
    assert report.counts["c2s_detected_missed"] == 2
