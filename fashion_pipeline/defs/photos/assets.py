"""Labelled photos a user has (class folders, CSV, YOLO folders) -> one table feeding crops, YOLO and evaluation."""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.lib.common.atomic import write_parquet
from fashion_pipeline.lib.common.previews import count_table_md
from fashion_pipeline.lib.photos.reader import counts_by_source, read_sources
from fashion_pipeline.lib.photos.sources import TRAINVAL, load_sources

GROUP = "photos"
SOURCES_ENV = "FASHION_PHOTO_SOURCES"


class PhotoSourcesConfig(dg.Config):
    sources_file: str = Field(
        default="",
        description=f"The photo sources YAML (schema in lib/photos/sources.py, example photo_sources/real.yaml); "
        f"empty = ${SOURCES_ENV}; both empty = no sources (an empty table).",
    )


def _declared_splits(sources) -> set[tuple[str, str]]:
    """(source, split) pairs the sources file promises photos for; a trainval folder promises both parts."""
    declared = set()
    for source in sources:
        for entry in source.splits:
            parts = ("train", "validation") if entry.split == TRAINVAL else (entry.split,)
            declared.update((source.name, split) for split in parts)
    return declared


@dg.asset(
    group_name=GROUP,
    pool="photos",
    kinds={"parquet"},
    check_specs=[
        dg.AssetCheckSpec(
            "every_split_has_photos",
            asset="labelled_photos",
            blocking=True,
            description="Each split a source declares holds at least one labelled garment (else a path is wrong).",
        )
    ],
)
def labelled_photos(config: PhotoSourcesConfig, paths: DataPathsResource) -> dg.MaterializeResult:
    """Labelled photo sources (FASHION_PHOTO_SOURCES) as one row per garment with its split and 5-way category."""
    data = paths.get()
    setting = config.sources_file or os.environ.get(SOURCES_ENV, "")
    sources_file = str(Path(setting).resolve()) if setting else ""
    sources = load_sources(sources_file) if sources_file else []
    table, reports = read_sources(sources)
    write_parquet(table, data.labelled_photos)
    present = set(zip(table["photo_source"], table["split"], strict=True))
    empty = sorted(f"{s}/{split}" for s, split in _declared_splits(sources) - present)
    counts = counts_by_source(table).assign(source_split=lambda c: c["photo_source"] + " / " + c["split"])
    return dg.MaterializeResult(
        metadata={
            "sources_file": sources_file or f"none (${SOURCES_ENV} unset): an empty table",
            "photos": dg.MetadataValue.json({name: r.photos for name, r in reports.items()}),
            "garments": len(table),
            "skipped_by_source": dg.MetadataValue.json({name: dict(r.skipped) for name, r in reports.items()}),
            "skipped_examples": dg.MetadataValue.json({name: r.examples for name, r in reports.items()}),
            "path": dg.MetadataValue.path(str(data.labelled_photos)),
            "by_source_split_and_category": dg.MetadataValue.md(
                count_table_md(counts, "source_split", "category") if len(counts) else "no labelled photos"
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="every_split_has_photos",
                passed=not empty,
                metadata={"empty_splits": dg.MetadataValue.json(empty)},
            )
        ],
    )
