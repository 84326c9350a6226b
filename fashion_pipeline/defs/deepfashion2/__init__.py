"""The DeepFashion2 stage: sample, merged annotations, 5-way items, crops and the YOLO dataset."""

import dagster as dg

from fashion_pipeline.defs.deepfashion2 import assets

defs = dg.Definitions(assets=dg.load_assets_from_modules([assets]))
