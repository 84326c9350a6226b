"""The category the app searches: the detector's, the classifier's, or the whole photo's (category_rule), and
how the rules are measured on validation photos (category_rule_fit), with stand-ins of known outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from fashion_pipeline.lib.retrieval import category_rule_fit as fit
from fashion_pipeline.lib.retrieval.category_rule import DEFAULT_RULE, CategoryRule, decide, whole_photo
from fashion_pipeline.lib.retrieval.query import NO_GARMENT_MESSAGE, Recommendation, explain
from fashion_pipeline_tests.fixtures_category import ReadingEmbedder, SaidDetector, reading, said_recommender
from fashion_pipeline_tests.fixtures_serving import FakeDetection, garment_photo

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "category_rule_validation.json"
RULE = CategoryRule("classifier_above", min_probability=0.6, whole_photo_min_probability=0.6)
DRESS_BOX = (60.0, 40.0, 200.0, 180.0)


# --- the rule -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rule", "detected", "score", "top", "probability", "expected"),
    [
        (RULE, "dress", 0.4, "short", 0.9, ("short", "classified")),  # a sure classifier wins
        (RULE, "dress", 0.9, "short", 0.5, ("dress", "detected")),  # an unsure one does not
        (RULE, "dress", 0.4, "dress", 0.9, ("dress", "detected")),  # both agree
        (CategoryRule("detector"), "dress", 0.4, "short", 0.99, ("dress", "detected")),
        (CategoryRule("classifier"), "dress", 0.99, "short", 0.3, ("short", "classified")),
        # product: 0.9 x (0.6 / 4) for short beats 0.4 x 0.025 for dress; 0.95 x 0.125 beats 0.5 x 0.0125
        (CategoryRule("product"), "dress", 0.4, "short", 0.9, ("short", "classified")),
        (CategoryRule("product"), "dress", 0.95, "short", 0.5, ("dress", "detected")),
    ],
)
def test_each_rule_names_the_box_as_expected(rule, detected, score, top, probability, expected):
    decision = decide(detected, score, reading(top, probability), rule)
    assert (decision.category, decision.searched_as) == expected
    assert decision.probability == pytest.approx(reading(top, probability)[decision.category])


def test_without_a_classifier_the_detector_decides_and_no_probability_is_claimed():
    decision = decide("dress", 0.4, None, RULE)
    assert (decision.category, decision.searched_as, decision.probability) == ("dress", "detected", None)
    assert whole_photo(None, RULE) is None


def test_the_whole_photo_is_searched_only_when_the_classifier_is_sure():
    sure = whole_photo(reading("short", 0.8), RULE)
    assert (sure.category, sure.searched_as, sure.probability) == ("short", "whole photo classified", 0.8)
    assert whole_photo(reading("short", 0.5), RULE) is None


def test_a_near_certain_probability_is_never_said_as_certainty():
    assert "(over 99%)" in whole_photo(reading("short", 0.9996), RULE).message
    product = Recommendation("p", "Jeans", 10.0, "USD", 10.0, "shop", "u", None, 0.5)
    assert (
        explain("short", "classified", None, product, 0.9996)
        == "short, as the classifier reads this garment (over 99%)"
    )
    assert explain("short", "classified", None, product, 0.994) == "short, as the classifier reads this garment (99%)"


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"kind": "vote"}, "unknown category rule"), ({"min_probability": 1.5}, "within 0 and 1")]
)
def test_bad_rule_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CategoryRule(**kwargs)


def test_the_default_rule_is_the_one_chosen_on_validation_photos():
    # The settings in category_rule.py must be what benchmarks/category_rule.py chose and recorded.
    chosen = json.loads(RESULTS.read_text())["chosen"]
    assert CategoryRule(**chosen) == DEFAULT_RULE


# --- the recommender with stand-ins ---------------------------------------------------------------------
def test_a_sure_classifier_renames_a_doubtful_detection_and_that_category_is_searched(serving_catalog):
    recommender = said_recommender(
        serving_catalog, [FakeDetection(DRESS_BOX, "dress", 0.4)], reading("short", 0.9), category_rule=RULE
    )
    answer = recommender.recommend(garment_photo({"dress": (60, 40, 200, 180)}), recommender.make_query(k=3))
    [garment] = answer.detections
    assert (garment.category, garment.searched_as, garment.detected_category) == ("short", "classified", "dress")
    assert (garment.box, garment.score, garment.classifier_probability) == (list(DRESS_BOX), 0.4, 0.9)
    assert [p.product_id.split(":")[1].split("-")[0] for p in garment.recommendations] == ["short"] * 3
    assert garment.recommendations[0].why.startswith("short, as the classifier reads this garment (90%)")
    assert recommender.embedder.backbone.classified == [1]  # the reading came with the embedding, one pass
    assert answer.message is None


def test_no_detection_and_a_sure_classifier_search_the_whole_photo_as_its_category(serving_catalog):
    recommender = said_recommender(serving_catalog, [], reading("skirt", 0.85), category_rule=RULE)
    answer = recommender.recommend(garment_photo({}, size=(120, 90)), recommender.make_query(k=2))
    [garment] = answer.detections
    assert (garment.category, garment.searched_as, garment.box) == ("skirt", "whole photo classified", [0, 0, 120, 90])
    assert (garment.score, garment.detected_category, garment.classifier_probability) == (0.0, None, 0.85)
    assert [p.product_id.split(":")[1].split("-")[0] for p in garment.recommendations] == ["skirt"] * 2
    assert answer.message == (
        "No garment boxed; the classifier reads the whole photo as skirt (85%), so it was searched as skirt."
    )
    assert answer.to_dict()["detections"][0]["searched_as"] == "whole photo classified"


def test_no_detection_and_an_unsure_classifier_find_no_garment_as_before(serving_catalog):
    recommender = said_recommender(serving_catalog, [], reading("skirt", 0.45), category_rule=RULE)
    answer = recommender.recommend(garment_photo({}))
    assert answer.detections == [] and answer.message == NO_GARMENT_MESSAGE


def test_a_chosen_category_wins_over_both_models(serving_catalog):
    recommender = said_recommender(
        serving_catalog, [FakeDetection(DRESS_BOX, "dress", 0.4)], reading("short", 0.9), category_rule=RULE
    )
    [garment] = recommender.recommend(garment_photo({}), recommender.make_query(category="outwear", k=1)).detections
    assert (garment.category, garment.searched_as, garment.detected_category) == ("outwear", "chosen", "dress")
    assert garment.recommendations[0].why.startswith("outwear, the category you chose")


# --- measuring the rules on validation photos -----------------------------------------------------------
def _box(kind: str, truth: str, detected: str, score: float, top: str, probability: float) -> fit.BoxObservation:
    return fit.BoxObservation(kind, f"{kind}/{truth}", truth, detected, score, reading(top, probability))


def _observations() -> fit.Observations:
    return fit.Observations(
        boxes=[
            _box("street", "shirt", "shirt", 0.9, "outwear", 0.55),  # the detector right, the classifier unsure
            _box("street", "skirt", "skirt", 0.8, "skirt", 0.7),  # both right
            _box("single", "short", "dress", 0.4, "short", 0.9),  # the classifier right and sure
            _box("single", "shirt", "outwear", 0.9, "shirt", 0.65),  # right, less sure; `product` keeps outwear
        ],
        undetected=[("a", "short", reading("short", 0.9)), ("b", "dress", reading("skirt", 0.5))],
    )


def test_rules_are_scored_on_both_kinds_of_photo_and_the_best_is_chosen():
    scores = fit.score_rules(_observations(), fit.candidate_rules((0.6, 0.7)))
    by_rule = {(r.rule, r.min_probability if r.rule == "classifier_above" else None): r for r in scores.itertuples()}
    assert (by_rule[("detector", None)].street_accuracy, by_rule[("detector", None)].single_accuracy) == (1.0, 0.0)
    assert (by_rule[("classifier", None)].street_accuracy, by_rule[("classifier", None)].single_accuracy) == (0.5, 1.0)
    assert by_rule[("classifier_above", 0.6)].mean_accuracy == 1.0  # 0.55 leaves the shirt to the detector
    assert by_rule[("classifier_above", 0.7)].single_accuracy == 0.5  # 0.65 no longer overrides outwear
    assert by_rule[("product", None)].mean_accuracy == 0.75

    whole = fit.score_whole_photo(_observations(), (0.4, 0.6))
    assert whole[["right", "wrong", "unanswered", "net"]].values.tolist() == [[1, 1, 0, 0], [1, 0, 1, 1]]
    assert fit.choose(scores, whole) == CategoryRule("classifier_above", 0.6, whole_photo_min_probability=0.6)


def test_collect_reads_validation_photos_only_and_matches_boxes_by_overlap(tmp_path):
    street = tmp_path / "street.png"
    Image.new("RGB", (200, 100), "grey").save(street)
    single, test = tmp_path / "single.png", tmp_path / "test.png"
    for path in (single, test):
        Image.new("RGB", (50, 50), "grey").save(path)

    def row(task, split, image_id, path, category, box, size):
        x1, y1, x2, y2 = box
        return {"task": task, "split": split, "image_id": image_id, "image_path": str(path), "category": category,
                "x1": x1, "y1": y1, "x2": x2, "y2": y2, "image_width": size[0], "image_height": size[1]}  # fmt: skip

    table = pd.DataFrame(
        [
            row("detector", "validation", "s/1", street, "skirt", (10.0, 10.0, 90.0, 90.0), (200, 100)),
            row("classifier", "validation", "c/1", single, "short", (0.0, 0.0, 50.0, 50.0), (50, 50)),
            row("classifier", "test", "c/2", test, "dress", (0.0, 0.0, 50.0, 50.0), (50, 50)),
        ]
    )
    # One detection overlaps the skirt (IoU 0.8), one lies on nothing labelled; on 50 px photos, nothing.
    detector = _SizeDetector(
        {
            200: [
                FakeDetection((10.0, 10.0, 90.0, 74.0), "dress", 0.5),
                FakeDetection((150.0, 0.0, 200.0, 50.0), "shirt", 0.9),
            ]
        }
    )
    observations = fit.collect(table, detector, ReadingEmbedder(reading("skirt", 0.8)))

    [box] = observations.boxes
    assert (box.kind, box.truth, box.detected, box.score) == ("street", "skirt", "dress", 0.5)
    assert [(i, t) for i, t, _ in observations.undetected] == [("c/1", "short")]  # not the test photo
    assert fit.iou((10, 10, 90, 74), (10, 10, 90, 90)) == pytest.approx(0.8)
    assert fit.Observations.from_json(json.loads(json.dumps(observations.to_json()))) == observations


class _SizeDetector(SaidDetector):
    def __init__(self, by_width) -> None:
        super().__init__()
        self.by_width = by_width

    def detect(self, image, conf=0.25):
        return [d for d in self.by_width.get(image.width, []) if d.score >= conf]
