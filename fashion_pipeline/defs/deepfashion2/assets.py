"""DeepFashion2 -> one table of garment items -> balanced crops (classifier) and a YOLO dataset (detector).

The crops and the YOLO dataset also take the train/validation rows of the labelled photos (the photos stage);
their `no_test_photos` checks prove that no test photo of a source reached either.
"""

import dagster as dg
import pandas as pd
from pydantic import Field

from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.lib.common.atomic import atomic_dir, write_parquet
from fashion_pipeline.lib.common.categories import CATEGORIES, DF2_CATEGORY_NAMES, load_category_map
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.common.previews import count_table_md, image_strip_md
from fashion_pipeline.lib.deepfashion2 import crops, reader, yolo_format
from fashion_pipeline.lib.photos.reader import PHOTO_COLUMNS, read_photo_table
from fashion_pipeline.lib.photos.training_rows import find_test_leaks, training_rows

GROUP = "deepfashion2"
# Share of skipped items above which the merge's check fails instead of warning.
MAX_SKIPPED_FRACTION = 0.01


def _counts(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return df.groupby(by, observed=True).size().rename("count").reset_index()


def _training_inputs(data: DataPaths, include_deepfashion2: bool, use: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Training rows for `use` (DeepFashion2 items and labelled photos), the photo table, and a note on it."""
    items = pd.read_parquet(data.garment_items).dropna(subset=["category"]) if include_deepfashion2 else None
    photos = read_photo_table(data.labelled_photos)
    note = str(data.labelled_photos)
    if photos is None:
        photos, note = pd.DataFrame(columns=PHOTO_COLUMNS), "labelled_photos not materialized: no photos"
    rows = training_rows(items, photos, use)
    if rows.empty:
        raise ValueError(
            f"no training rows for {use}: include_deepfashion2 is {include_deepfashion2} and no labelled photo "
            f"source feeds it ({note})"
        )
    return rows, photos, note


def _no_test_photos(photos: pd.DataFrame, trained: pd.DataFrame) -> dg.AssetCheckResult:
    leaks = find_test_leaks(photos, trained)
    return dg.AssetCheckResult(
        check_name="no_test_photos",
        passed=not leaks,
        metadata={
            "test_photos": len(photos[photos["split"] == "test"].drop_duplicates(["photo_source", "image_id"])),
            "leaked": len(leaks),
            "leaks": dg.MetadataValue.json(leaks[:50]),
        },
    )


def _no_test_photos_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        "no_test_photos",
        asset=asset,
        blocking=True,
        description=(
            "Protects the reported test scores: no test photo of a labelled source (by its id or its file's "
            "sha256) is in the training data. If it fails, the leaks are listed: remove them from the training "
            "folders (or fix the source's split lists) and materialize again."
        ),
    )


class SampleConfig(dg.Config):
    n_images: int = Field(default=1_500, description="Images to generate over both splits.")
    seed: int = Field(default=0, description="Same seed, same sample, byte for byte.")
    validation_fraction: float = Field(
        default=0.2, description="Share of images in the validation split (pairs are never split)."
    )


@dg.asset(group_name=GROUP, kinds={"python", "jpeg"}, pool="deepfashion2")
def deepfashion2_sample(config: SampleConfig, paths: DataPathsResource) -> dg.MaterializeResult:
    """A generated DeepFashion2-format sample (official layout and keys); skipped when FASHION_DF2_ROOT is set."""
    data = paths.get()
    if paths.df2_root:
        return dg.MaterializeResult(
            metadata={"generated": False, "deepfashion2_root": dg.MetadataValue.path(str(data.df2_root))}
        )
    from fashion_pipeline.lib.samples.deepfashion2_sample import generate_sample

    summary = generate_sample(
        data.deepfashion2_sample,
        n_images=config.n_images,
        seed=config.seed,
        validation_fraction=config.validation_fraction,
    )
    return dg.MaterializeResult(
        metadata={
            "generated": True,
            "images": summary.total_images,
            "images_by_split": dg.MetadataValue.json(summary.images),
            "path": dg.MetadataValue.path(str(data.deepfashion2_sample)),
            "items_by_category": dg.MetadataValue.md(
                count_table_md(
                    pd.DataFrame(
                        [
                            {"category_name": DF2_CATEGORY_NAMES[c], "split": split, "count": n}
                            for split, by_category in summary.items_per_split.items()
                            for c, n in by_category.items()
                        ]
                    ),
                    "category_name",
                    "split",
                )
            ),
        }
    )


class MergeConfig(dg.Config):
    workers: int = Field(default=0, description="Parsing processes; 0 = one per CPU core.")


@dg.asset(
    group_name=GROUP,
    pool="deepfashion2",
    kinds={"parquet"},
    deps=[deepfashion2_sample],
    check_specs=[
        dg.AssetCheckSpec(
            "no_skipped_inputs",
            asset="deepfashion2_annotations",
            blocking=True,
            description=(
                "Protects against training on a silently shrunken dataset: warns when any file or item was "
                "skipped, fails above 1 %. The metadata counts each reason with an example: repair or remove "
                "those files in the DeepFashion2 folder (FASHION_DF2_ROOT) and materialize again."
            ),
        ),
        dg.AssetCheckSpec(
            "boxes_inside_images",
            asset="deepfashion2_annotations",
            blocking=True,
            description=(
                "Protects the crops and the detector's labels: every box has positive area and lies inside its "
                "image. If it fails, the reader let a bad box through: see the examples and fix the annotation "
                "or the reader's validation."
            ),
        ),
    ],
)
def deepfashion2_annotations(config: MergeConfig, paths: DataPathsResource) -> dg.MaterializeResult:
    """Every per-image DeepFashion2 JSON of both splits merged into one Parquet row per garment item."""
    data = paths.get()
    df, report = reader.read_deepfashion2(data.df2_root, workers=config.workers or None)
    write_parquet(df, data.annotations)
    skipped = dict(sorted(report.skipped.items()))
    skipped_check = dg.AssetCheckResult(
        check_name="no_skipped_inputs",
        passed=report.skipped_total == 0,
        severity=dg.AssetCheckSeverity.ERROR
        if report.skipped_fraction > MAX_SKIPPED_FRACTION
        else dg.AssetCheckSeverity.WARN,
        metadata={
            "skipped": dg.MetadataValue.json(skipped),
            "skipped_fraction": round(report.skipped_fraction, 5),
            "examples": dg.MetadataValue.json(report.examples),
        },
    )
    inside = reader.boxes_inside_images(df)
    return dg.MaterializeResult(
        metadata={
            "files_read": report.files_read,
            "items": len(df),
            "skipped_by_reason": dg.MetadataValue.json(skipped),
            "path": dg.MetadataValue.path(str(data.annotations)),
            "by_split_and_category": dg.MetadataValue.md(
                count_table_md(_counts(df, ["category_name", "split"]), "category_name", "split")
            ),
        },
        check_results=[
            skipped_check,
            dg.AssetCheckResult(
                check_name="boxes_inside_images",
                passed=bool(inside.all()),
                metadata={"outside": int((~inside).sum())},
            ),
        ],
    )


@dg.asset(
    group_name=GROUP,
    pool="deepfashion2",
    kinds={"parquet"},
    deps=[deepfashion2_annotations],
    check_specs=[
        dg.AssetCheckSpec(
            "every_item_mapped",
            asset="garment_items",
            blocking=True,
            description=(
                "Protects both models' class lists: every DeepFashion2 category_id maps to one of the 5 "
                "categories. If it fails, add the missing id to fashion_pipeline/categories.yaml."
            ),
        ),
        dg.AssetCheckSpec(
            "no_empty_category",
            asset="garment_items",
            blocking=True,
            description=(
                "Protects training and validation from a class with no examples: each of the 5 categories has "
                "items in both splits. If it fails, the sample is too small or the dataset lacks a category: "
                "raise n_images (generated sample) or point FASHION_DF2_ROOT at the full dataset."
            ),
        ),
    ],
)
def garment_items(paths: DataPathsResource) -> dg.MaterializeResult:
    """DeepFashion2 items with their 13 categories mapped onto the 5 we recommend in."""
    data = paths.get()
    category_map = load_category_map()
    items = reader.with_categories(pd.read_parquet(data.annotations), category_map.to_category)
    write_parquet(items, data.garment_items)
    unmapped = items.loc[items["category"].isna(), "category_id"].unique().tolist()
    counts = _counts(items.dropna(subset=["category"]), ["category", "split"])
    present = set(zip(counts["category"], counts["split"], strict=True))
    splits = sorted(set(items["split"].astype(str)))
    empty = [f"{c}/{s}" for c in category_map.categories for s in splits if (c, s) not in present]
    return dg.MaterializeResult(
        metadata={
            "items": len(items),
            "path": dg.MetadataValue.path(str(data.garment_items)),
            "by_category": dg.MetadataValue.md(count_table_md(counts, "category", "split")),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="every_item_mapped",
                passed=not unmapped,
                metadata={"unmapped_category_ids": dg.MetadataValue.json(sorted(int(i) for i in unmapped))},
            ),
            dg.AssetCheckResult(
                check_name="no_empty_category",
                passed=not empty and len(splits) == 2,
                metadata={"empty": dg.MetadataValue.json(empty), "splits": dg.MetadataValue.json(splits)},
            ),
        ],
    )


class CropsConfig(dg.Config):
    train_cap: int = Field(default=7_500, description="Most crops per category in train (balancing cap).")
    validation_cap: int = Field(default=2_250, description="Most crops per category in validation.")
    margin: float = Field(default=0.05, description="Context added around each box, as a fraction of its size.")
    min_size: int = Field(default=24, description="Boxes smaller than this many pixels on a side are left out.")
    max_side: int = Field(default=320, description="Crops are downscaled to this longest side.")
    seed: int = 0
    include_deepfashion2: bool = Field(
        default=True, description="Crop DeepFashion2 items (sample or real) beside the labelled photos."
    )


@dg.asset(
    group_name=GROUP,
    pool="deepfashion2",
    kinds={"jpeg", "parquet"},
    deps=[garment_items, dg.AssetKey("labelled_photos")],
    check_specs=[
        dg.AssetCheckSpec(
            "crops_match_items",
            asset="garment_crops",
            blocking=True,
            description=(
                "Protects the classifier from missing or orphan crops: one crop file per selected item "
                "(manifest rows = files written = items kept). If it fails, the disk filled up or a file was "
                "removed while writing: free space and materialize garment_crops again."
            ),
        ),
        _no_test_photos_spec("garment_crops"),
    ],
)
def garment_crops(config: CropsConfig, paths: DataPathsResource) -> dg.MaterializeResult:
    """Balanced crop dataset per split and category (DeepFashion2 items and labelled photos), for the classifier."""
    data = paths.get()
    settings = crops.CropSettings(**config.model_dump(exclude={"include_deepfashion2"}))
    items, photos, photos_note = _training_inputs(data, config.include_deepfashion2, "crops")
    selected, left_out = crops.select_balanced(items, settings)
    with atomic_dir(data.crops_dir) as tmp:
        manifest, report = crops.write_crops(selected, tmp, settings, final_dir=data.crops_dir)
        write_parquet(manifest, tmp / data.crops_manifest.name)
    left_out.update(report.left_out)
    files = sum(1 for _ in data.crops_dir.glob("*/*/*.jpg"))
    kept = len(selected) - report.left_out.total()
    samples = manifest.groupby("category", observed=True).head(2)["crop_path"].tolist()
    return dg.MaterializeResult(
        metadata={
            "crops": len(manifest),
            "left_out": dg.MetadataValue.json(dict(left_out)),
            "path": dg.MetadataValue.path(str(data.crops_dir)),
            "by_category": dg.MetadataValue.md(
                count_table_md(_counts(manifest, ["category", "split"]), "category", "split")
            ),
            "by_source": dg.MetadataValue.md(
                count_table_md(_counts(manifest, ["photo_source", "split"]), "photo_source", "split")
            ),
            "labelled_photos": photos_note,
            "samples": dg.MetadataValue.md(image_strip_md(samples, title="crops")),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="crops_match_items",
                passed=len(manifest) == files == kept,
                metadata={"manifest_rows": len(manifest), "files": files, "items_kept": kept},
            ),
            _no_test_photos(photos, manifest),
        ],
    )


class YoloConfig(dg.Config):
    per_class_cap: int = Field(default=5_000, description="Most boxes per class and split in the subset.")
    seed: int = 0
    include_deepfashion2: bool = Field(
        default=True, description="Take DeepFashion2 images (sample or real) beside the labelled detector photos."
    )


@dg.asset(
    group_name=GROUP,
    pool="deepfashion2",
    kinds={"yolo"},
    deps=[garment_items, dg.AssetKey("labelled_photos")],
    check_specs=[
        dg.AssetCheckSpec(
            "labels_valid",
            asset="yolo_dataset",
            blocking=True,
            description=(
                "Protects the detector's training: one label file per image and every coordinate inside [0, 1]. "
                "If it fails, the examples name the files: materialize yolo_dataset again from garment_items."
            ),
        ),
        _no_test_photos_spec("yolo_dataset"),
    ],
)
def yolo_dataset(config: YoloConfig, paths: DataPathsResource) -> dg.MaterializeResult:
    """A balanced YOLO-format subset (DeepFashion2 and labelled detector photos; data.yaml, manifest) for the detector."""
    data = paths.get()
    items, photos, photos_note = _training_inputs(data, config.include_deepfashion2, "detector")
    settings = yolo_format.YoloSettings(**config.model_dump(exclude={"include_deepfashion2"}))
    selected = yolo_format.select_images(items, CATEGORIES, settings)
    with atomic_dir(data.yolo_dir) as tmp:
        report = yolo_format.write_yolo_dataset(selected, tmp, CATEGORIES, final_dir=data.yolo_dir)
        write_parquet(report.manifest, tmp / data.yolo_manifest.name)
    audit = yolo_format.audit_yolo_dataset(data.yolo_dir)
    instances = pd.DataFrame(
        [{"split": s, "category": c, "count": n} for (s, c), n in sorted(report.instances.items())]
    )
    return dg.MaterializeResult(
        metadata={
            "images": dg.MetadataValue.json(dict(report.images)),
            "boxes": audit.boxes,
            "path": dg.MetadataValue.path(str(data.yolo_data_yaml)),
            "boxes_by_category": dg.MetadataValue.md(count_table_md(instances, "category", "split")),
            "images_by_source": dg.MetadataValue.md(
                count_table_md(
                    _counts(report.manifest.drop_duplicates("image_file"), ["photo_source", "yolo_split"]),
                    "photo_source",
                    "yolo_split",
                )
            ),
            "labelled_photos": photos_note,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="labels_valid",
                passed=audit.images == audit.label_files
                and audit.images_without_label == 0
                and audit.boxes_out_of_range == 0,
                metadata={
                    "images": audit.images,
                    "label_files": audit.label_files,
                    "images_without_label": audit.images_without_label,
                    "boxes_out_of_range": audit.boxes_out_of_range,
                },
            ),
            _no_test_photos(photos, report.manifest),
        ],
    )
