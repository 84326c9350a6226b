"""The generated DeepFashion2 sample: official layout and keys, valid geometry, pairs, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fashion_pipeline.lib.common.categories import DF2_CATEGORY_NAMES
from fashion_pipeline.lib.common.images import load_image
from fashion_pipeline.lib.samples.deepfashion2_sample import generate_sample

ITEM_KEYS = {
    "category_id",
    "category_name",
    "style",
    "bounding_box",
    "segmentation",
    "landmarks",
    "scale",
    "occlusion",
    "zoom_in",
    "viewpoint",
}
# DeepFashion2's landmark count per category_id.
LANDMARKS = {1: 25, 2: 33, 3: 31, 4: 39, 5: 15, 6: 15, 7: 10, 8: 14, 9: 8, 10: 29, 11: 37, 12: 19, 13: 19}


def _annotations(root: Path, split: str) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((root / split / "annos").glob("*.json"))}


def _items(annotation: dict) -> list[dict]:
    return [value for key, value in annotation.items() if key.startswith("item")]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("synthetic") / "deepfashion2_sample"
    return root, generate_sample(root, n_images=60, seed=3)


def test_official_layout_and_numbering(sample) -> None:
    root, summary = sample
    assert sorted(p.name for p in root.iterdir()) == ["train", "validation"]
    for split, expected in (("train", 48), ("validation", 12)):
        images = sorted(p.name for p in (root / split / "image").iterdir())
        annos = sorted(p.name for p in (root / split / "annos").iterdir())
        assert images == [f"{i:06d}.jpg" for i in range(1, expected + 1)]
        assert annos == [f"{i:06d}.json" for i in range(1, expected + 1)]
        assert sum(summary.images[split].values()) == expected
    assert summary.total_images == 60
    assert not list(root.parent.glob(".*tmp")), "the temporary folder is left behind"


def test_json_has_exactly_the_official_keys_and_names(sample) -> None:
    root, _ = sample
    for split in ("train", "validation"):
        for name, annotation in _annotations(root, split).items():
            items = _items(annotation)
            assert items, f"{split}/{name} has no item"
            assert set(annotation) == {"source", "pair_id"} | {f"item{i}" for i in range(1, len(items) + 1)}
            assert annotation["source"] in ("user", "shop")
            assert isinstance(annotation["pair_id"], int)
            for item in items:
                assert set(item) == ITEM_KEYS
                assert item["category_name"] == DF2_CATEGORY_NAMES[item["category_id"]]
                assert len(item["landmarks"]) == 3 * LANDMARKS[item["category_id"]]
                assert set(item["landmarks"][2::3]) <= {0, 1, 2}
                assert item["scale"] in (1, 2, 3) and item["occlusion"] in (1, 2, 3)
                assert item["zoom_in"] in (1, 2, 3) and item["viewpoint"] in (1, 2, 3)
                assert item["segmentation"] and all(len(p) >= 6 and len(p) % 2 == 0 for p in item["segmentation"])
            if annotation["source"] == "shop":
                assert len(items) == 1 and items[0]["style"] > 0 and items[0]["viewpoint"] == 1
            else:
                assert all(item["viewpoint"] in (2, 3) for item in items)


def test_boxes_and_landmarks_lie_inside_the_decoded_image(sample) -> None:
    root, _ = sample
    for split in ("train", "validation"):
        for name, annotation in _annotations(root, split).items():
            width, height = load_image(root / split / "image" / f"{name}.jpg").size
            for item in _items(annotation):
                x1, y1, x2, y2 = item["bounding_box"]
                assert all(isinstance(v, int) for v in item["bounding_box"])
                assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (split, name, item["bounding_box"])
                marks = item["landmarks"]
                for x, y, v in zip(marks[0::3], marks[1::3], marks[2::3], strict=True):
                    assert (x, y) == (0, 0) if v == 0 else (0 <= x < width and 0 <= y < height)


def test_every_category_in_both_sources(sample) -> None:
    root, summary = sample
    seen: dict[str, set[int]] = {"user": set(), "shop": set()}
    for split in ("train", "validation"):
        for annotation in _annotations(root, split).values():
            seen[annotation["source"]] |= {item["category_id"] for item in _items(annotation)}
    assert seen["shop"] == set(LANDMARKS)
    assert seen["user"] == set(LANDMARKS)
    assert set(summary.items_per_category) == set(LANDMARKS)
    assert summary.images["train"]["user"] > 0 and summary.images["train"]["shop"] > 0


def test_user_products_have_their_shop_photo_in_the_same_split(sample) -> None:
    root, summary = sample
    pair_ids = {}
    for split in ("train", "validation"):
        annotations = list(_annotations(root, split).values())
        pair_ids[split] = {a["pair_id"] for a in annotations}
        assert len(pair_ids[split]) == summary.pairs[split]
        in_shop = {
            (a["pair_id"], i["style"], i["category_id"])
            for a in annotations
            if a["source"] == "shop"
            for i in _items(a)
        }
        worn = {
            (a["pair_id"], i["style"], i["category_id"])
            for a in annotations
            if a["source"] == "user"
            for i in _items(a)
            if i["style"] > 0
        }
        assert worn, f"no matchable user item in {split}"
        assert worn <= in_shop, f"user products without a shop photo: {sorted(worn - in_shop)}"
    assert not pair_ids["train"] & pair_ids["validation"]


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    generate_sample(tmp_path / "a", n_images=8, seed=11, image_size=128)
    generate_sample(tmp_path / "b", n_images=8, seed=11, image_size=128)
    generate_sample(tmp_path / "c", n_images=8, seed=12, image_size=128)
    first, again, other = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(first) == 16
    assert first == again
    assert set(first) == set(other) and all(first[name] != other[name] for name in first)


def test_regenerating_replaces_the_old_sample(tmp_path: Path) -> None:
    root = tmp_path / "sample"
    generate_sample(root, n_images=10, seed=0, image_size=96)
    summary = generate_sample(root, n_images=5, seed=0, validation_fraction=0.0, image_size=96)
    assert summary.images["validation"] == {"user": 0, "shop": 0}
    assert len(list((root / "train" / "image").glob("*.jpg"))) == 5
    assert not list((root / "validation" / "image").glob("*.jpg"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_images": 0}, "n_images"), ({"n_images": 5, "validation_fraction": 1.0}, "validation_fraction")],
)
def test_bad_settings_are_refused(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_sample(tmp_path / "sample", **kwargs)
    assert not (tmp_path / "sample").exists()
