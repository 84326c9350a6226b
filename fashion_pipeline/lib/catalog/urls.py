"""Product links: one canonical spelling per page, and which links a site's products may carry."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

# Query parameters that only track where a click came from: they never change the product shown.
_TRACKING_PARAMS = frozenset(
    {"ref", "ref_", "tag", "qid", "sr", "keywords", "psc", "spm", "gclid", "fbclid", "crid", "sprefix"}
)


def canonical_url(url: str) -> str:
    """One spelling per product page: tracking parameters, fragments and redirect wrappers removed.

    `https://Shop.example/p/1.html?ref=sale#top` and `https://shop.example/p/1.html` are the same product.
    The path is kept as written (some shops need their trailing slash), so the result stays a working link.
    Ad redirects that carry the target in a `url` parameter (Amazon's `/gp/slredirect/...`) are unwrapped.
    """
    parts = urlsplit(url.strip())
    query = parse_qsl(parts.query, keep_blank_values=True)
    target = dict(query).get("url")
    if target and ("redirect" in parts.path.lower()) and target.startswith(("/", "http")):
        # parse_qsl has already percent-decoded it. Resolved as a browser would: "//host/x" is another host,
        # which validation (run after this) then refuses.
        return canonical_url(urljoin(urlunsplit((parts.scheme, parts.netloc, "/", "", "")), target))
    kept = sorted(
        (key, value)
        for key, value in query
        if key.lower() not in _TRACKING_PARAMS and not key.lower().startswith("utm_")
    )
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", urlencode(kept), ""))


def host_allowed(host: str | None, domains: Iterable[str]) -> bool:
    """Whether `host` is one of `domains` or a subdomain of one ("www.shop.example" of "shop.example")."""
    host = (host or "").lower().rstrip(".")
    return bool(host) and any(host == d or host.endswith(f".{d}") for d in domains)


def link_problem(url: str, domains: Iterable[str] | None, schemes: Iterable[str] = ("http", "https")) -> str | None:
    """Why `url` cannot be a product's link (a scheme not in `schemes`, a host outside `domains`), or None.

    `domains=None` accepts any host. File links carry no host; the folder reader keeps them in its folder.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "malformed URL"
    if parts.scheme not in schemes:
        return "not an http(s) link" if parts.scheme != "file" else "file link"
    if parts.scheme != "file" and domains is not None and not host_allowed(host, domains):
        return "link to another site"
    return None
