"""The training stage: the garment classifier (and embedder) and the detector, tracked and gated in MLflow.

Also the models at serving time (`embedder`, `detector`) and their scoring on labelled real photos.
"""
