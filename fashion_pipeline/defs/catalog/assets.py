"""The crawled product catalog: per-site crawls, their images, and the merged products table."""

from collections.abc import Iterator
from contextlib import nullcontext

import dagster as dg
import pandas as pd

from fashion_pipeline.crawl.runner import CrawlFailed, crawl_site
from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.lib.catalog.catalog import (
    CRAWL_REPORT_FILE,
    RAW_PRODUCTS_FILE,
    merge_catalog,
    missing_image_files,
    read_raw_products,
    read_site_rows,
)
from fashion_pipeline.lib.catalog.crawl_report import CrawlReport
from fashion_pipeline.lib.catalog.image_store import DEFAULT_RETENTION_DAYS, collect_garbage, resolve
from fashion_pipeline.lib.catalog.site_rows import STALE
from fashion_pipeline.lib.catalog.sites import load_sites
from fashion_pipeline.lib.common.atomic import write_json, write_parquet
from fashion_pipeline.lib.common.images import ImageError, load_image
from fashion_pipeline.lib.samples.demo_shop import ensure_demo_shop
from fashion_pipeline.lib.samples.demo_shop_site import serve_directory

# The configured shops (crawl/sites.yaml); one partition each.
SITES = load_sites()
site_partitions = dg.StaticPartitionsDefinition(list(SITES))

# Like eager(), but not held back by sites that were never crawled: with the real shops configured yet
# switched off, `any_deps_missing` would otherwise keep the catalog from ever following the demo shop.
catalog_follows_crawls = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


class CatalogConfig(dg.Config):
    # Image files no catalog row has referenced for this long are deleted (a crawl writing new ones, a
    # server still showing an older catalog, have that long to be done with them).
    image_retention_days: float = DEFAULT_RETENTION_DAYS


class CrawlConfig(dg.Config):
    timeout_s: int = 3600  # a crawl still running after this fails (and keeps the previous data)
    max_pages: int = 0  # result pages per keyword; 0 = the site's max_pages in sites.yaml
    # Publish a crawl that saw fewer than the site's min_seen_share of its previous products (the shop
    # really shrank); a crawl that lost products is never published.
    force: bool = False


def _table(counts: dict[str, int], header: str) -> dg.MetadataValue:
    rows = "\n".join(f"| {key} | {value} |" for key, value in sorted(counts.items())) or "| (none) | 0 |"
    return dg.MetadataValue.md(f"| {header} | count |\n|---|---|\n{rows}")


