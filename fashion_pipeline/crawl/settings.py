"""Scrapy settings for the catalog crawl (SCRAPY_SETTINGS_MODULE=fashion_pipeline.crawl.settings).

Defaults are polite for real shops; the demo shop (our own loopback server) lifts the throttling in its
spider's `custom_settings`. The runner (crawl/runner.py) adds the per-crawl paths with `-s`.
"""

from __future__ import annotations

import os
from pathlib import Path

from fashion_pipeline.lib.catalog.catalog import SCRAPED_COLUMNS
from fashion_pipeline.lib.catalog.sites import load_usd_rates
from fashion_pipeline.lib.common.paths import DataPaths

BOT_NAME = "fashion_pipeline"
SPIDER_MODULES = ["fashion_pipeline.crawl.spiders"]
NEWSPIDER_MODULE = "fashion_pipeline.crawl.spiders"

# Say who we are; shops may contact or block by it.
USER_AGENT = os.environ.get("FASHION_CRAWL_USER_AGENT", "fashion-pipeline-catalog/0.1 (visual search research crawler)")

# --- politeness ------------------------------------------------------------------------------------------
ROBOTSTXT_OBEY = True
CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 2
DOWNLOAD_DELAY = 1.0
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 2.0
AUTOTHROTTLE_MAX_DELAY = 30.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 1.0
# Items processed in parallel per response. Scrapy starts this many tasks for every callback's output, so
# its default (100) mostly costs overhead when a product page yields one item.
CONCURRENT_ITEMS = 16
DOWNLOAD_TIMEOUT = 30
# Scrapy's default cap is 1 GiB: a page is a few hundred kB, a product photo a few MB.
DOWNLOAD_MAXSIZE = 10 * 1024 * 1024
CATALOG_IMAGE_MAXSIZE = 20 * 1024 * 1024
CATALOG_FEED_MAXSIZE = 500 * 1024 * 1024  # a whole Merchant feed in one file (about 1 kB a product)
RETRY_TIMES = 2  # 500/502/503/504/522/524/408/429 and timeouts; a 404 is final
REDIRECT_MAX_TIMES = 5  # a redirect loop ends as "max redirections reached"
CATALOG_RETRY_AFTER_MAX = 60  # seconds a 429/503 Retry-After may hold a request before its retry
# Refuse loopback, private and link-local targets (every request, redirects and images included), and
# wait as long as a shop's Retry-After asks (before Scrapy's RetryMiddleware at 550 sees the answer).
DOWNLOADER_MIDDLEWARES = {
    "fashion_pipeline.crawl.middlewares.PublicAddressMiddleware": 60,
    "fashion_pipeline.crawl.middlewares.RetryAfterMiddleware": 560,
}
TWISTED_DNS_RESOLVER = "fashion_pipeline.crawl.middlewares.PublicAddressResolver"
CATALOG_ALLOW_PRIVATE_ADDRESSES = False  # set by the runner for a site entry with allow_private_addresses

# Development only: replay responses from disk instead of hitting the shop again (FASHION_CRAWL_HTTPCACHE=1).
HTTPCACHE_ENABLED = os.environ.get("FASHION_CRAWL_HTTPCACHE") == "1"
# Absolute: crawls run in a temporary working folder that is swapped away afterwards.
HTTPCACHE_DIR = os.environ.get("FASHION_CRAWL_HTTPCACHE_DIR") or str(DataPaths.from_env().catalog_dir / "httpcache")
HTTPCACHE_EXPIRATION_SECS = 24 * 3600

# --- output ----------------------------------------------------------------------------------------------
FEED_EXPORT_ENCODING = "utf-8"
FEED_EXPORT_FIELDS = list(SCRAPED_COLUMNS)  # the crawl output the catalog stage reads
ITEM_PIPELINES = {
    "fashion_pipeline.crawl.pipelines.ValidationPipeline": 100,
    "fashion_pipeline.crawl.pipelines.PricePipeline": 200,
    "fashion_pipeline.crawl.pipelines.UsdPricePipeline": 300,
    "fashion_pipeline.crawl.pipelines.DuplicateUrlPipeline": 400,
    "fashion_pipeline.crawl.pipelines.ProductImagesPipeline": 500,
    "fashion_pipeline.crawl.pipelines.DuplicateImagePipeline": 600,
}
EXTENSIONS = {"fashion_pipeline.crawl.report.CrawlReportWriter": 500}
CATALOG_REPORT_PATH = ""  # set per crawl by the runner; empty disables the report
IMAGES_STORE = ""  # set per crawl by the runner: the content-addressed store, catalog/images/sha256
CATALOG_DATA_ROOT = ""  # image paths in the rows are relative to it (set by the runner; else FASHION_DATA_DIR)
CATALOG_PREVIOUS_PRODUCTS = ""  # the site's published rows: their images are reused within IMAGES_EXPIRES
IMAGES_EXPIRES = 30  # days before an already downloaded image is fetched again
CATALOG_USD_RATES = load_usd_rates()

# --- browser (scrapy-playwright, only for requests with meta={"playwright": True}) -------------------------
DOWNLOAD_HANDLERS = {
    "http": "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler",
    "https": "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler",
}
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
PLAYWRIGHT_BROWSER_TYPE = "chromium"
# Chromium's own services that the --disable-* flags below leave on (seen in its network log): account lookups,
# the component updater and autofill's form lookups. They are pointed at a closed loopback port.
CHROMIUM_NOWHERE = "http://127.0.0.1:9/"
# Flags so Chromium runs in containers and makes no background lookups of its own (STACK.md traps 5, 8).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    f"--gaia-url={CHROMIUM_NOWHERE}",
    f"--component-updater=url-source={CHROMIUM_NOWHERE}",
    f"--autofill-server-url={CHROMIUM_NOWHERE}",
]
# For tests and benchmarks on loopback: every host but 127.0.0.1 is "not found", so a page under test
# cannot reach out. Never for a real crawl (no shop would resolve): crawls add it only when
# FASHION_CRAWL_LOOPBACK_ONLY=1.
LOOPBACK_CHROMIUM_ARGS = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]


def crawl_chromium_args() -> list[str]:
    return LOOPBACK_CHROMIUM_ARGS if os.environ.get("FASHION_CRAWL_LOOPBACK_ONLY") == "1" else CHROMIUM_ARGS


def chromium_executable() -> str | None:
    """`FASHION_CHROMIUM_PATH`, else Debian's /usr/bin/chromium, else None (Playwright's own download)."""
    configured = os.environ.get("FASHION_CHROMIUM_PATH")
    if configured:
        return configured
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def _launch_options() -> dict:
    options: dict = {"headless": True, "args": crawl_chromium_args()}
    executable = chromium_executable()
    if executable:
        options["executable_path"] = executable
    return options


PLAYWRIGHT_LAUNCH_OPTIONS = _launch_options()
PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT = 30_000  # ms
PLAYWRIGHT_MAX_PAGES_PER_CONTEXT = 4
# The browser only renders listings; product images are fetched once, by the ImagesPipeline.
PLAYWRIGHT_ABORT_REQUEST = "fashion_pipeline.crawl.browser.skip_heavy_resources"

# No listening consoles in a batch crawl.
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False

LOG_LEVEL = os.environ.get("FASHION_CRAWL_LOG_LEVEL", "INFO")
