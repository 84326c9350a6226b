"""The image store: files named by their bytes' SHA-256, written once, reused by recrawls, and collected
once no catalog row has referenced them for the retention time."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd

from fashion_pipeline.crawl.runner import crawl_site
from fashion_pipeline.defs.catalog.assets import product_catalog
from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.lib.catalog.catalog import RAW_PRODUCTS_FILE, read_raw_products
from fashion_pipeline.lib.catalog.image_store import (
    REFERENCES_FILE,
    collect_garbage,
    content_path,
    store_bytes,
    store_dir,
)
from fashion_pipeline.lib.catalog.sites import load_sites
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.samples.demo_shop_site import serve_directory
from fashion_pipeline_tests.fixtures_catalog import FAST_CRAWL_SETTINGS, faulty_shop_handler, require_chromium

NOW = datetime(2025, 6, 10, 3, 0, tzinfo=UTC)


def _store_files(data: DataPaths) -> dict[str, tuple[int, int]]:
    """Store file -> (size, inode): a rewrite in place would change neither name nor size, but the inode."""
    store = store_dir(data.catalog_images_dir)
    return {str(p.relative_to(store)): (p.stat().st_size, p.stat().st_ino) for p in store.rglob("*.jpg")}


def test_a_daily_recrawl_of_the_demo_shop_adds_no_image_bytes(small_demo_shop, tmp_path):
    require_chromium()
    data = DataPaths(root=tmp_path / "data")
    site = load_sites()["demo_shop"]

    def crawl(**settings: str):
        handler = faulty_shop_handler({})  # no faults: it only counts the requests
        with serve_directory(small_demo_shop.root, handler) as base_url:  # another port every day
            report = crawl_site(
                site, data, spider_args={"base_url": base_url}, settings={**FAST_CRAWL_SETTINGS, **settings}
            )
        return report, sum(n for path, n in handler.requests.items() if path.startswith("/img/"))

    first, first_images = crawl()
    stored = _store_files(data)
    rows = read_raw_products(data.catalog_raw_dir / "demo_shop" / RAW_PRODUCTS_FILE)
    assert first.image_bytes_written == sum(size for size, _ in stored.values()) > 0
    assert len(stored) == len(rows) == first.scraped and first_images == first.scraped + 1  # + the dead link
    for image_path in rows["image_path"]:
        # Relative to the data root, named by the SHA-256 of the bytes the shop served.
        assert image_path.startswith("catalog/images/sha256/") and not Path(image_path).is_absolute()
        assert image_path.endswith(content_path((data.root / image_path).read_bytes()))

    second, second_images = crawl()
    assert (second.image_bytes_written, second_images) == (0, 1)  # reused; only the dead link is asked again
    assert _store_files(data) == stored

    # Past IMAGES_EXPIRES every image is fetched again: the same bytes land on the same files, untouched.
    third, third_images = crawl(IMAGES_EXPIRES="0")
    assert third_images == first_images and third.image_bytes_written == 0
    assert _store_files(data) == stored
    again = read_raw_products(data.catalog_raw_dir / "demo_shop" / RAW_PRODUCTS_FILE)
    assert dict(zip(again["product_id"], again["image_path"], strict=True)) == dict(
        zip(rows["product_id"], rows["image_path"], strict=True)
    )


def test_the_same_bytes_are_one_file_written_once(tmp_path):
    photo = b"\xff\xd8\xff" + os.urandom(2000)
    path = content_path(photo)
    assert path == f"{hashlib.sha256(photo).hexdigest()[:2]}/{hashlib.sha256(photo).hexdigest()}.jpg"
    assert store_bytes(tmp_path, path, photo) is True
    inode = (tmp_path / path).stat().st_ino
    assert store_bytes(tmp_path, path, photo) is False  # a second URL with the same photo
    assert (tmp_path / path).stat().st_ino == inode and (tmp_path / path).read_bytes() == photo
    assert [p.name for p in tmp_path.rglob("*")] == [path.split("/")[0], path.split("/")[1]]  # no temp files


def _file(path: Path, size: int, age: timedelta) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = (NOW - age).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def test_garbage_collection_keeps_what_rows_reference_and_what_is_new(tmp_path):
    images = tmp_path / "catalog" / "images"
    referenced = _file(images / "sha256" / "aa" / "aa1.jpg", 100, timedelta(days=40))
    orphan = _file(images / "sha256" / "bb" / "bb2.jpg", 250, timedelta(days=8))
    fresh = _file(images / "sha256" / "cc" / "cc3.jpg", 70, timedelta(hours=1))  # a crawl just wrote it
    old_layout = _file(images / "demo_shop" / "full" / "0a.jpg", 30, timedelta(days=90))
    failures = _file(images / "demo_shop" / "image_failures.json", 10, timedelta(days=90))
    rows = ["catalog/images/sha256/aa/aa1.jpg", None, ""]

    report = collect_garbage(images, tmp_path, rows, retention_days=7, now=NOW)
    assert (report.files_deleted, report.bytes_freed, report.files_kept, report.bytes_kept) == (2, 280, 2, 170)
    assert referenced.exists() and fresh.exists() and failures.exists()
    assert not orphan.exists() and not old_layout.exists()

    # Ten days on with no references: the first file was last referenced 10 days ago, the new one is as old.
    ledger = pd.read_parquet(images / REFERENCES_FILE).set_index("path")["last_referenced"]
    assert ledger["catalog/images/sha256/aa/aa1.jpg"] == pd.Timestamp(NOW)
    later = collect_garbage(images, tmp_path, [], retention_days=7, now=NOW + timedelta(days=10))
    assert (later.files_deleted, later.bytes_freed) == (2, 170)  # aa1 (referenced 10 days ago) and cc3
    assert not referenced.exists()


def test_product_catalog_collects_unreferenced_images(tmp_path):
    data = DataPaths(root=tmp_path / "data")
    store = store_dir(data.catalog_images_dir)
    kept = _file(store / "aa" / "aa1.jpg", 100, timedelta(days=30))
    orphan = _file(store / "bb" / "bb2.jpg", 250, timedelta(days=30))
    row = {
        "product_id": "demo_shop:1",
        "site": "demo_shop",
        "sku": "1",
        "name": "Red Dress",
        "url": "http://127.0.0.1:8000/demo-shop/p/1.html",
        "image_url": "http://127.0.0.1:8000/demo-shop/img/1.jpg",
        "image_path": str(kept.relative_to(data.root)),
        "price": 10.0,
        "currency": "USD",
        "price_usd": 10.0,
        "category": "dress",
        "crawled_at": "2025-06-01T03:00:00+00:00",
    }
    (data.catalog_raw_dir / "demo_shop").mkdir(parents=True)
    (data.catalog_raw_dir / "demo_shop" / RAW_PRODUCTS_FILE).write_text(json.dumps(row) + "\n")
    result = dg.materialize(
        [product_catalog],
        resources={"paths": DataPathsResource(data_dir=str(data.root), df2_root="")},
        run_config={"ops": {"product_catalog": {"config": {"image_retention_days": 7}}}},
    )
    (materialization,) = result.asset_materializations_for_node("product_catalog")
    assert materialization.metadata["image_bytes_freed"].value == 250
    assert kept.exists() and not orphan.exists()
    assert all(check.passed for check in result.get_asset_check_evaluations())  # image_files_exist included
