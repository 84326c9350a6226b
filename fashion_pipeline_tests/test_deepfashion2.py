"""The DeepFashion2 merge, 13 -> 5 remap, crops and YOLO labels on hand-built annotations."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from fashion_pipeline.lib.common.categories import CATEGORIES, CATEGORY_MAP, load_category_map
from fashion_pipeline.lib.deepfashion2 import crops, reader, yolo_format


def _item(category_id: int, box: list[float], style: int = 1) -> dict:
    return {
        "category_id": category_id,
        "category_name": CATEGORY_MAP.names.get(category_id, "mystery"),
        "style": style,
        "bounding_box": box,
        "segmentation": [[box[0], box[1], box[2], box[1], box[2], box[3]]],
        "landmarks": [0, 0, 0],
        "scale": 2,
        "occlusion": 1,
        "zoom_in": 1,
        "viewpoint": 2,
    }


def _write(root: Path, split: str, stem: str, record: dict | str, size: tuple[int, int] | None = (200, 100)) -> None:
    (root / split / "annos").mkdir(parents=True, exist_ok=True)
    (root / split / "image").mkdir(parents=True, exist_ok=True)
    text = record if isinstance(record, str) else json.dumps(record)
    (root / split / "annos" / f"{stem}.json").write_text(text)
    if size:
        Image.new("RGB", size, (120, 80, 40)).save(root / split / "image" / f"{stem}.jpg")


@pytest.fixture
def hand_built_root(tmp_path: Path) -> Path:
    root = tmp_path / "df2"
    _write(
        root,
        "train",
        "000001",
        {
            "source": "user",
            "pair_id": 1,
            "item1": _item(1, [10, 10, 60, 90]),
            "item2": _item(8, [20, 40, 120, 100], style=0),
        },
    )
    _write(root, "train", "000002", {"source": "shop", "pair_id": 1, "item1": _item(1, [0, 0, 200, 100])})
    _write(root, "train", "000003", "{not json")  # malformed
    _write(root, "train", "000004", {"source": "user", "pair_id": 2, "item1": _item(9, [1, 1, 5, 5])}, size=None)
    _write(
        root,
        "validation",
        "000001",
        {
            "source": "user",
            "pair_id": 3,
            "item1": _item(11, [5, 5, 50, 95]),
            "item2": _item(3, [150, 10, 250, 90]),  # outside the 200 px width
            "item3": _item(7, [30, 30, 30, 60]),  # zero area
            "item4": _item(14, [10, 10, 20, 20]),
        },
    )  # unknown category
    return root


def test_merge_keeps_good_items_exactly(hand_built_root: Path) -> None:
    df, report = reader.read_deepfashion2(hand_built_root)
    assert list(df.columns) == reader.ANNOTATION_COLUMNS
    rows = (
        df.sort_values(["split", "image_id", "item_index"])[
            ["split", "image_id", "item_index", "source", "pair_id", "category_id", "style", "x1", "y2", "image_width"]
        ]
        .astype({"split": str, "source": str})
        .values.tolist()
    )
    assert rows == [
        ["train", "000001", 1, "user", 1, 1, 1, 10.0, 90.0, 200],
        ["train", "000001", 2, "user", 1, 8, 0, 20.0, 100.0, 200],
        ["train", "000002", 1, "shop", 1, 1, 1, 0.0, 100.0, 200],
        ["validation", "000001", 1, "user", 3, 11, 1, 5.0, 95.0, 200],
    ]
    assert report.files_read == 5
    assert dict(report.skipped) == {
        "malformed_json": 1,
        "missing_image": 1,
        "box_outside_image": 1,
        "box_zero_area": 1,
        "unknown_category": 1,
    }
    assert report.skipped_fraction == pytest.approx(5 / 9)


def test_missing_or_empty_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(reader.DeepFashion2RootError, match=r"FASHION_DF2_ROOT=.*does not exist"):
        reader.read_deepfashion2(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(reader.DeepFashion2RootError, match=r"FASHION_DF2_ROOT=.*holds no DeepFashion2"):
        reader.read_deepfashion2(tmp_path / "empty")
    (tmp_path / "noanno" / "train" / "annos").mkdir(parents=True)
    with pytest.raises(reader.DeepFashion2RootError, match="no JSON files"):
        reader.read_deepfashion2(tmp_path / "noanno")


def test_parallel_merge_equals_serial(hand_built_root: Path, monkeypatch) -> None:
    for i in range(5, 25):
        _write(hand_built_root, "train", f"{i:06d}", {"source": "shop", "pair_id": i, "item1": _item(2, [1, 1, 9, 9])})
    serial, serial_report = reader.read_deepfashion2(hand_built_root, workers=1)
    monkeypatch.setattr(reader, "_PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(reader, "_CHUNK_FILES", 4)
    parallel, parallel_report = reader.read_deepfashion2(hand_built_root, workers=2)
    pd.testing.assert_frame_equal(serial, parallel)
    assert serial_report.skipped == parallel_report.skipped
    assert len(parallel) == 24


def test_coco_form_of_real_deepfashion2_maps_long_sleeve_dress_to_dress(real_data: Path) -> None:
    sample = real_data / "deepfashion2-mmpose-sample"
    df, report = reader.read_coco(sample / "deepfasion2.json", sample, split="validation")
    assert report.skipped_total == 0
    assert sorted(df["image_id"]) == ["000264", "000265"]
    assert set(df["category_id"]) == {11}
    assert set(df["category_name"].astype(str)) == {"long sleeve dress"}
    assert sorted(df["style"]) == [1, 2]
    assert set(df["pair_id"]) == {22}
    first = df[df["image_id"] == "000264"].iloc[0]
    assert (first.x1, first.y1, first.x2, first.y2) == (103, 80, 704, 749)  # bbox [x, y, w, h] -> corners
    assert (first.image_width, first.image_height) == (750, 750)
    items = reader.with_categories(df, CATEGORY_MAP.to_category)
    assert set(items["category"]) == {"dress"}


def test_coco_folder_is_found_by_read_deepfashion2(real_data: Path, tmp_path: Path) -> None:
    sample = real_data / "deepfashion2-mmpose-sample"
    root = tmp_path / "coco"
    (root / "validation" / "image").mkdir(parents=True)
    (root / "validation.json").write_bytes((sample / "deepfasion2.json").read_bytes())
    for name in ("000264.jpg", "000265.jpg"):
        (root / "validation" / "image" / name).write_bytes((sample / name).read_bytes())
    df, _ = reader.read_deepfashion2(root)
    assert len(df) == 2 and set(df["split"].astype(str)) == {"validation"}


def test_remap_covers_all_13_categories() -> None:
    mapping = load_category_map().to_category
    assert mapping == {
        1: "shirt", 2: "shirt", 3: "outwear", 4: "outwear", 5: "shirt", 6: "shirt", 7: "short",
        8: "short", 9: "skirt", 10: "dress", 11: "dress", 12: "dress", 13: "dress",
    }  # fmt: skip
    assert CATEGORIES == ("shirt", "outwear", "short", "skirt", "dress")


def test_category_yaml_rejects_an_unknown_target(tmp_path: Path) -> None:
    bad = tmp_path / "categories.yaml"
    bad.write_text("categories: [shirt]\nmapping:\n  1: {name: short sleeve top, category: hat}\n")
    with pytest.raises(ValueError, match="maps to 'hat'"):
        load_category_map(bad)


def _items_frame(rows: list[tuple]) -> pd.DataFrame:
    columns = ["split", "image_id", "item_index", "category", "category_id", "x1", "y1", "x2", "y2"]
    df = pd.DataFrame(rows, columns=columns)
    df["image_width"], df["image_height"] = 200, 100
    df["source"], df["pair_id"], df["style"] = "user", 1, 1
    return df


def test_balanced_selection_caps_each_class_and_drops_small_boxes() -> None:
    rows = [("train", f"{i:06d}", 1, "shirt", 1, 0, 0, 50, 50) for i in range(10)]
    rows += [("train", "000100", 1, "skirt", 9, 0, 0, 50, 50), ("train", "000101", 1, "skirt", 9, 0, 0, 5, 50)]
    rows += [("validation", f"{i:06d}", 1, "shirt", 1, 0, 0, 50, 50) for i in range(4)]
    settings = crops.CropSettings(train_cap=3, validation_cap=2, min_size=10)
    selected, left_out = crops.select_balanced(_items_frame(rows), settings)
    counts = selected.groupby(["split", "category"]).size().to_dict()
    assert counts == {("train", "shirt"): 3, ("train", "skirt"): 1, ("validation", "shirt"): 2}
    assert left_out == {"smaller_than_min_size": 1, "over_class_cap": 9}
    again, _ = crops.select_balanced(_items_frame(rows), settings)
    pd.testing.assert_frame_equal(selected, again)  # same seed, same subset


def test_crops_are_written_per_split_and_category(tmp_path: Path) -> None:
    image_path = tmp_path / "a.jpg"
    Image.new("RGB", (200, 100), "red").save(image_path)
    items = _items_frame(
        [("train", "000001", 1, "shirt", 1, 10, 10, 60, 90), ("train", "000001", 2, "short", 8, 100, 20, 200, 100)]
    )
    items["image_path"] = str(image_path)
    manifest, report = crops.write_crops(
        items, tmp_path / "tmp", crops.CropSettings(margin=0.1), final_dir=tmp_path / "crops"
    )
    assert report.written == 2
    assert list(manifest.columns) == crops.MANIFEST_COLUMNS
    assert manifest["crop_path"].tolist() == [
        str(tmp_path / "crops/train/shirt/000001_1.jpg"),
        str(tmp_path / "crops/train/short/000001_2.jpg"),
    ]
    # margin 10 % of the box on each side; the second box is clipped at the right and bottom edges
    assert (manifest["width"].tolist(), manifest["height"].tolist()) == ([60, 110], [96, 88])
    assert (tmp_path / "tmp/train/short/000001_2.jpg").is_file()


def test_yolo_labels_are_normalised_and_every_item_of_an_image_is_listed(tmp_path: Path) -> None:
    image_path = tmp_path / "img.jpg"
    Image.new("RGB", (200, 100)).save(image_path)
    items = _items_frame([("train", "000001", 1, "shirt", 1, 0, 0, 100, 50), ("train", "000001", 2, "dress", 11, 50, 25, 150, 100),
                          ("validation", "000002", 1, "skirt", 9, 0, 0, 200, 100)])  # fmt: skip
    items["image_path"] = str(image_path)
    selected = yolo_format.select_images(items, CATEGORIES, yolo_format.YoloSettings(per_class_cap=10))
    report = yolo_format.write_yolo_dataset(selected, tmp_path / "yolo", CATEGORIES)
    labels = (tmp_path / "yolo/labels/train/000001.txt").read_text().split("\n")
    assert labels[:2] == ["0 0.250000 0.250000 0.500000 0.500000", "4 0.500000 0.625000 0.500000 0.750000"]
    assert (tmp_path / "yolo/labels/val/000002.txt").read_text() == "3 0.500000 0.500000 1.000000 1.000000\n"
    assert dict(report.images) == {"train": 1, "val": 1}
    data = __import__("yaml").safe_load((tmp_path / "yolo/data.yaml").read_text())
    assert data["names"] == {0: "shirt", 1: "outwear", 2: "short", 3: "skirt", 4: "dress"}
    assert Path(data["train"]).is_absolute() and Path(data["train"]).is_dir()
    audit = yolo_format.audit_yolo_dataset(tmp_path / "yolo")
    assert (audit.images, audit.label_files, audit.boxes, audit.boxes_out_of_range) == (2, 2, 3, 0)


def test_yolo_subset_respects_the_per_class_cap() -> None:
    rows = [("train", f"{i:06d}", 1, "shirt", 1, 0, 0, 10, 10) for i in range(20)]
    rows += [("train", "000100", 1, "skirt", 9, 0, 0, 10, 10), ("train", "000100", 2, "shirt", 1, 0, 0, 10, 10)]
    selected = yolo_format.select_images(_items_frame(rows), CATEGORIES, yolo_format.YoloSettings(per_class_cap=5))
    counts = selected.groupby("category").size().to_dict()
    # the skirt image is taken for its skirt even if shirts are full, and carries its shirt along
    assert counts["skirt"] == 1 and 5 <= counts["shirt"] <= 6


def test_an_image_that_is_not_an_image_is_counted(tmp_path: Path) -> None:
    _write(tmp_path, "train", "000001", {"source": "user", "pair_id": 1, "item1": _item(1, [1, 1, 9, 9])}, size=None)
    (tmp_path / "train" / "image" / "000001.jpg").write_bytes(b"this is not a jpeg")
    _write(tmp_path, "train", "000002", {"source": "shop", "pair_id": 1, "item1": _item(1, [1, 1, 9, 9])})
    df, report = reader.read_deepfashion2(tmp_path)
    assert df["image_id"].tolist() == ["000002"]
    assert dict(report.skipped) == {"unreadable_image": 1}
