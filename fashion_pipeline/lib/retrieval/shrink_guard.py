"""The guard against an index that silently loses the catalog: moved images or a moved data root make every
product "unreadable", and the embeddings and the index would shrink to nothing with every check green.

A rebuild may drop products the catalog dropped, but products that the served index (or the last embeddings)
held and the catalog still lists count as lost; more than `max_lost_share` of them fails a blocking check and
the served index stays.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from fashion_pipeline.lib.retrieval import knn

# The share of the served products a rebuild may lose before a blocking check refuses it.
DEFAULT_MAX_LOST_SHARE = 0.05


def lost_products(before: Iterable[str], after: Iterable[str], catalog: Iterable[str]) -> list[str]:
    """Products `before` held that the catalog still lists but `after` lacks, sorted."""
    return sorted((set(map(str, before)) & set(map(str, catalog))) - set(map(str, after)))


def shrink_problem(
    before: Iterable[str], after: Iterable[str], catalog: Iterable[str], max_lost_share: float, what: str
) -> str | None:
    """Why `after` may not replace `before` (it lost too much of the catalog), or None when it may."""
    before = set(map(str, before))
    if not before:
        return None  # nothing served yet: nothing to lose
    lost = lost_products(before, after, catalog)
    share = len(lost) / len(before)
    if share <= max_lost_share:
        return None
    return (
        f"{len(lost)} of the {len(before)} products in the {what} ({share:.0%}, limit {max_lost_share:.0%}) are "
        f"still in the catalog but would be lost (e.g. {', '.join(lost[:3])}): their images are unreadable or "
        "moved. Check catalog/images and the data root, then rematerialize catalog_embeddings and knn_index"
    )


def served_product_ids(index_dir: Path) -> list[str]:
    """The product ids of every category index in `index_dir` (none when there is no index)."""
    ids: list[str] = []
    if Path(index_dir).is_dir():
        for folder in sorted(Path(index_dir).iterdir()):
            if (folder / knn.PRODUCT_IDS_FILE).is_file():
                ids += pd.read_parquet(folder / knn.PRODUCT_IDS_FILE)["product_id"].astype(str).tolist()
    return ids


def served_manifests(index_dir: Path) -> list[knn.IndexManifest]:
    """The manifests of the indexes in `index_dir`, what the app loads."""
    if not Path(index_dir).is_dir():
        return []
    return [
        knn.read_manifest(folder)
        for folder in sorted(Path(index_dir).iterdir())
        if (folder / knn.MANIFEST_FILE).is_file()
    ]
