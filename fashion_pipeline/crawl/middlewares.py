"""Downloader middlewares: refuse addresses a shop's links must never reach, and honour Retry-After.

- `PublicAddressMiddleware` refuses requests to loopback, private, link-local and other non-public
  addresses (127.0.0.1 services, 169.254.169.254 cloud metadata, the LAN), to `localhost`, and to schemes
  other than http(s), for every request the crawl makes: listings, next pages, redirects, images. A site
  entry with `allow_private_addresses: true` (our loopback demo shop, test imitations) lifts it, and a
  folder site may read `file:` links inside its own folder. Host names are checked again once resolved,
  by `PublicAddressResolver`, so a public-looking name that resolves to 127.0.0.1 is refused too.
- `RetryAfterMiddleware`: Scrapy retries a 429 or 503 at once; a shop that says how long to wait
  (`Retry-After`, seconds or an HTTP date) is given that long before the retry, up to
  CATALOG_RETRY_AFTER_MAX seconds; a longer wait is not worth holding the crawl, so the request fails.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.resolver import CachingThreadedResolver
from twisted.internet.error import DNSLookupError
from w3lib.url import file_uri_to_path

REFUSED = "private address refused"


def is_public_address(host: str) -> bool:
    """Whether `host` (an IP address) is globally routable; names are not addresses and return False."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_global
    except ValueError:
        return False


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _private_allowed(crawler: Crawler) -> bool:
    site = getattr(crawler.spider, "site", None)
    allowed = getattr(site, "allow_private_addresses", False)
    return bool(allowed or crawler.settings.getbool("CATALOG_ALLOW_PRIVATE_ADDRESSES"))


class PrivateAddressRefused(DNSLookupError):
    """A host name that resolved to an address the crawl must not reach."""


class PublicAddressMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PublicAddressMiddleware:
        return cls(crawler)

    def process_request(self, request: Request, spider: Any = None) -> None:
        parts = urlsplit(request.url)
        if parts.scheme == "file":
            folder = getattr(self.crawler.spider, "folder", None)
            path = Path(os.path.normpath(file_uri_to_path(request.url)))
            if folder is None or not path.is_relative_to(folder):
                raise IgnoreRequest(f"{REFUSED}: file link outside the site's folder")
            return
        if parts.scheme not in ("http", "https"):
            raise IgnoreRequest(f"{REFUSED}: {parts.scheme} link")
        if _private_allowed(self.crawler):
            return
        host = (parts.hostname or "").lower()
        if host == "localhost" or host.endswith(".localhost") or (_is_address(host) and not is_public_address(host)):
            raise IgnoreRequest(f"{REFUSED}: {host}")


class PublicAddressResolver(CachingThreadedResolver):
    """Scrapy's DNS resolver, refusing names that resolve to non-public addresses (TWISTED_DNS_RESOLVER).

    It serves the whole process, so it knows the settings, not the site: the runner sets
    CATALOG_ALLOW_PRIVATE_ADDRESSES for a site that allows them. Address literals pass through here;
    PublicAddressMiddleware has already judged them.
    """

    @classmethod
    def from_crawler(cls, crawler: Any, reactor: Any) -> PublicAddressResolver:
        resolver = super().from_crawler(crawler, reactor)
        resolver.allow_private = crawler.settings.getbool("CATALOG_ALLOW_PRIVATE_ADDRESSES")
        return resolver

    def getHostByName(self, name: str, timeout: Any = ()) -> Any:  # Twisted's name for it
        deferred = super().getHostByName(name, timeout)
        if self.allow_private or _is_address(name):
            return deferred
        return deferred.addCallback(refuse_private, name)


def refuse_private(address: str, name: str) -> str:
    """`address` when it is public; else the lookup of `name` fails (a name that points inside)."""
    if not is_public_address(address):
        raise PrivateAddressRefused(f"{REFUSED}: {name} resolves to {address}")
    return address


def retry_after_seconds(value: str, now: datetime | None = None) -> float | None:
    """A Retry-After header ("120" or an HTTP date) in seconds from `now`; None when unreadable."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class RetryAfterMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.max_wait = crawler.settings.getfloat("CATALOG_RETRY_AFTER_MAX")

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RetryAfterMiddleware:
        return cls(crawler)

    async def process_response(self, request: Request, response: Response, spider: Any = None) -> Request | Response:
        header = response.headers.get("Retry-After")
        if response.status not in (429, 503) or not header:
            return response
        delay = retry_after_seconds(header.decode("latin-1"))
        if delay is None or delay > self.max_wait:
            return response  # Scrapy's RetryMiddleware retries it at once, or the request fails
        retry = get_retry_request(request, spider=self.crawler.spider, reason=f"{response.status} Retry-After")
        if retry is None:
            return response  # retries used up: the request fails with the shop's answer
        self.crawler.stats.inc_value("catalog/retry_after_waits")
        await asyncio.sleep(delay)
        return retry
