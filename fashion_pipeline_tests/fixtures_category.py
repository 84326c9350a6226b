"""Stand-ins with known outputs for the category rule: a detector that says what it is told, and a classifier.

`SaidDetector` returns fixed detections; `ReadingEmbedder` is fixtures_serving's colour embedder (so the
fake catalog's indexes fit it) with a classifier head that reads every crop as the probabilities it is given,
in the same call, as lib/training/embedder.py `embed_and_classify` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.retrieval.knn import load_indexes
from fashion_pipeline.lib.retrieval.recommender import Recommender
from fashion_pipeline_tests.fixtures_serving import DETECTOR_VERSION, ColourEmbedder, FakeDetection, ServingCatalog


class SaidDetector:
    version = DETECTOR_VERSION
    classes = CATEGORIES

    def __init__(self, detections: Sequence[FakeDetection] = ()) -> None:
        self.detections = list(detections)

    def detect(self, image: Image.Image, conf: float = 0.25) -> list[FakeDetection]:
        return [d for d in self.detections if d.score >= conf]


def reading(top: str, probability: float) -> dict[str, float]:
    """`top` at `probability`, the rest shared evenly by the other categories."""
    rest = (1.0 - probability) / (len(CATEGORIES) - 1)
    return {c: (probability if c == top else rest) for c in CATEGORIES}


class ReadingEmbedder(ColourEmbedder):
    def __init__(self, probabilities: Mapping[str, float]) -> None:
        super().__init__()
        self.row = np.array([probabilities[c] for c in self.classes], np.float32)
        self.classified: list[int] = []  # batch sizes of the embed-and-classify calls

    def classify(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.tile(self.row, (len(images), 1))

    def embed_and_classify(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        self.classified.append(len(images))
        return self.embed(images), self.classify(images)


def said_recommender(catalog: ServingCatalog, detections: Sequence[FakeDetection], probabilities, **kwargs):
    """A recommender over the fake catalog whose detector and classifier say exactly this."""
    return Recommender(
        SaidDetector(detections),
        ReadingEmbedder(probabilities),
        load_indexes(catalog.paths.index_dir),
        catalog.products,
        paths=catalog.paths,
        **kwargs,
    )
