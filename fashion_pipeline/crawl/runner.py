"""Run one site's crawl in a subprocess and publish it only when it succeeded.

Scrapy's Twisted reactor cannot be restarted within a process (STACK.md trap 7), so every crawl is a
fresh `python -m scrapy crawl ...`. The crawl writes into a temporary folder that replaces the site's
folder only if the crawl finished and scraped something: a failed or empty crawl keeps the last good data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from fashion_pipeline.lib.catalog.catalog import CRAWL_LOG_FILE, CRAWL_REPORT_FILE, RAW_PRODUCTS_FILE
from fashion_pipeline.lib.catalog.crawl_report import CrawlReport
from fashion_pipeline.lib.catalog.sites import SiteConfig, SiteConfigError
from fashion_pipeline.lib.common.atomic import atomic_dir

SETTINGS_MODULE = "fashion_pipeline.crawl.settings"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class CrawlFailed(RuntimeError):
    """A crawl that did not produce publishable data; the message says why and where the log is."""


def _log_tail(log: Path, lines: int = 15) -> str:
    if not log.is_file():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_spider(
    site: SiteConfig,
    out_dir: Path,
    images_dir: Path,
    *,
    spider_args: Mapping[str, str] | None = None,
    settings: Mapping[str, str] | None = None,
    timeout_s: float = 3600,
) -> CrawlReport:
    """Crawl `site` into `out_dir` (products.jsonl, crawl_report.json, crawl.log); images go to `images_dir`."""
    if site.spider == "folder":
        try:
            site.local_folder()  # an unset variable or a missing folder: say so here, not in a crawl log
        except SiteConfigError as exc:
            raise CrawlFailed(str(exc)) from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path, log_path = out_dir / CRAWL_REPORT_FILE, out_dir / CRAWL_LOG_FILE
    command = [sys.executable, "-m", "scrapy", "crawl", site.spider, "-a", f"site={site.name}"]
    command += ["-O", f"{out_dir / RAW_PRODUCTS_FILE}:jsonlines"]
    for key, value in {
        "IMAGES_STORE": str(images_dir),
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


def crawl_problem(report: CrawlReport) -> str | None:
    """Why a finished crawl must not replace the site's previous data, or None when it may."""
    if report.finish_reason != "finished":
        return f"the crawl of {report.site} stopped early ({report.finish_reason})"
    if report.scraped == 0:
        return (
            f"the crawl of {report.site} scraped no products (listed {report.listed}, dropped {report.dropped}, "
            f"pages failed {report.pages_failed})"
        )
    if report.pages_failed:
        # Products on a listing page that failed were never seen: publishing would report them as gone.
        return f"listing pages of {report.site} failed ({report.pages_failed}), so products may be missing"
    return None


def crawl_site(
    site: SiteConfig,
    raw_dir: Path,
    images_dir: Path,
    *,
    spider_args: Mapping[str, str] | None = None,
    settings: Mapping[str, str] | None = None,
    timeout_s: float = 3600,
) -> CrawlReport:
    """Crawl `site` and publish it as `raw_dir/<site>/`, or raise CrawlFailed and keep what was there.

    The log of a failed crawl is kept as `raw_dir/<site>.failed.log`.
    """
    failure_log = Path(raw_dir) / f"{site.name}.failed.log"
    with atomic_dir(Path(raw_dir) / site.name) as tmp:
        try:
            report = run_spider(site, tmp, images_dir, spider_args=spider_args, settings=settings, timeout_s=timeout_s)
            problem = crawl_problem(report)
            if problem:
                raise CrawlFailed(f"{problem}; last log lines:\n{_log_tail(tmp / CRAWL_LOG_FILE)}")
        except CrawlFailed as exc:
            if (tmp / CRAWL_LOG_FILE).is_file():
                shutil.copyfile(tmp / CRAWL_LOG_FILE, failure_log)
            raise CrawlFailed(f"{exc}\n(previous data kept; full log: {failure_log})") from exc
    failure_log.unlink(missing_ok=True)
    return report