@dg.asset(
    group_name="catalog",
    kinds={"scrapy", "playwright"},
    partitions_def=site_partitions,
    deps=[dg.AssetKey("garment_items")],
    check_specs=[
        dg.AssetCheckSpec(
            "every_product_accounted_for",
            asset="catalog_raw",
            blocking=True,
            description=(
                "Protects against products vanishing silently: every product the crawl listed was scraped or "
                "dropped with a counted reason (listed = scraped + dropped), and every product the site had is scraped "
                "again, kept (stale, with its reason) or gone after two crawls missed it. It runs before the crawl "
                "replaces the site's data and blocks: a failing crawl is not published. If it fails, read the dropped "
                "reasons here and the site's crawl.log and crawl_report.json under catalog/raw/<site>/, then "
                "fix the spider's selectors for the page that changed."
            ),
        )
    ],
)
def catalog_raw(
    context: dg.AssetExecutionContext, config: CrawlConfig, paths: DataPathsResource
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """One shop crawled by its Scrapy spider in a subprocess: products (JSON lines) and a crawl report.

    One partition per site in crawl/sites.yaml. The `demo_shop` partition (the embedded default) crawls the
    demo shop, which is generated from the DeepFashion2 shop photos in `garment_items` and served on
    127.0.0.1 only while it is crawled: that is what the dependency on garment_items carries (the shop is
    rebuilt when garment_items changes; the other partitions do not read it). `amazon` and `darveys` crawl
    real web shops: they need the network, and for real use the shop's permission, so `make demo` does not
    materialize them. Run one with `dagster asset materialize -m
    fashion_pipeline.definitions --select catalog_raw,catalog_images --partition amazon`, or launch the
    partition here; offline such a crawl fails cleanly ("host not found") and the site's last good data stays.
    """
    data, site = paths.get(), SITES[context.partition_key]
    spider_args = {"max_pages": str(config.max_pages)} if config.max_pages else {}
    # The embedded default: the demo shop is generated from garment_items and served only while crawled.
    serving = (
        serve_directory(ensure_demo_shop(data.garment_items, data.demo_shop_dir, image_root=data.df2_root).root)
        if site.spider == "demo_shop"
        else nullcontext(None)
    )
    try:
        with serving as base_url:
            if base_url:
                spider_args["base_url"] = base_url
            report = crawl_site(
                site,
                data,
                spider_args=spider_args,
                timeout_s=config.timeout_s,
                force=config.force,
            )
    except CrawlFailed as exc:
        if exc.report is not None:  # the crawl ran: say what it did, then refuse it
            yield _accounting(exc.report)
        raise dg.Failure(description=str(exc)) from exc
    update = report.site_update
    context.log.info(
        f"{site.name}: listed {report.listed}, scraped {report.scraped}, dropped {report.dropped}; "
        f"previous {update.get('previous', 0)}: kept stale {update.get('kept_stale')}, gone {update.get('gone', 0)}"
    )
    yield dg.MaterializeResult(
        metadata={
            "scraped": report.scraped,
            "dropped": _table(report.dropped, "reason"),
            "kept_stale": _table(update.get("kept_stale", {}), "reason"),
            "gone": update.get("gone", 0),
            "image_bytes_written": report.image_bytes_written,
            "path": dg.MetadataValue.path(str(data.catalog_raw_dir / site.name / RAW_PRODUCTS_FILE)),
        },
        check_results=[_accounting(report)],
    )


def _accounting(report: CrawlReport) -> dg.AssetCheckResult:
    update = report.site_update
    kept = sum(update.get("kept_stale", {}).values())
    return dg.AssetCheckResult(
        check_name="every_product_accounted_for",
        passed=report.accounted and update.get("accounted", True),
        metadata={
            "listed": report.listed,
            "scraped": report.scraped,
            "dropped": report.dropped_total,
            "previous": update.get("previous", 0),
            "kept_stale": kept,
            "gone": update.get("gone", 0),
        },
        description="listed = scraped + dropped; previous = scraped again + kept stale + gone + merged",
    )


@dg.asset(
    group_name="catalog",
    kinds={"scrapy", "jpeg"},
    partitions_def=site_partitions,
    deps=[catalog_raw],
    automation_condition=dg.AutomationCondition.eager(),
    check_specs=[
        dg.AssetCheckSpec(
            "images_readable",
            asset="catalog_images",
            blocking=True,
            description=(
                "Protects the embeddings from broken pictures: every downloaded product image opens as an "
                "image (blocking, so the catalog does not merge a crawl with unreadable files). If it fails, "
                "the files listed in image_failures.json are truncated or not images: recrawl the site "
                "(materialize catalog_raw for its partition again)."
            ),
        )
    ],
)
def catalog_images(context: dg.AssetExecutionContext, paths: DataPathsResource) -> dg.MaterializeResult:
    """The shop's product images (downloaded by the crawl's ImagesPipeline) verified, and its dead links listed."""
    data, site = paths.get(), context.partition_key
    raw_dir = data.catalog_raw_dir / site
    products = read_raw_products(raw_dir / RAW_PRODUCTS_FILE)
    report = CrawlReport.read(raw_dir / CRAWL_REPORT_FILE)
    unreadable: list[str] = []
    for image_path in products["image_path"]:
        try:
            load_image(resolve(image_path, data.root))
        except (ImageError, FileNotFoundError, TypeError):
            unreadable.append(str(image_path))
    image_reasons = {"dead image link", "broken image", "image blocked", "image too large"}
    failed = [drop for drop in report.drops if drop["reason"] in image_reasons]
    record = data.catalog_images_dir / site / "image_failures.json"
    write_json({"site": site, "failed_downloads": failed, "unreadable_files": unreadable}, record)
    return dg.MaterializeResult(
        metadata={
            "images": len(products) - len(unreadable),
            "dead_links": sum(report.dropped.get(reason, 0) for reason in image_reasons),
            "failures": dg.MetadataValue.path(str(record)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="images_readable",
                passed=not unreadable,
                metadata={"unreadable": len(unreadable), "examples": unreadable[:5]},
            )
        ],
    )


@dg.asset(
    group_name="catalog",
    pool="catalog",
    kinds={"parquet"},
    deps=[catalog_images],
    automation_condition=catalog_follows_crawls,
    check_specs=[
        dg.AssetCheckSpec(
            "unique_product_id",
            asset="product_catalog",
            blocking=True,
            description=(
                "Protects every product link and index row: one row per product_id (site:sku). A repeated id "
                "stops the merge before writing, so the last good catalog keeps serving; the failure names the "
                "ids: fix the site's spider so each product has one sku, then recrawl that site."
            ),
        ),
        dg.AssetCheckSpec(
            "usd_price_where_priced",
            asset="product_catalog",
            blocking=True,
            description=(
                "Protects the app's max-price filter: every product with a price has its USD value. A price in "
                "a currency missing from the rates table in crawl/sites.yaml stops the merge (the last good "
                "catalog stays); add the currency's rate there and materialize product_catalog again."
            ),
        ),
        dg.AssetCheckSpec(
            "image_files_exist",
            asset="product_catalog",
            description=(
                "Warns when a product's downloaded image file is missing (it cannot be embedded or shown). "
                "The examples say which: recrawl their site, or check that the data folder was not pruned."
            ),
        ),
    ],
)
def product_catalog(
    context: dg.AssetExecutionContext, config: CatalogConfig, paths: DataPathsResource
) -> dg.MaterializeResult:
    """Every shop's latest good crawl in one table, with first_seen/last_seen and what is new, changed or gone."""
    data = paths.get()
    rows = read_site_rows(data.catalog_raw_dir, SITES)
    if rows is None:
        raise dg.Failure(f"no shop crawled yet under {data.catalog_raw_dir}: materialize catalog_raw for a site first")
    previous = pd.read_parquet(data.products) if data.products.is_file() else None
    # Blocking problems raise before writing: the last good catalog stays in place.
    try:
        catalog, changes = merge_catalog(rows, previous)
    except ValueError as exc:  # repeated product ids
        raise dg.Failure(f"catalog not written: {exc}") from exc
    unpriced = catalog.loc[catalog["price"].notna() & catalog["price_usd"].isna(), "product_id"]
    if len(unpriced):
        raise dg.Failure(f"catalog not written: prices without a USD value: {list(unpriced)[:5]}")
    write_parquet(catalog, data.products)
    missing = missing_image_files(catalog["image_path"], data.root)
    # The image store's garbage: files no row of the catalog or of a site has referenced for a while.
    garbage = collect_garbage(
        data.catalog_images_dir,
        data.root,
        [*catalog["image_path"], *rows["image_path"]],
        retention_days=config.image_retention_days,
    )
    by_site = catalog.groupby("site").agg(products=("product_id", "size"), last_seen=("last_seen", "max"))
    by_site_rows = "\n".join(
        f"| {site} | {row.products} | {row.last_seen:%Y-%m-%d %H:%M} |" for site, row in by_site.iterrows()
    )
    context.log.info(
        f"catalog: {len(catalog)} products; new {len(changes.new)}, changed {len(changes.changed)}, gone {len(changes.gone)}; "
        f"images: {garbage.files_deleted} unreferenced files deleted ({garbage.bytes_freed} bytes), {garbage.files_kept} kept"
    )
    return dg.MaterializeResult(
        metadata={
            "products": len(catalog),
            "new": len(changes.new),
            "changed": len(changes.changed),
            "gone": len(changes.gone),
            "stale": int((catalog["status"] == STALE).sum()),
            "image_bytes_freed": garbage.bytes_freed,
            "by_site": dg.MetadataValue.md(f"| site | products | last crawled (UTC) |\n|---|---|---|\n{by_site_rows}"),
            "path": dg.MetadataValue.path(str(data.products)),
        },
        check_results=[
            dg.AssetCheckResult(check_name="unique_product_id", passed=True),
            dg.AssetCheckResult(check_name="usd_price_where_priced", passed=True),
            dg.AssetCheckResult(
                check_name="image_files_exist",
                passed=not missing,
                metadata={"missing": len(missing), "examples": missing[:5]},
            ),
        ],
    )
