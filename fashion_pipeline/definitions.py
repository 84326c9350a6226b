"""The one Definitions object: every stage's definitions plus the shared resources and executor."""

import dagster as dg

from fashion_pipeline.defs import catalog, deepfashion2, photos, retrieval, training
from fashion_pipeline.defs.resources import DataPathsResource, MlflowResource

defs = dg.Definitions.merge(
    deepfashion2.defs,
    photos.defs,
    training.defs,
    catalog.defs,
    retrieval.defs,
    dg.Definitions(
        resources={"paths": DataPathsResource(), "mlflow": MlflowResource()},
        # One process per run: the multiprocess executor costs a Python start per step (STACK.md trap 10).
        executor=dg.in_process_executor,
    ),
)
