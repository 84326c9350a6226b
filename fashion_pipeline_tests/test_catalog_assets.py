"""The catalog stage in Dagster, in-process on a tiny demo shop: crawl, images, merge, recrawl, automation."""

from __future__ import annotations

import datetime as dt
import logging

import dagster as dg
import pandas as pd
import pytest

from fashion_pipeline.defs.catalog import defs as catalog_defs
from fashion_pipeline.defs.catalog.assets import catalog_images, catalog_raw, product_catalog
from fashion_pipeline.defs.catalog.schedules import daily_recrawl, report_failed_runs
from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.lib.catalog.catalog import CATALOG_COLUMNS
from fashion_pipeline.lib.common.atomic import write_parquet
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.samples.demo_shop import DemoShop, make_stand_in_items
from fashion_pipeline_tests.fixtures_catalog import require_chromium

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
    assert raw["scraped"] == 9 and raw["images_failed"] == 1  # 10 products, one with a dead image link
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

    # Recrawl after the shop stopped selling one product: it is gone, the others keep their first_seen.
    removed = next(p for p in shop.products if not p.fault)
    write_parquet(items[items["pair_id"] != removed.pair_id], data.garment_items)
    _crawl(resources, instance)
    again = dg.materialize([product_catalog], resources=resources, instance=instance)
    second = _metadata(again, "product_catalog")
    assert (second["products"], second["new"], second["changed"], second["gone"]) == (8, 0, 0, 1)
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
