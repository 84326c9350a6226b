"""The training stage: the garment classifier/embedder and the garment detector, tracked in MLflow."""

import dagster as dg

from fashion_pipeline.defs.training.assets import garment_classifier, garment_detector

defs = dg.Definitions(assets=[garment_classifier, garment_detector])
