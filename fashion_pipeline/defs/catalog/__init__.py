"""The catalog stage: shop crawls, their images, the merged product catalog, and the recrawl schedule."""

import dagster as dg

from fashion_pipeline.defs.catalog.assets import catalog_images, catalog_raw, product_catalog
from fashion_pipeline.defs.catalog.schedules import (
    catalog_automation,
    daily_recrawl,
    recrawl_catalog,
    report_failed_runs,
)

defs = dg.Definitions(
    assets=[catalog_raw, catalog_images, product_catalog],
    jobs=[recrawl_catalog],
    schedules=[daily_recrawl],
    sensors=[catalog_automation, report_failed_runs],
)
