"""Which category the app searches for a garment: the detector's, the classifier's, or both together.

The detector names each box from the whole photo; the classifier reads the box's crop alone, in the same
forward pass that makes the crop's embedding (lib/training/embedder.py `embed_and_classify`), so asking it
costs nothing at query time. Trained on different photos (street photos for the detector, single-garment
photos for the classifier), they fail on different photos: product shots and close-ups fool the detector.

The rules (`RULES`) compared on the validation photos only (lib/retrieval/category_rule_fit.py):

- `detector`: the detector's category;
- `classifier`: the classifier's most probable category on the crop;
- `product`: the category with the highest product of the classifier's probability and the detector's
  (its score on its category, the rest spread evenly over the others: the exported model keeps only its
  best class per box);
- `classifier_above`: the classifier's category when its probability is at least `min_probability`, else
  the detector's.

With no garment boxed, a product shot or a flat lay is one garment: the whole photo is classified and
searched as that category when the classifier's probability reaches `whole_photo_min_probability`; below
it the app says it found no garment, as without a classifier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fashion_pipeline.lib.retrieval.query import said_probability

RULES = ("detector", "classifier", "product", "classifier_above")


@dataclass(frozen=True)
class CategoryRule:
    # Chosen with the real profile's champions (classifier and detector version 1) on validation photos
    # only, never on the seed or test photos: 202 street photos of colorful-fashion's trainval split (its
    # hash-drawn validation part) and the 301 of clothing-dataset-small's validation folder
    # (benchmarks/category_rule.py; benchmarks/results/category_rule_validation.json). Right category, street
    # boxes / single-garment photos' main box: detector 0.794 / 0.157, classifier 0.484 / 0.878, product
    # 0.587 / 0.883, classifier from 0.9 0.731 / 0.796 (best mean, 0.763). The classifier reads street crops
    # badly and the detector calls most single garments a dress: only a very sure classifier overrules it.
    kind: str = "classifier_above"
    min_probability: float = 0.9
    # Of the 71 validation product photos where nothing was boxed, the whole photo is read right 66 times
    # and wrong 5 at 0.5 or below; higher thresholds drop more right answers than wrong ones.
    whole_photo_min_probability: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in RULES:
            raise ValueError(f"unknown category rule {self.kind!r}: choose one of {', '.join(RULES)}")
        for name in ("min_probability", "whole_photo_min_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0 and 1, got {getattr(self, name)!r}")


DEFAULT_RULE = CategoryRule()


@dataclass(frozen=True)
class CategoryDecision:
    category: str
    # How it was decided, as the answer's `searched_as` says it: "detected" (the detector's category kept),
    # "classified" (the classifier's reading of the crop taken instead), "chosen" (the shopper's),
    # "whole photo" (the shopper's, nothing boxed) or "whole photo classified" (the classifier's, nothing boxed).
    searched_as: str
    probability: float | None  # the classifier's probability of `category`; None without a classifier

    @property
    def message(self) -> str:
        """What the answer says when nothing was boxed and the whole photo was searched."""
        if self.searched_as == "whole photo classified" and self.probability is not None:
            return (
                f"No garment boxed; the classifier reads the whole photo as {self.category} "
                f"({said_probability(self.probability)}), so it was searched as {self.category}."
            )
        return f"No garment found; searched the whole photo as {self.category}."


def class_probabilities(classes: Sequence[str], row: Sequence[float]) -> dict[str, float]:
    """One crop's classifier output as {category: probability}."""
    return {str(c): float(p) for c, p in zip(classes, row, strict=True)}


def decide(
    detected: str, detector_score: float, probabilities: Mapping[str, float] | None, rule: CategoryRule = DEFAULT_RULE
) -> CategoryDecision:
    """The category to search for one detected box."""
    if not probabilities:
        return CategoryDecision(detected, "detected", None)
    best = max(probabilities, key=probabilities.__getitem__)
    if rule.kind == "detector":
        category = detected
    elif rule.kind == "classifier":
        category = best
    elif rule.kind == "product":
        spread = (1.0 - detector_score) / max(len(probabilities) - 1, 1)
        category = max(probabilities, key=lambda c: probabilities[c] * (detector_score if c == detected else spread))
    else:
        category = best if probabilities[best] >= rule.min_probability else detected
    return CategoryDecision(category, "detected" if category == detected else "classified", probabilities.get(category))


def whole_photo(
    probabilities: Mapping[str, float] | None, rule: CategoryRule = DEFAULT_RULE
) -> CategoryDecision | None:
    """The category to search the whole photo as when nothing was boxed; None when the classifier is unsure."""
    if not probabilities:
        return None
    best = max(probabilities, key=probabilities.__getitem__)
    if probabilities[best] < rule.whole_photo_min_probability:
        return None
    return CategoryDecision(best, "whole photo classified", probabilities[best])


def chosen(category: str, probabilities: Mapping[str, float] | None, whole: bool = False) -> CategoryDecision:
    """The shopper's category; the classifier's probability of it is kept, as said, not as a judgement."""
    probability = probabilities.get(category) if probabilities else None
    return CategoryDecision(category, "whole photo" if whole else "chosen", probability)


def readings(classes: Sequence[str], probabilities: np.ndarray | None, count: int) -> list[dict[str, float] | None]:
    """Each crop's classifier output as {category: probability}; None for every crop without a classifier."""
    if probabilities is None or not classes:
        return [None] * count
    return [class_probabilities(classes, row) for row in np.asarray(probabilities, np.float64)]


def decide_garment(
    detected: str | None,
    detector_score: float,
    probabilities: Mapping[str, float] | None,
    chosen_category: str | None,
    rule: CategoryRule = DEFAULT_RULE,
) -> CategoryDecision | None:
    """The category one garment is searched as: the shopper's when chosen, else the rule's for a detected
    box (`detected` is its category), else the whole photo's (`detected` None; None when the classifier is
    unsure)."""
    if chosen_category is not None:
        return chosen(chosen_category, probabilities, whole=detected is None)
    if detected is None:
        return whole_photo(probabilities, rule)
    return decide(detected, detector_score, probabilities, rule)
