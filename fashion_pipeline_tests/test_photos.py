"""Labelled photo sources: the sources file, the table of labelled garments with its counts, the photos in
garment_crops and yolo_dataset, and the check that no test photo reaches training (with a planted leak)."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from fashion_pipeline.defs.deepfashion2 import assets as df2_assets
from fashion_pipeline.defs.photos import assets as photo_assets
from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.photos.reader import PHOTO_COLUMNS, read_sources, validation_share
from fashion_pipeline.lib.photos.sources import PhotoSourcesError, load_sources
from fashion_pipeline.lib.photos.training_rows import find_test_leaks

REPO = Path(__file__).resolve().parents[1]


def _photo(path: Path, seed: int, size: tuple[int, int] = (64, 48)) -> None:
    """A small JPEG with its own bytes (noise from `seed`), so every photo has its own sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _yolo(folder: Path, stem: str, seed: int, lines: list[str] | None) -> None:
    _photo(folder / "images" / f"{stem}.jpg", seed)
    if lines is not None:
        (folder / "labels").mkdir(parents=True, exist_ok=True)
        (folder / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")


STREET_IDS = [f"s{i}" for i in range(10)]


def _make_sources(root: Path) -> Path:
    """Three sources of each format, with one of each kind of bad input, and the YAML describing them."""
    shop = root / "shop"  # class folders; the mapping sends hat nowhere and does not know cape
    seed = 0
    for split, labels in {
        "train": {"tee": 3, "jeans": 2, "hat": 1, "cape": 1},
        "validation": {"tee": 1, "jeans": 1},
        "test": {"tee": 1, "jeans": 1},
    }.items():
        for label, n in labels.items():
            for i in range(n):
                seed += 1
                _photo(shop / split / label / f"{split}-{label}-{i}.jpg", seed)
    (shop / "train" / "tee" / "broken.jpg").write_bytes(b"not a jpeg")
    (shop / "mapping.csv").write_text("class10,target5\ntee,shirt\njeans,short\nhat,\n")

    street = root / "street"  # YOLO: class 0 jacket -> outwear, 1 hat -> nothing, 2 dress -> dress
    for i, stem in enumerate(STREET_IDS):
        lines = ["0 0.5 0.5 0.5 0.5", "1 0.2 0.2 0.1 0.1"] if i % 2 else ["2 0.5 0.5 0.8 0.9"]
        _yolo(street / "trainval", stem, 100 + i, None if stem == "s9" else lines)
    (street / "trainval" / "labels" / "s3.txt").write_text("0 0.5 0.5 0.5 0.5\n0 0.5 oops\n")
    (street / "trainval" / "ids.txt").write_text("\n".join([*STREET_IDS, "s99"]) + "\n")
    _yolo(street / "test", "q1", 200, ["0 0.5 0.5 0.6 0.6"])
    _yolo(street / "test", "q2", 201, ["2 0.5 0.5 0.4 0.4", "1 0.1 0.1 0.1 0.1"])
    (street / "test" / "ids.txt").write_text("q1\nq2\n")
    (street / "classes.csv").write_text("source_class_id,target5\n0,outwear\n1,\n2,dress\n")

    catalogue = root / "catalogue"  # one CSV with a split column; labels are the categories themselves
    for i in range(4):
        _photo(catalogue / f"c{i}.jpg", 300 + i)
    (catalogue / "labels.csv").write_text(
        "image,label,split\nc0.jpg,skirt,train\nc1.jpg,dress,validation\nc2.jpg,skirt,test\n"
        "c3.jpg,skirt,holdout\ngone.jpg,skirt,train\n"
    )

    sources = {
        "sources": [
            {
                "name": "shop",
                "task": "classifier",
                "format": "class_folders",
                "mapping": "shop/mapping.csv",
                "splits": {s: {"folder": f"shop/{s}"} for s in ("train", "validation", "test")},
            },
            {
                "name": "street",
                "task": "detector",
                "format": "yolo",
                "mapping": "${STREET_ROOT}/classes.csv",
                "validation_fraction": 0.3,
                "splits": {
                    "trainval": {"folder": "street/trainval", "ids": "street/trainval/ids.txt"},
                    "test": {"folder": "street/test", "ids": "street/test/ids.txt"},
                },
            },
            {"name": "catalogue", "task": "classifier", "format": "csv", "csv": "catalogue/labels.csv"},
        ]
    }
    path = root / "sources.yaml"
    path.write_text(yaml.safe_dump(sources, sort_keys=False))
    return path


@pytest.fixture
def sources_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STREET_ROOT", str(tmp_path / "photos" / "street"))
    return _make_sources(tmp_path / "photos")


def _street_split(stem: str) -> str:
    return "validation" if validation_share(stem) < 0.3 else "train"


def test_labelled_sources_counts_per_source_split_and_category(sources_file: Path) -> None:
    table, reports = read_sources(load_sources(sources_file))
    assert list(table.columns) == PHOTO_COLUMNS
    counts = table.groupby(["photo_source", "split", "category"]).size().to_dict()

    street_boxes: dict[tuple[str, str, str], int] = {}
    for i, stem in enumerate(STREET_IDS[:9]):  # s9 has no label file
        key = ("street", _street_split(stem), "outwear" if i % 2 else "dress")
        street_boxes[key] = street_boxes.get(key, 0) + 1
    assert counts == {
        ("shop", "train", "shirt"): 3,
        ("shop", "train", "short"): 2,
        ("shop", "validation", "shirt"): 1,
        ("shop", "validation", "short"): 1,
        ("shop", "test", "shirt"): 1,
        ("shop", "test", "short"): 1,
        ("catalogue", "train", "skirt"): 1,
        ("catalogue", "validation", "dress"): 1,
        ("catalogue", "test", "skirt"): 1,
        ("street", "test", "outwear"): 1,
        ("street", "test", "dress"): 1,
        **street_boxes,
    }
    assert dict(reports["shop"].skipped) == {"outside_categories": 1, "unknown_label": 1, "unreadable_image": 1}
    assert dict(reports["street"].skipped) == {
        "outside_categories": 4,  # the hat boxes of s1, s5, s7 and q2 (s3's labels were rewritten)
        "malformed_label_line": 1,
        "no_label_file": 1,
        "missing_image": 1,  # s99 is listed but has no image
    }
    assert dict(reports["catalogue"].skipped) == {"unknown_split": 1, "missing_image": 1}
    assert reports["street"].photos == 11 and reports["shop"].photos == 9
    assert any("s99" in e for e in reports["street"].examples["missing_image"])

    shop_train = table[(table["photo_source"] == "shop") & (table["split"] == "train")]
    assert (shop_train[["x1", "y1", "x2", "y2"]].to_numpy() == [0, 0, 64, 48]).all()  # the whole photo
    s0 = table[table["image_id"] == "street/s0"].iloc[0]
    assert (s0.x1, s0.y1, s0.x2, s0.y2) == pytest.approx((6.4, 2.4, 57.6, 45.6))
    assert all(i.startswith(f"{s}/") for s, i in zip(table["photo_source"], table["image_id"], strict=True))


def test_a_trainval_photo_keeps_its_split_and_the_fraction_holds() -> None:
    shares = np.array([validation_share(f"photo-{i}") for i in range(4000)])
    assert 0.08 < (shares < 0.1).mean() < 0.12
    assert validation_share("photo-17") == validation_share("photo-17")  # a hash of the id, not a draw


def test_the_sources_file_expands_variables_and_names_what_is_wrong(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sub" / "train" / "shirt").mkdir(parents=True)
    good = {"name": "a", "task": "classifier", "format": "class_folders", "splits": {"train": {"folder": "sub/train"}}}
    path = tmp_path / "s.yaml"

    path.write_text(yaml.safe_dump({"sources": [good]}))
    (source,) = load_sources(path)
    assert source.splits[0].folder == tmp_path / "sub" / "train"  # relative to the YAML file
    assert source.crops is True and source.mapping is None

    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with_variable = {**good, "splits": {"train": {"folder": "${NOT_SET_ANYWHERE}/train"}}}
    path.write_text(yaml.safe_dump({"sources": [with_variable]}))
    with pytest.raises(PhotoSourcesError, match=r"uses \$\{NOT_SET_ANYWHERE\}, which is not set"):
        load_sources(path)
    monkeypatch.setenv("NOT_SET_ANYWHERE", str(tmp_path / "sub"))
    assert load_sources(path)[0].splits[0].folder == tmp_path / "sub" / "train"

    for bad, message in [
        ({**good, "task": "detector"}, "task/format"),
        ({**good, "splits": {"training": {"folder": "sub"}}}, "unknown split"),
        ({**good, "splits": {"train": {"folder": "nowhere"}}}, "folder .*nowhere does not exist"),
        ({**good, "validation_fraction": 0.1}, "needs a trainval split"),
        ({**good, "name": "deepfashion2"}, "name 'deepfashion2'"),
        ({**good, "crop": False}, r"unknown keys \['crop'\]"),
    ]:
        path.write_text(yaml.safe_dump({"sources": [bad]}))
        with pytest.raises(PhotoSourcesError, match=message):
            load_sources(path)


def _materialize(data_root: Path, sources_file: Path, df2_root: Path | None = None, raise_on_error: bool = True):
    selection = [photo_assets.labelled_photos, df2_assets.garment_crops, df2_assets.yolo_dataset]
    include_df2 = df2_root is not None
    if include_df2:
        selection = [df2_assets.deepfashion2_annotations, df2_assets.garment_items, *selection]
    return dg.materialize(
        selection,
        resources={"paths": DataPathsResource(data_dir=str(data_root), df2_root=str(df2_root or ""))},
        run_config={
            "ops": {
                "labelled_photos": {"config": {"sources_file": str(sources_file)}},
                "garment_crops": {"config": {"include_deepfashion2": include_df2}},
                "yolo_dataset": {"config": {"include_deepfashion2": include_df2}},
            }
        },
        raise_on_error=raise_on_error,
    )


def _check(result, asset: str, name: str) -> dg.AssetCheckEvaluation:
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == name and c.asset_key.path == [asset]]
    return check


def test_crops_and_yolo_take_deepfashion2_and_the_photos_but_no_test_photo(
    tmp_path: Path, sources_file: Path, tiny_dataset: DataPaths
) -> None:
    result = _materialize(tmp_path / "data", sources_file, df2_root=tiny_dataset.deepfashion2_sample)
    data = DataPaths(root=tmp_path / "data")
    photos = pd.read_parquet(data.labelled_photos)
    manifest = pd.read_parquet(data.crops_manifest)
    by_source = manifest.groupby(["photo_source", "split"]).size().to_dict()
    street_rows = photos[(photos["photo_source"] == "street") & (photos["split"] != "test")]
    expected_street = street_rows.groupby("split").size().to_dict()  # every box of a detector photo is cropped
    assert {k: v for k, v in by_source.items() if k[0] != "deepfashion2"} == {
        ("shop", "train"): 5,
        ("shop", "validation"): 2,
        ("catalogue", "train"): 1,
        ("catalogue", "validation"): 1,
        **{("street", split): n for split, n in expected_street.items()},
    }
    df2_items = pd.read_parquet(tiny_dataset.garment_items)
    big = ((df2_items["x2"] - df2_items["x1"]) >= 24) & ((df2_items["y2"] - df2_items["y1"]) >= 24)
    assert by_source[("deepfashion2", "train")] + by_source[("deepfashion2", "validation")] == int(big.sum())
    assert not set(photos.loc[photos["split"] == "test", "image_id"]) & set(manifest["image_id"])

    yolo = pd.read_parquet(data.yolo_manifest)
    yolo_photos = yolo[yolo["photo_source"] != "deepfashion2"]
    assert set(yolo_photos["photo_source"]) == {"street"}  # classifier photos have no boxes to detect
    assert sorted(yolo_photos["image_file"].unique()) == sorted(
        f"street__{s}.jpg" for s in STREET_IDS[:9]
    )  # s9 has no label file; q1 and q2 are test photos
    for image_file in yolo_photos["image_file"].unique():
        split = "val" if _street_split(image_file[len("street__") : -4]) == "validation" else "train"
        assert (data.yolo_dir / "images" / split / image_file).is_file()
        assert (data.yolo_dir / "labels" / split / image_file.replace(".jpg", ".txt")).is_file()
    for asset in ("garment_crops", "yolo_dataset"):
        check = _check(result, asset, "no_test_photos")
        assert check.passed and check.metadata["leaked"].value == 0
        assert check.metadata["test_photos"].value == 5  # shop 2, street 2, catalogue 1


def test_no_test_photos_fails_on_a_planted_leak(tmp_path: Path, sources_file: Path) -> None:
    photos = sources_file.parent
    # A test photo copied into the classifier's train folder under another name: only its bytes give it away.
    shutil.copy(photos / "shop/test/tee/test-tee-0.jpg", photos / "shop/train/tee/renamed.jpg")
    # A test photo with its labels copied into the detector's trainval folder and listed there.
    for sub, suffix in (("images", ".jpg"), ("labels", ".txt")):
        shutil.copy(photos / f"street/test/{sub}/q1{suffix}", photos / f"street/trainval/{sub}/q1{suffix}")
    with (photos / "street/trainval/ids.txt").open("a") as ids:
        ids.write("q1\n")

    result = _materialize(tmp_path / "data", sources_file, raise_on_error=False)
    crops_check = _check(result, "garment_crops", "no_test_photos")
    assert not crops_check.passed
    leaks = {
        leak["test_photo"]: (leak["match"], leak["training_image"]) for leak in crops_check.metadata["leaks"].value
    }
    assert leaks == {"shop/test-tee-0": ("same bytes", "shop/renamed"), "street/q1": ("same id", "street/q1")}
    yolo_check = _check(result, "yolo_dataset", "no_test_photos")
    assert not yolo_check.passed
    assert [leak["test_photo"] for leak in yolo_check.metadata["leaks"].value] == ["street/q1"]


def test_without_sources_the_table_is_empty_and_says_why(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FASHION_PHOTO_SOURCES", raising=False)
    result = dg.materialize(
        [photo_assets.labelled_photos], resources={"paths": DataPathsResource(data_dir=str(tmp_path), df2_root="")}
    )
    metadata = result.asset_materializations_for_node("labelled_photos")[0].metadata
    assert "FASHION_PHOTO_SOURCES unset" in metadata["sources_file"].value
    table = pd.read_parquet(DataPaths(root=tmp_path).labelled_photos)
    assert list(table.columns) == PHOTO_COLUMNS and table.empty


def test_real_labelled_photos(real_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """photo_sources/real.yaml on the staged real photos: SOURCES.md's counts, and no test photo in training."""
    monkeypatch.setenv("FASHION_REAL_PHOTOS", str(real_data))
    table, reports = read_sources(load_sources(REPO / "photo_sources" / "real.yaml"))
    photos = table.drop_duplicates(["photo_source", "split", "image_id"])
    per_split = photos.groupby(["photo_source", "split"]).size().to_dict()
    clothing = table[table["photo_source"] == "clothing-dataset-small"]
    assert clothing.groupby(["split", "category"]).size().to_dict() == {
        **{("train", c): n for c, n in dict(shirt=1540, short=670, outwear=184, dress=241, skirt=112).items()},
        **{("validation", c): n for c, n in dict(shirt=159, short=74, outwear=24, dress=32, skirt=12).items()},
        **{("test", c): n for c, n in dict(shirt=150, short=72, outwear=38, dress=15, skirt=12).items()},
    }
    assert reports["clothing-dataset-small"].skipped == {}
    # 2,145 trainval photos split about 90/10 by id hash; 200 test photos, one of them with only shoes and bags.
    train, validation = per_split[("colorful-fashion", "train")], per_split[("colorful-fashion", "validation")]
    assert train + validation == 2_145 and 0.08 < validation / 2_145 < 0.12
    assert per_split[("colorful-fashion", "test")] + reports["colorful-fashion"].skipped["no_garment_boxes"] == 200
    street_test = table[(table["photo_source"] == "colorful-fashion") & (table["split"] == "test")]
    assert street_test.groupby("label").size().to_dict() == {"2": 65, "3": 135, "4": 42, "5": 41, "6": 66, "7": 50}
    trained = table[table["split"] != "test"]
    assert find_test_leaks(table, trained) == []


def test_the_photos_stage_is_defined_and_its_leak_checks_block() -> None:
    from fashion_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey("labelled_photos"))
    assert node.group_name == "photos" and node.description
    for asset in ("garment_crops", "yolo_dataset"):
        assert dg.AssetKey("labelled_photos") in graph.get(dg.AssetKey(asset)).parent_keys
    for asset in (df2_assets.garment_crops, df2_assets.yolo_dataset):
        (spec,) = [spec for spec in asset.check_specs if spec.name == "no_test_photos"]
        assert spec.blocking
