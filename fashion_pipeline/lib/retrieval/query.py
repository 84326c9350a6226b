"""What callers of the recommender see: the `Query` a shopper asks, the `RecommendAnswer`, and its errors.

`RecommendAnswer.to_dict()` is the answer shape of DESIGN.md's `POST /api/recommend`, returned by the HTTP
app and the `recommend` command alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_K = 10
MAX_K = 100

NO_GARMENT_MESSAGE = (
    "No garment found in this photo. Try a photo where the clothing is clearly visible, "
    "or choose a category to search the whole photo."
)


class RecommenderError(RuntimeError):
    """The materialized files cannot serve recommendations; the message says what to (re)materialize."""


class QueryError(ValueError):
    """A request parameter is out of range or names something unknown; the message says what is allowed."""


@dataclass(frozen=True)
class Query:
    """What a shopper asks for besides the photo; build it with `Recommender.make_query` to validate it."""

    k: int = DEFAULT_K
    category: str | None = None  # search this category instead of the detected one
    max_price_usd: float | None = None
    site: str | None = None
    include_crops: bool = False  # add a JPEG data URL of each crop (the page shows them)

    @property
    def filtered(self) -> bool:
        return self.max_price_usd is not None or self.site is not None


@dataclass(frozen=True)
class Recommendation:
    product_id: str
    name: str
    price: float | None
    currency: str | None
    price_usd: float | None
    site: str
    url: str
    image_url: str | None
    score: float  # cosine similarity of the garment crop and the product image, 1 is identical
    # The shop's colour folded into a family (lib/retrieval/colour.py), None when the shop states none.
    colour_family: str | None = None
    why: str = ""  # a few words on the match: the category searched, and the colour family when it is shared


@dataclass(frozen=True)
class Garment:
    box: list[float]  # x1, y1, x2, y2 in pixels of the upright (EXIF-rotated) photo
    category: str
    score: float  # detector confidence; 0 for the whole photo searched under a chosen category
    recommendations: list[Recommendation]
    crop: str | None = None  # data:image/jpeg;base64,... when the query asked for crops
    # The colour family holding at least half of the crop's garment pixels; None when no family does.
    colour_family: str | None = None
    # How `category` was decided (lib/retrieval/category_rule.py): "detected", "classified" (the classifier's
    # reading of the crop, preferred to the detector's by the category rule), "chosen", "whole photo" (chosen,
    # nothing boxed) or "whole photo classified" (nothing boxed, the classifier's reading of the whole photo).
    searched_as: str = "detected"
    detected_category: str | None = None  # the detector's own category for the box; None for the whole photo
    classifier_probability: float | None = None  # the classifier's probability of `category`; None without one


@dataclass(frozen=True)
class RecommendAnswer:
    detections: list[Garment]
    message: str | None = None
    image_size: tuple[int, int] = (0, 0)  # width, height of the upright photo the boxes refer to

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer of `POST /api/recommend` and `fashion-pipeline recommend --json`."""
        detections = []
        for garment in self.detections:
            entry: dict[str, Any] = {
                "box": garment.box,
                "category": garment.category,
                "score": garment.score,
                "colour_family": garment.colour_family,
                "searched_as": garment.searched_as,
                "detected_category": garment.detected_category,
                "classifier_probability": garment.classifier_probability,
                "recommendations": [vars(r).copy() for r in garment.recommendations],
            }
            if garment.crop is not None:
                entry["crop"] = garment.crop
            detections.append(entry)
        return {
            "detections": detections,
            "message": self.message,
            "image": {"width": self.image_size[0], "height": self.image_size[1]},
        }


def explain(
    category: str,
    searched_as: str,
    photo_family: str | None,
    product: Recommendation,
    probability: float | None = None,
) -> str:
    """The `why` of one recommendation: only what is known, never a certainty the system does not have.

    `searched_as` is the garment's (`Garment.searched_as`); `probability`, the classifier's probability of
    `category`, is said where the classifier decided the category. The colour family is named only when the
    crop's dominant colour (from its pixels) and the shop's stated colour fall in the same family.
    """
    said = f" ({said_probability(probability)})" if probability is not None else ""
    reason = {
        "detected": f"{category}, the category detected in your photo",
        "classified": f"{category}, as the classifier reads this garment{said}",
        "chosen": f"{category}, the category you chose",
        "whole photo": f"{category}, searched with the whole photo",
        "whole photo classified": f"{category}, as the classifier reads your whole photo{said}",
    }[searched_as]
    if photo_family is not None and product.colour_family == photo_family:
        reason += f"; same colour family as your photo ({photo_family})"
    return reason


def said_probability(probability: float) -> str:
    """A model's probability in words: a softmax of 0.9996 is not a certainty, so it never reads 100 %."""
    return "over 99%" if probability >= 0.995 else f"{probability:.0%}"
