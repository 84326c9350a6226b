"""The training stage: the garment classifier/embedder and the garment detector, tracked in MLflow, and their
scores on real photos."""

import dagster as dg

from fashion_pipeline.defs.training.assets import garment_classifier, garment_detector
from fashion_pipeline.defs.training.real_photo_evaluation import real_photo_evaluation

defs = dg.Definitions(assets=[garment_classifier, garment_detector, real_photo_evaluation])
