"""A site's rows after a crawl: failed products keep their last good row, absence counts only on complete
listings and only twice in a row, and a crawl that saw too little is refused."""

from __future__ import annotations

import pandas as pd

from fashion_pipeline.lib.catalog.catalog import SCRAPED_COLUMNS
from fashion_pipeline.lib.catalog.crawl_report import CrawlReport
from fashion_pipeline.lib.catalog.site_rows import STALE, refusal, update_site_rows

DAY1, DAY2 = "2025-01-01T03:00:00+00:00", "2025-01-02T03:00:00+00:00"


def _rows(skus: list[str], at: str, price: float = 10.0) -> pd.DataFrame:
    rows = [
        {
            "product_id": f"shop:{sku}",
            "site": "shop",
            "sku": sku,
            "name": f"Dress {sku}",
            "url": f"https://shop.example/p/{sku}",
            "image_url": f"https://shop.example/img/{sku}.jpg",
            "price": price,
            "crawled_at": at,
        }
        for sku in skus
    ]
    return pd.DataFrame(rows, columns=list(SCRAPED_COLUMNS))


def _report(scraped: int, listed: int | None = None, drops: list[tuple[str, str]] = (), **extra) -> CrawlReport:
    dropped: dict[str, int] = {}
    for _, reason in drops:
        dropped[reason] = dropped.get(reason, 0) + 1
    return CrawlReport(
        site="shop",
        listed=scraped + len(drops) if listed is None else listed,
        scraped=scraped,
        dropped=dropped,
        drops=[
            {"product_id": key, "reason": reason}
            if key.startswith("shop:")
            else {"product_id": "shop:", "url": key, "reason": reason}
            for key, reason in drops
        ],
        **{"finish_reason": "finished", **extra},
    )


def _publish(previous, scraped, report):
    update = update_site_rows(previous, scraped, report)
    assert update.accounted, update.summary()
    return update, update.rows.set_index("product_id")


def test_failed_pages_and_images_keep_the_last_good_row():
    first, _ = _publish(None, _rows(["a", "b", "c", "d"], DAY1), _report(4))
    assert set(first.rows["status"]) == {"fresh"}
    drops = [("https://shop.example/p/b", "page failed: timeout"), ("shop:c", "dead image link")]
    update, rows = _publish(first.rows, _rows(["a", "d"], DAY2, price=12.0), _report(2, drops=drops))
    assert (update.still_listed, update.kept_stale, update.gone) == (
        2,
        {"page failed: timeout": 1, "dead image link": 1},
        [],
    )
    assert list(rows.loc[["shop:b", "shop:c"], "status"]) == [STALE, STALE]
    assert rows.loc["shop:b", "stale_reason"] == "page failed: timeout"
    # The last good row as it was: its price and when it was read.
    assert (rows.loc["shop:b", "price"], rows.loc["shop:b", "crawled_at"]) == (10.0, DAY1)
    assert (rows.loc["shop:a", "price"], rows.loc["shop:a", "status"]) == (12.0, "fresh")


def test_a_product_is_gone_after_two_complete_listings_without_it():
    first, _ = _publish(None, _rows(["a", "b"], DAY1), _report(2))
    once, rows = _publish(first.rows, _rows(["a"], DAY2), _report(1))
    assert (once.missed_once, once.gone, rows.loc["shop:b", "missed_crawls"]) == (1, [], 1)
    assert rows.loc["shop:b", "stale_reason"] == "not listed (1 of 2 crawls before it is gone)"
    twice, rows = _publish(once.rows, _rows(["a"], DAY2), _report(1))
    assert twice.gone == ["shop:b"] and "shop:b" not in rows.index
    # Seen again after one miss: fresh, and the count starts over.
    back, rows = _publish(once.rows, _rows(["a", "b"], DAY2), _report(2))
    assert (back.gone, rows.loc["shop:b", "status"], rows.loc["shop:b", "missed_crawls"]) == ([], "fresh", 0)


def test_an_incomplete_listing_says_nothing_about_what_it_did_not_show():
    first, _ = _publish(None, _rows(["a", "b", "c"], DAY1), _report(3))
    captcha = _report(1, listing_pages_without_products=1)  # a listing page answered 200 without products
    for _ in range(3):
        update, rows = _publish(first.rows, _rows(["a"], DAY2), captcha)
        assert update.gone == [] and update.kept_stale == {"not seen: the listing was incomplete": 2}
        assert list(rows.loc[["shop:b", "shop:c"], "missed_crawls"]) == [0, 0]
        first = update


def test_a_page_answering_404_twice_is_gone_and_duplicates_merge():
    first, _ = _publish(None, _rows(["a", "b", "c"], DAY1), _report(3))
    gone_page = ("https://shop.example/p/b", "page failed: HTTP 404")
    once, rows = _publish(first.rows, _rows(["a"], DAY2), _report(1, drops=[gone_page, ("shop:c", "duplicate image")]))
    assert (once.merged, rows.loc["shop:b", "missed_crawls"], "shop:c" in rows.index) == (1, 1, False)
    twice, _ = _publish(once.rows, _rows(["a"], DAY2), _report(1, drops=[gone_page]))
    assert twice.gone == ["shop:b"]


def test_refusals():
    first, _ = _publish(None, _rows([str(n) for n in range(10)], DAY1), _report(10))
    failing = [(f"https://shop.example/p/{n}", "page failed: HTTP 500") for n in range(6, 10)]
    report = _report(6, drops=failing)  # 40 % of the product pages failed
    update = update_site_rows(first.rows, _rows([str(n) for n in range(6)], DAY2), report)
    assert "60% of the 10 it had, below min_seen_share 70%" in refusal(report, update, 0.7)
    assert refusal(report, update, 0.5) is None and refusal(report, update, 0.7, force=True) is None
    lost = _report(6, listed=11, drops=failing)  # one listed product neither scraped nor dropped
    assert "lost products" in refusal(lost, update, 0.7, force=True)
    stopped = _report(10, finish_reason="shutdown")
    assert "stopped early" in refusal(stopped, update_site_rows(first.rows, first.rows, stopped), 0.7)
    empty = _report(0, listing_pages_without_products=5)
    assert "scraped no products" in refusal(empty, update_site_rows(first.rows, _rows([], DAY2), empty), 0.7)
