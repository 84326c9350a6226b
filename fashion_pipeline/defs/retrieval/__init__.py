"""The retrieval stage: the vector layout, catalog embeddings, per-category k-NN indexes, the evaluations and
the serving release."""

import dagster as dg

from fashion_pipeline.defs.retrieval.assets import catalog_embeddings, knn_index
from fashion_pipeline.defs.retrieval.evaluation import retrieval_evaluation
from fashion_pipeline.defs.retrieval.real_catalog import real_retrieval_evaluation, retrieval_projection
from fashion_pipeline.defs.retrieval.release import serving_release

defs = dg.Definitions(
    assets=[
        retrieval_projection,
        catalog_embeddings,
        knn_index,
        retrieval_evaluation,
        real_retrieval_evaluation,
        serving_release,
    ]
)
