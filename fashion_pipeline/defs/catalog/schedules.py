"""Keeping the catalog fresh: the recrawl job and its schedule, automation downstream, and failure reports.

Dagster jobs cannot mix partitioned and unpartitioned assets, so the schedule launches one run of the
recrawl job (catalog_raw + catalog_images) per site partition. `product_catalog` follows on its own through
its automation condition once those runs have finished, and so do the retrieval assets downstream of it:
the recrawled site's catalog_embeddings partition once product_catalog has merged it, then knn_index and
serving_release (defs/retrieval: their conditions say exactly when). The automation sensor below
evaluates those conditions; it is declared here with `default_status=RUNNING` because Dagster's implicit
default automation sensor starts stopped, and a schedule whose follow-up never runs would not refresh anything.
"""

import logging
import os

import dagster as dg

from fashion_pipeline.defs.catalog.assets import catalog_images, catalog_raw, site_partitions
from fashion_pipeline.lib.catalog.sites import load_sites

logger = logging.getLogger(__name__)

# When the daily recrawl runs (cron, in FASHION_RECRAWL_TIMEZONE); default 03:00.
RECRAWL_CRON = os.environ.get("FASHION_RECRAWL_CRON", "0 3 * * *")
RECRAWL_TIMEZONE = os.environ.get("FASHION_RECRAWL_TIMEZONE", "UTC")

recrawl_catalog = dg.define_asset_job(
    "recrawl_catalog",
    selection=dg.AssetSelection.assets(catalog_raw, catalog_images),
    partitions_def=site_partitions,
    description="Crawl one shop again and verify its images (one run per site partition).",
)


@dg.schedule(
    job=recrawl_catalog,
    cron_schedule=RECRAWL_CRON,
    execution_timezone=RECRAWL_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_recrawl(context: dg.ScheduleEvaluationContext):
    """Recrawl every site marked `recrawl: true` in crawl/sites.yaml (FASHION_RECRAWL_CRON, daily by default)."""
    tick = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
    sites = [site for site in load_sites().values() if site.recrawl]
    if not sites:
        return dg.SkipReason("no site has `recrawl: true` in crawl/sites.yaml")
    return [dg.RunRequest(run_key=f"{site.name}-{tick}", partition_key=site.name) for site in sites]


catalog_automation = dg.AutomationConditionSensorDefinition(
    "catalog_automation",
    # The retrieval group as well: retrieval_projection (refitted after a new champion) is not downstream of
    # the catalog, and an eager asset outside every target would get an undescribed default sensor.
    target=dg.AssetSelection.assets(catalog_images)
    | dg.AssetSelection.keys("product_catalog").downstream()
    | dg.AssetSelection.groups("retrieval"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=(
        "Keeps the catalog and the app's search current: after a crawl it materializes catalog_images, then "
        "product_catalog, then re-embeds the products (catalog_embeddings) and rebuilds the k-NN indexes "
        "(knn_index), and does the same after a new champion model (which also refits retrieval_projection). If nothing follows a crawl, check that "
        "this sensor is running (Automation page) and read its ticks."
    ),
)


def _reason(step_failure: dg.DagsterEvent) -> str:
    error = step_failure.step_failure_data.error
    if error is None:
        return "unknown error"
    # "dagster._core.definitions.events.Failure: <text>" -> "<text>"
    prefix, _, text = error.message.partition(": ")
    return (text if prefix.endswith(error.cls_name) else error.message).strip()


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=(
        "Logs every failed run with its job, partition, failed steps and their reasons (here in the sensor's "
        "ticks and in the daemon's output), so a failed nightly recrawl is seen without opening each run."
    ),
)
def report_failed_runs(context: dg.RunFailureSensorContext) -> None:
    """Log every failed run (job, partition, failed steps and why) in this sensor's log and the daemon output."""
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    where = run.job_name + (f" [{partition}]" if partition else "")
    reasons = [f"{event.step_key}: {_reason(event)}" for event in context.get_step_failure_events()]
    message = f"run {run.run_id} of {where} failed: " + ("; ".join(reasons) or context.failure_event.message or "")
    # The sensor's log is shown with its ticks in the UI; the module logger prints where `dagster dev` runs.
    context.log.error(message)
    logger.error(message)
