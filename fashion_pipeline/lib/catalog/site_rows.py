"""A site's published rows after a crawl: what the crawl scraped, plus the last good row of every product the
crawl could not read, so that a bad crawl never shrinks the catalog.

- A product the crawl listed but could not read (its page failed, its image failed, its page came back
  without the product's fields) keeps its last good row, marked `stale` with the reason.
- A product is gone only after two consecutive crawls whose listings were complete and did not show it,
  or whose page answered 404/410 both times; after the first it is kept, stale, with `missed_crawls` 1.
- A listing that was not complete (a listing page failed, or answered without products, as a CAPTCHA
  page does) says nothing about the products it did not show: they are kept, stale, and not counted.
- A product dropped as a duplicate of another one is not kept: the other row stands for it.

`refusal` decides whether such an update may replace the previous rows at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from fashion_pipeline.lib.catalog.crawl_report import CrawlReport

FRESH, STALE = "fresh", "stale"
MISSES_BEFORE_GONE = 2
GONE_PAGE_REASONS = frozenset({"page failed: HTTP 404", "page failed: HTTP 410"})
DUPLICATE_REASONS = frozenset({"duplicate url", "duplicate sku", "duplicate image", "duplicate listing"})


@dataclass
class SiteUpdate:
    """The rows to publish for a site, and what became of each of the site's previous products."""

    rows: pd.DataFrame
    previous: int = 0
    still_listed: int = 0  # previous products scraped again
    kept_stale: dict[str, int] = field(default_factory=dict)  # reason -> previous products kept as they were
    missed_once: int = 0  # not shown by a complete listing (or 404/410) for the first time: kept, stale
    gone: list[str] = field(default_factory=list)  # missed twice in a row: removed
    merged: int = 0  # dropped as a duplicate of another product

    @property
    def accounted(self) -> bool:
        """Every previous product is scraped again, kept stale (counting those missed once), gone or merged."""
        stale = sum(self.kept_stale.values())
        return self.previous == self.still_listed + stale + len(self.gone) + self.merged

    def summary(self) -> dict:
        return {
            "previous": self.previous,
            "still_listed": self.still_listed,
            "kept_stale": dict(sorted(self.kept_stale.items())),
            "missed_once": self.missed_once,
            "gone": len(self.gone),
            "gone_ids": self.gone[:100],
            "merged": self.merged,
            "published": len(self.rows),
            "stale": int((self.rows["status"] == STALE).sum()) if len(self.rows) else 0,
        }


def _failures(report: CrawlReport) -> tuple[dict[str, str], dict[str, str]]:
    """The crawl's dropped products by product id and by (canonical) link -> the reason."""
    by_id, by_url = {}, {}
    for drop in report.drops:
        product_id, url = drop.get("product_id") or "", drop.get("url") or ""
        if product_id and not product_id.endswith(":"):  # "site:" is a product whose sku was not found
            by_id[product_id] = drop["reason"]
        if url:
            by_url[url] = drop["reason"]
    return by_id, by_url


def update_site_rows(previous: pd.DataFrame | None, scraped: pd.DataFrame, report: CrawlReport) -> SiteUpdate:
    """The site's rows after this crawl: `scraped` (fresh) and the previous rows the crawl did not replace."""
    fresh = scraped.assign(status=FRESH, stale_reason=None, missed_crawls=0)
    if previous is None or previous.empty:
        return SiteUpdate(rows=fresh.reset_index(drop=True))
    update = SiteUpdate(rows=fresh, previous=len(previous))
    scraped_ids = set(scraped["product_id"])
    by_id, by_url = _failures(report)
    complete = report.listing_complete
    kept = []
    for row in previous.to_dict("records"):
        if row["product_id"] in scraped_ids:
            update.still_listed += 1
            continue
        reason = by_id.get(row["product_id"]) or by_url.get(row.get("url") or "")
        misses = int(row.get("missed_crawls") or 0)
        if reason in DUPLICATE_REASONS:
            update.merged += 1
            continue
        if reason in GONE_PAGE_REASONS or (reason is None and complete):
            misses += 1
            if misses >= MISSES_BEFORE_GONE:
                update.gone.append(row["product_id"])
                continue
            update.missed_once += 1
            reason = reason or "not listed"
            label = f"{reason} ({misses} of {MISSES_BEFORE_GONE} crawls before it is gone)"
        elif reason is None:
            reason = label = "not seen: the listing was incomplete"
        else:
            misses, label = 0, reason  # listed, only unreadable this time
        update.kept_stale[reason] = update.kept_stale.get(reason, 0) + 1
        kept.append({**row, "status": STALE, "stale_reason": label, "missed_crawls": misses})
    if kept:
        kept_rows = pd.DataFrame(kept, columns=fresh.columns)
        update.rows = pd.concat([fresh, kept_rows], ignore_index=True) if len(fresh) else kept_rows
    update.rows = update.rows.reset_index(drop=True)
    return update


def refusal(report: CrawlReport, update: SiteUpdate, min_seen_share: float, force: bool = False) -> str | None:
    """Why this crawl must not replace the site's rows, or None. `force` overrides the share rules only."""
    if report.finish_reason != "finished":
        return f"the crawl of {report.site} stopped early ({report.finish_reason})"
    if not report.accounted:
        return (
            f"the crawl of {report.site} lost products: listed {report.listed}, but scraped {report.scraped} "
            f"+ dropped {report.dropped_total}"
        )
    if not update.accounted:
        return f"the update of {report.site} lost previous products: {update.summary()}"
    if force:
        return None
    if report.scraped == 0:
        return (
            f"the crawl of {report.site} scraped no products (listed {report.listed}, dropped {report.dropped}, "
            f"pages failed {report.pages_failed})"
        )
    if update.previous and report.scraped < min_seen_share * update.previous:
        return (
            f"the crawl of {report.site} read {report.scraped} products, {report.scraped / update.previous:.0%} of "
            f"the {update.previous} it had, below min_seen_share {min_seen_share:.0%} (dropped {report.dropped}, "
            f"pages failed {report.pages_failed}); materialize with `force: true` if the shop really shrank"
        )
    return None
