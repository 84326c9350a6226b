"""The catalog stage in Dagster, in-process on a tiny demo shop: crawl, images, merge, recrawl, automation."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from fashion_pipeline.defs.catalog import assets as catalog_assets
from fashion_pipeline.defs.catalog import defs as catalog_defs
from fashion_pipeline.defs.catalog.assets import catalog_images, catalog_raw, product_catalog
from fashion_pipeline.defs.catalog.schedules import daily_recrawl, report_failed_runs
from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.defs.retrieval import assets as retrieval_assets
from fashion_pipeline.defs.retrieval import loading as retrieval_loading
from fashion_pipeline.lib.catalog.catalog import CATALOG_COLUMNS
from fashion_pipeline.lib.common.atomic import write_parquet
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.samples.demo_shop import DemoShop, make_stand_in_items
from fashion_pipeline.lib.samples.demo_shop_site import serve_directory
from fashion_pipeline_tests.fixtures_catalog import faulty_shop_handler, require_chromium
from fashion_pipeline_tests.fixtures_retrieval import HistogramEmbedder, materialize_retrieval

CATALOG = dg.AssetKey("product_catalog")


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    (materialization,) = result.asset_materializations_for_node(node)
    return {key: value.value for key, value in materialization.metadata.items()}


def _crawl(resources: dict, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [catalog_raw, catalog_images], partition_key="demo_shop", resources=resources, instance=instance
    )
    assert result.success
    return result


def test_demo_shop_crawl_merge_and_recrawl(tmp_path):
    require_chromium()
    data = DataPaths(root=tmp_path / "data")
    items = make_stand_in_items(tmp_path / "photos", 10)
    write_parquet(items, data.garment_items)
    resources = {"paths": DataPathsResource(data_dir=str(data.root), df2_root="")}
    instance = dg.DagsterInstance.ephemeral()
    automation_defs = dg.Definitions(assets=[catalog_raw, catalog_images, product_catalog], resources=resources)
    before = dg.evaluate_automation_conditions(defs=automation_defs, instance=instance)
    assert before.total_requested == 0  # nothing crawled yet: nothing to merge

    crawl = _crawl(resources, instance)
    raw = _metadata(crawl, "catalog_raw")
    assert (raw["scraped"], raw["gone"]) == (9, 0)  # 10 products, one with a dead image link
    assert crawl.get_asset_check_evaluations()[0].passed  # every product accounted for
    images = _metadata(crawl, "catalog_images")
    assert (images["images"], images["dead_links"]) == (9, 1)

    # The catalog follows the crawl by itself (what the recrawl schedule relies on).
    after = dg.evaluate_automation_conditions(defs=automation_defs, instance=instance, cursor=before.cursor)
    assert after.get_num_requested(CATALOG) == 1 and after.total_requested == 1

    merged = dg.materialize([product_catalog], resources=resources, instance=instance)
    assert merged.success
    first = _metadata(merged, "product_catalog")
    assert (first["products"], first["new"], first["changed"], first["gone"]) == (9, 9, 0, 0)
    catalog = pd.read_parquet(data.products)
    assert list(catalog.columns) == list(CATALOG_COLUMNS)
    shop = DemoShop.load(data.demo_shop_dir)
    assert set(catalog["product_id"]) == {p.product_id for p in shop.expected_in_catalog}
    assert all(check.passed for check in merged.get_asset_check_evaluations())

    # The shop stopped selling one product: the first recrawl without it keeps it (stale), the second drops
    # it; the others keep their first_seen.
    removed = next(p for p in shop.products if not p.fault)
    write_parquet(items[items["pair_id"] != removed.pair_id], data.garment_items)
    _crawl(resources, instance)
    again = dg.materialize([product_catalog], resources=resources, instance=instance)
    second = _metadata(again, "product_catalog")
    assert (second["products"], second["stale"], second["gone"]) == (9, 1, 0)
    missed = pd.read_parquet(data.products).set_index("product_id").loc[removed.product_id]
    assert (missed["status"], missed["stale_reason"]) == ("stale", "not listed (1 of 2 crawls before it is gone)")
    _crawl(resources, instance)
    third = _metadata(dg.materialize([product_catalog], resources=resources, instance=instance), "product_catalog")
    assert (third["products"], third["new"], third["changed"], third["gone"]) == (8, 0, 0, 1)
    recrawled = pd.read_parquet(data.products).set_index("product_id")
    kept = catalog.set_index("product_id").drop(index=removed.product_id)
    assert removed.product_id not in recrawled.index
    assert (recrawled.loc[kept.index, "first_seen"] == kept["first_seen"]).all()
    assert (recrawled.loc[kept.index, "last_seen"] > kept["last_seen"]).all()


def test_crawl_without_garment_items_fails_with_the_step_to_take(tmp_path):
    resources = {"paths": DataPathsResource(data_dir=str(tmp_path / "data"), df2_root="")}
    with pytest.raises(FileNotFoundError, match="materialize garment_items"):
        dg.materialize([catalog_raw], partition_key="demo_shop", resources=resources)


def test_sites_are_partitions_and_the_schedule_recrawls_the_enabled_ones(tmp_path, monkeypatch):
    resources = {"paths": DataPathsResource(data_dir=str(tmp_path / "data"), df2_root="")}
    repository = dg.Definitions.merge(catalog_defs, dg.Definitions(resources=resources)).get_repository_def()
    assert set(catalog_raw.partitions_def.get_partition_keys()) == {"demo_shop", "amazon", "darveys", "real_products"}
    assert repository.get_job("recrawl_catalog").partitions_def == catalog_raw.partitions_def

    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2025, 1, 2, 3, 0, tzinfo=dt.UTC))
    (request,) = daily_recrawl(context)
    assert (request.partition_key, request.run_key) == ("demo_shop", "demo_shop-20250102T0300")

    sites = tmp_path / "sites.yaml"
    sites.write_text(
        "sites:\n  demo_shop: {spider: demo_shop, currency: USD, recrawl: false}\nusd_rates: {rates: {USD: 1.0}}\n"
    )
    monkeypatch.setenv("FASHION_SITES_FILE", str(sites))
    assert isinstance(daily_recrawl(context), dg.SkipReason)


def test_failed_runs_are_logged_by_the_failure_sensor(tmp_path, caplog):
    instance = dg.DagsterInstance.ephemeral()
    resources = {"paths": DataPathsResource(data_dir=str(tmp_path / "data"), df2_root="")}
    failed = dg.materialize([product_catalog], resources=resources, instance=instance, raise_on_error=False)
    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name="report_failed_runs",
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
        dagster_event=failure,
    )
    with caplog.at_level(logging.ERROR):
        report_failed_runs(context.for_run_failure())
    (record,) = [r for r in caplog.records if r.name == "fashion_pipeline.defs.catalog.schedules"]
    assert failed.run_id in record.getMessage()
    assert "product_catalog: no shop crawled yet" in record.getMessage()


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_crawl_with_failing_product_pages_never_shrinks_the_catalog_or_the_index(tmp_path, monkeypatch):
    """40 % of the product pages failing: the crawl is refused, catalog and indexes stay byte for byte.
    20 % failing: the crawl is published, and the products it could not read keep their last good rows."""
    require_chromium()
    data = DataPaths(root=tmp_path / "data")
    write_parquet(make_stand_in_items(tmp_path / "photos", 10), data.garment_items)
    resources = {"paths": DataPathsResource(data_dir=str(data.root), df2_root="")}
    data.classifier_dir.mkdir(parents=True)
    embedder = HistogramEmbedder()
    (data.classifier_dir / "metadata.json").write_text(
        json.dumps({"registered_version": embedder.version, "embedding_dim": embedder.embedding_dim})
    )
    monkeypatch.setattr(retrieval_loading, "load_embedder", lambda model_dir: HistogramEmbedder())
    embedded = [retrieval_assets.catalog_embeddings, retrieval_assets.knn_index]

    def crawl_and_follow(failing: list[str]) -> dg.ExecuteInProcessResult:
        faults = {f"/p/{sku}.html": "500" for sku in failing}
        monkeypatch.setattr(
            catalog_assets, "serve_directory", lambda root: serve_directory(root, faulty_shop_handler(faults))
        )
        crawl = dg.materialize(
            [catalog_raw, catalog_images], partition_key="demo_shop", resources=resources, raise_on_error=False
        )
        assert dg.materialize([product_catalog], resources=resources).success
        assert materialize_retrieval(embedded, data.root, sites=["demo_shop"]).success
        return crawl

    assert crawl_and_follow([]).success
    before, index_before = pd.read_parquet(data.products), _tree(data.index_dir)
    assert len(before) == 9 and set(before["status"]) == {"fresh"}
    normal = [p.sku for p in DemoShop.load(data.demo_shop_dir).products if not p.fault]

    refused = crawl_and_follow(normal[:4])  # 4 of the 9 products the catalog has
    assert not refused.success
    failure = next(e for e in refused.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "read 5 products, 56% of the 9 it had, below min_seen_share 70%" in failure.step_failure_data.error.message
    (check,) = refused.get_asset_check_evaluations()
    assert check.passed and check.metadata["scraped"].value == 5  # every product accounted for, still refused
    pd.testing.assert_frame_equal(pd.read_parquet(data.products), before)
    assert _tree(data.index_dir) == index_before

    published = crawl_and_follow(normal[:2])
    assert published.success
    after = pd.read_parquet(data.products).set_index("product_id")
    assert sorted(after.index) == sorted(before["product_id"])
    stale = after[after["status"] == "stale"]
    assert sorted(stale["sku"]) == sorted(normal[:2])
    assert set(stale["stale_reason"]) == {"page failed: HTTP 500"}
    kept = before.set_index("product_id").loc[stale.index]
    assert (stale["last_seen"] == kept["last_seen"]).all() and (stale["price"] == kept["price"]).all()
    assert _tree(data.index_dir) == index_before  # the same products, the same images: the same indexes
