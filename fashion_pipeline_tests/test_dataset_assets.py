"""The four DeepFashion2 stages materialized in-process on a tiny generated sample, outputs read back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from fashion_pipeline.defs.deepfashion2 import assets
from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.lib.common.categories import CATEGORIES, CATEGORY_MAP
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.deepfashion2.reader import ANNOTATION_COLUMNS


def test_annotations_hold_every_generated_item(tiny_dataset: DataPaths) -> None:
    df = pd.read_parquet(tiny_dataset.annotations)
    assert list(df.columns) == ANNOTATION_COLUMNS
    expected = 0
    for split in ("train", "validation"):
        for path in (tiny_dataset.deepfashion2_sample / split / "annos").glob("*.json"):
            expected += sum(1 for key in json.loads(path.read_text()) if key.startswith("item"))
    assert len(df) == expected
    assert set(df["split"].astype(str)) == {"train", "validation"}
    assert set(df["source"].astype(str)) == {"user", "shop"}


def test_items_carry_the_five_way_category(tiny_dataset: DataPaths) -> None:
    items = pd.read_parquet(tiny_dataset.garment_items)
    assert set(items["category"]) <= set(CATEGORIES)
    assert (items["category"] == items["category_id"].map(CATEGORY_MAP.to_category)).all()


def test_crops_manifest_matches_files(tiny_dataset: DataPaths) -> None:
    manifest = pd.read_parquet(tiny_dataset.crops_manifest)
    items = pd.read_parquet(tiny_dataset.garment_items)
    assert len(manifest) > 0
    assert all(Path(p).is_file() for p in manifest["crop_path"])
    assert all(Path(p).parent.name == c for p, c in zip(manifest["crop_path"], manifest["category"], strict=True))
    big = ((items["x2"] - items["x1"]) >= 24) & ((items["y2"] - items["y1"]) >= 24)
    assert len(manifest) == int(big.sum())  # tiny sample: no class reaches the cap


def test_yolo_dataset_is_loadable(tiny_dataset: DataPaths) -> None:
    data = yaml.safe_load(tiny_dataset.yolo_data_yaml.read_text())
    assert data["names"] == dict(enumerate(CATEGORIES))
    images = sorted(Path(data["train"]).iterdir())
    labels = sorted((tiny_dataset.yolo_dir / "labels" / "train").iterdir())
    assert [p.stem for p in images] == [p.stem for p in labels]
    for label in labels:
        for line in label.read_text().split("\n"):
            if line:
                cls, *coords = line.split()
                assert 0 <= int(cls) < len(CATEGORIES)
                assert all(0 <= float(v) <= 1 for v in coords)


def test_a_broken_file_is_reported_and_the_check_warns(tmp_path: Path, tiny_dataset: DataPaths) -> None:
    root = tmp_path / "df2"
    shutil.copytree(tiny_dataset.deepfashion2_sample, root)  # raises if the copy fails
    (root / "train" / "annos" / "999999.json").write_text("{broken")
    result = dg.materialize(
        [assets.deepfashion2_annotations],
        resources={"paths": DataPathsResource(data_dir=str(tmp_path / "data"), df2_root=str(root))},
    )
    assert result.success
    materialization = result.asset_materializations_for_node("deepfashion2_annotations")[0]
    assert materialization.metadata["skipped_by_reason"].value == {"malformed_json": 1}
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "no_skipped_inputs"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN


def test_an_empty_root_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match=r"FASHION_DF2_ROOT=.*holds no DeepFashion2 annotations"):
        dg.materialize(
            [assets.deepfashion2_annotations],
            resources={"paths": DataPathsResource(data_dir=str(tmp_path), df2_root=str(tmp_path / "empty"))},
        )


def test_rerun_replaces_outputs_and_keeps_them_on_failure(tmp_path: Path, tiny_dataset: DataPaths) -> None:
    """An interrupted run leaves the last good crops in place."""
    resources = {"paths": DataPathsResource(data_dir=str(tmp_path), df2_root=str(tiny_dataset.deepfashion2_sample))}
    dg.materialize([assets.deepfashion2_annotations, assets.garment_items, assets.garment_crops], resources=resources)
    data = DataPaths(root=tmp_path)
    before = pd.read_parquet(data.crops_manifest)
    pd.DataFrame({"broken": [1]}).to_parquet(data.garment_items)  # the next crops run will fail midway
    result = dg.materialize([assets.garment_crops], resources=resources, raise_on_error=False)
    assert not result.success
    pd.testing.assert_frame_equal(pd.read_parquet(data.crops_manifest), before)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".crops")]  # no temp folder left behind
