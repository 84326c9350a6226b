"""Plain Python under the Dagster assets, with no Dagster imports.

One folder per pipeline stage, named as in `defs/` (deepfashion2, training, catalog, retrieval); `samples/`
makes the generated test and demo data; `common/` holds the few helpers every stage uses.
"""
