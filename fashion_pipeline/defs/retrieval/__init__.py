"""The retrieval stage: catalog embeddings, per-category k-NN indexes and the retrieval evaluation."""

import dagster as dg

from fashion_pipeline.defs.retrieval.assets import catalog_embeddings, knn_index, retrieval_evaluation

defs = dg.Definitions(assets=[catalog_embeddings, knn_index, retrieval_evaluation])
