"""serving_release: the champion models, indexes and catalog snapshot the app serves, switched in as one piece."""

from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.defs.retrieval.assets import knn_index
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.retrieval import release, release_pointer, release_watch

GROUP = "retrieval"


def load_release(paths: DataPaths, folder: Path) -> Any:
    """The built release loaded as the app loads it (called through this module: tests stand in here)."""
    return release_watch.load_release(paths, folder)


class ReleaseConfig(dg.Config):
    keep_releases: int = Field(
        default=release_pointer.DEFAULT_KEEP,
        ge=1,
        description="Newest releases kept on disk; the current and the previous one are never deleted.",
    )


def _by_category_md(manifest: dict[str, Any]) -> str:
    rows = [
        f"| {c} | {n} | {manifest['index']['backends'].get(c, '')} |"
        for c, n in manifest["index"]["by_category"].items()
    ]
    return "\n".join(["| category | products | backend |", "|---|---|---|", *rows])


@dg.asset(
    group_name=GROUP,
    pool="retrieval",  # never beside a knn_index run that swaps the folder being released
    kinds={"python"},
    # The classifier is upstream of knn_index already: a new classifier champion is released once its indexes
    # are rebuilt (a release before that would be refused). A new detector needs no new index.
    deps=[knn_index, dg.AssetKey("garment_detector")],
    # Follows every rebuilt index and every new detector (catalog_automation targets the retrieval group).
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[
        dg.AssetCheckSpec(
            "release_loads_and_agrees",
            asset="serving_release",
            blocking=True,
            description=(
                "Protects the app from serving models and indexes that disagree: the new release's indexes were "
                "built from the champion classifier's embeddings and the whole release loads as the app loads it, "
                "or the pointer stays on the release served now. If it fails, a new champion is waiting for its "
                "indexes: materialize catalog_embeddings and knn_index, then serving_release."
            ),
        ),
        dg.AssetCheckSpec(
            "product_images_present",
            asset="serving_release",
            description=(
                "Warns (does not block) when catalog rows of the release name product images that are not in "
                "catalog/images: the app shows those products without their photo. Recrawl their site, or check "
                "that catalog/images was not moved."
            ),
        ),
    ],
)
def serving_release(config: ReleaseConfig, paths: DataPathsResource) -> dg.MaterializeResult:
    """The release the app serves: champion models, k-NN indexes and catalog snapshot, checked, then switched in
    by one pointer (`fashion-pipeline release list | rollback`)."""
    data = paths.get()
    outcome = release.build_release(data, load=load_release, keep=config.keep_releases)
    images = outcome.manifest["referenced"]["product_images"]
    said = {
        "released": f"release {outcome.release_id} built, checked and switched in",
        "unchanged": f"release {outcome.release_id} already serves exactly these files: nothing switched",
        "refused": "; ".join(outcome.problems) + f" (the pointer stays on release {outcome.served or 'none'})",
    }[outcome.status]
    # The metadata describes what the app serves: after a refused build, the release still current.
    served = outcome.manifest
    if outcome.status == "refused":
        served = release.read_manifest(data.releases_dir / outcome.served) if outcome.served else None
    metadata: dict[str, Any] = {
        "outcome": outcome.status,
        "release": outcome.served or "none",
        "refused_release": outcome.manifest["release_id"] if outcome.status == "refused" else "none",
        "pruned": ", ".join(outcome.pruned) or "none",
        "path": dg.MetadataValue.path(str(data.releases_dir / (outcome.served or ""))),
    }
    if served is not None:
        metadata |= {
            "classifier_version": served["models"]["classifier"].get("registered_version"),
            "detector_version": served["models"]["detector"].get("registered_version"),
            "products": served["catalog"]["products"],
            "by_category": dg.MetadataValue.md(_by_category_md(served)),
        }
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="release_loads_and_agrees",
                passed=outcome.status != "refused",
                description=said,
                metadata={"problems": len(outcome.problems), "switched": outcome.switched},
            ),
            dg.AssetCheckResult(
                check_name="product_images_present",
                passed=images["present_when_built"] == images["named"],
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{images['present_when_built']} of the {images['named']} product images named by the "
                "catalog are in catalog/images",
            ),
        ],
    )
