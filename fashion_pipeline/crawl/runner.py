"""Run one site's crawl in a subprocess and publish it only when it may replace what the site had.

Scrapy's Twisted reactor cannot be restarted within a process (STACK.md trap 7), so every crawl is a
fresh `python -m scrapy crawl ...`. The crawl writes into a temporary folder; the site's new rows (the
scraped ones plus the last good row of every product it could not read, lib.catalog.site_rows) are
checked there, and the folder replaces the site's only when every product is accounted for and the crawl
saw enough of the site's products (`min_seen_share`, unless forced). Otherwise the last good data stays and
the crawl's log is kept beside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from fashion_pipeline.lib.catalog.catalog import (
    CRAWL_LOG_FILE,
    CRAWL_REPORT_FILE,
    RAW_PRODUCTS_FILE,
    SCRAPED_COLUMNS,
    SCRAPED_PRODUCTS_FILE,
    read_raw_products,
    write_raw_products,
)
from fashion_pipeline.lib.catalog.crawl_report import CrawlReport
from fashion_pipeline.lib.catalog.image_store import store_dir
from fashion_pipeline.lib.catalog.site_rows import refusal, update_site_rows
from fashion_pipeline.lib.catalog.sites import SiteConfig, SiteConfigError
from fashion_pipeline.lib.common.atomic import atomic_dir, write_json
from fashion_pipeline.lib.common.paths import DataPaths

SETTINGS_MODULE = "fashion_pipeline.crawl.settings"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class CrawlFailed(RuntimeError):
    """A crawl that did not produce publishable data; the message says why and where the log is.

    `report` is the crawl's report when it ran to the end (what it listed, scraped, dropped and kept).
    """

    def __init__(self, message: str, report: CrawlReport | None = None) -> None:
        super().__init__(message)
        self.report = report


def _log_tail(log: Path, lines: int = 15) -> str:
    if not log.is_file():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_spider(
    site: SiteConfig,
    out_dir: Path,
    data: DataPaths,
    *,
    previous_products: Path | None = None,
    spider_args: Mapping[str, str] | None = None,
    settings: Mapping[str, str] | None = None,
    timeout_s: float = 3600,
) -> CrawlReport:
    """Crawl `site` into `out_dir` (scraped.jsonl, crawl_report.json, crawl.log); images go to the store.

    `previous_products` are the site's published rows: images they hold under the same link are reused.
    """
    if site.spider == "folder":
        try:
            site.local_folder()  # an unset variable or a missing folder: say so here, not in a crawl log
        except SiteConfigError as exc:
            raise CrawlFailed(str(exc)) from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path, log_path = out_dir / CRAWL_REPORT_FILE, out_dir / CRAWL_LOG_FILE
    command = [sys.executable, "-m", "scrapy", "crawl", site.spider, "-a", f"site={site.name}"]
    command += ["-O", f"{out_dir / SCRAPED_PRODUCTS_FILE}:jsonlines"]
    for key, value in {
        "IMAGES_STORE": str(store_dir(data.catalog_images_dir)),
        "CATALOG_DATA_ROOT": str(data.root),
        "CATALOG_PREVIOUS_PRODUCTS": str(previous_products or ""),
        "CATALOG_REPORT_PATH": str(report_path),
        "CATALOG_ALLOW_PRIVATE_ADDRESSES": str(site.allow_private_addresses),
        **(settings or {}),
    }.items():
        command += ["-s", f"{key}={value}"]
    for key, value in (spider_args or {}).items():
        command += ["-a", f"{key}={value}"]
    env = {
        **os.environ,
        "SCRAPY_SETTINGS_MODULE": SETTINGS_MODULE,
        "PYTHONPATH": os.pathsep.join(p for p in (str(_PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    with log_path.open("w") as log:
        try:
            completed = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out_dir, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise CrawlFailed(f"crawl of {site.name} did not finish within {timeout_s:.0f} s") from exc
    if completed.returncode != 0 or not report_path.is_file():
        raise CrawlFailed(
            f"`scrapy crawl {site.spider}` for {site.name} exited with code {completed.returncode} "
            f"and {'a' if report_path.is_file() else 'no'} report; last log lines:\n{_log_tail(log_path)}"
        )
    return CrawlReport.read(report_path)


def crawl_site(
    site: SiteConfig,
    data: DataPaths,
    *,
    spider_args: Mapping[str, str] | None = None,
    settings: Mapping[str, str] | None = None,
    timeout_s: float = 3600,
    force: bool = False,
) -> CrawlReport:
    """Crawl `site` and publish its rows in `catalog/raw/<site>/`, or raise CrawlFailed and keep what was there.

    Images go to the content-addressed store under `catalog/images/`. `force` publishes a crawl that saw
    fewer products than `min_seen_share` of the site's (the shop shrank). The log of a refused crawl is kept
    as `catalog/raw/<site>.failed.log`.
    """
    site_dir = data.catalog_raw_dir / site.name
    published = site_dir / RAW_PRODUCTS_FILE
    failure_log = data.catalog_raw_dir / f"{site.name}.failed.log"
    previous = read_raw_products(published) if published.is_file() else None
    with atomic_dir(site_dir) as tmp:
        report = None
        try:
            report = run_spider(
                site,
                tmp,
                data,
                previous_products=published if previous is not None else None,
                spider_args=spider_args,
                settings=settings,
                timeout_s=timeout_s,
            )
            scraped = read_raw_products(tmp / SCRAPED_PRODUCTS_FILE, SCRAPED_COLUMNS)
            update = update_site_rows(previous, scraped, report)
            report.site_update = update.summary()
            write_json(report.to_dict(), tmp / CRAWL_REPORT_FILE)
            problem = refusal(report, update, site.min_seen_share, force)
            if problem:
                raise CrawlFailed(f"{problem}; last log lines:\n{_log_tail(tmp / CRAWL_LOG_FILE)}", report)
            write_raw_products(update.rows, tmp / RAW_PRODUCTS_FILE)
        except Exception as exc:
            # Any failure (a refusal, an unreadable report, a bug) keeps the log: the temp folder goes.
            if (tmp / CRAWL_LOG_FILE).is_file():
                shutil.copyfile(tmp / CRAWL_LOG_FILE, failure_log)
            kept = f"(previous data kept; full log: {failure_log})"
            if isinstance(exc, CrawlFailed):
                raise CrawlFailed(f"{exc}\n{kept}", report) from exc
            exc.add_note(kept)
            raise
    failure_log.unlink(missing_ok=True)
    return report
