"""Catalog fixtures: small generated demo shops, a fault-injecting shop server, and the Chromium requirement."""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from PIL import Image

from fashion_pipeline.crawl.settings import chromium_executable
from fashion_pipeline.lib.catalog.sites import SITES_FILE, SiteConfig, load_sites
from fashion_pipeline.lib.samples.demo_shop import DemoShop, build_demo_shop, make_stand_in_items
from fashion_pipeline.lib.samples.demo_shop_site import QuietHandler

# Crawls in tests reach only loopback: Chromium resolves nothing else (the crawl subprocess has no socket guard).
os.environ.setdefault("FASHION_CRAWL_LOOPBACK_ONLY", "1")

# Small pages so a 20-product shop still paginates (and its JavaScript category has two pages).
TEST_PER_PAGE = 3
# Crawls against the loopback servers: a timeout short enough that the injected one costs little, and long
# enough that a JavaScript page rendered by Chromium on a loaded 2-core machine never hits it.
FAST_CRAWL_SETTINGS = {"DOWNLOAD_TIMEOUT": "4", "RETRY_TIMES": "1", "LOG_LEVEL": "INFO"}


def use_sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sites: dict) -> dict[str, SiteConfig]:
    """A sites file with `sites` (and the packaged keywords and rates), used by this test and its crawls."""
    packaged = yaml.safe_load(SITES_FILE.read_text())
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump({**packaged, "sites": sites}))
    monkeypatch.setenv("FASHION_SITES_FILE", str(path))  # the crawl subprocess inherits it
    return load_sites(path)


def write_photos(folder: Path, names: list[str]) -> None:
    """Distinct drawn product photos named `names` in `folder`."""
    items = make_stand_in_items(folder / "_drawn", len(names))
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in zip(names, items["image_path"], strict=True):
        Path(path).rename(folder / name)
    shutil.rmtree(folder / "_drawn")


def require_chromium() -> str:
    """The browser the JS-page tests run; missing is a failure (make test installs it), never a skip."""
    executable = chromium_executable()
    if executable is None or not Path(executable).exists():
        pytest.fail(
            f"Chromium not found (FASHION_CHROMIUM_PATH or /usr/bin/chromium; got {executable!r}): "
            "`make test` installs Debian's chromium (apt-get install -y chromium); "
            "with network, `playwright install chromium` works too."
        )
    return executable


def build_test_shop(root: Path, n_products: int = 20, seed: int = 0) -> DemoShop:
    items = make_stand_in_items(root / "photos", n_products, seed=seed)
    return build_demo_shop(items, root / "shop", per_page=TEST_PER_PAGE, seed=seed)


@pytest.fixture(scope="session")
def small_demo_shop(tmp_path_factory) -> DemoShop:
    """A 20-product demo shop (read-only use): 4 per page, dresses listed by JavaScript, the usual faults."""
    return build_test_shop(tmp_path_factory.mktemp("demo-shop"))


class FaultyShop(QuietHandler):
    """Serves a demo shop with faults injected on chosen paths; counts every request it receives.

    `faults` maps a URL path to one of: "500-once", "500" (every time), "404", "timeout", "redirect-loop", "truncated-image",
    "not-an-image", "image-of:<path>" (another image re-encoded: a perceptual duplicate), "malformed",
    and "robots-disallow" (listed in robots.txt; must never be requested).
    """

    faults: ClassVar[dict[str, str]] = {}
    requests: ClassVar[Counter] = Counter()
    lock = threading.Lock()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        with self.lock:
            self.requests[path] += 1
            seen = self.requests[path]
        fault = self.faults.get(path, "")
        if path == "/robots.txt":
            disallowed = [p for p, f in self.faults.items() if f == "robots-disallow"]
            return self._send(
                200,
                "text/plain",
                ("User-agent: *\nDisallow: /cart/\n" + "".join(f"Disallow: {p}\n" for p in disallowed)).encode(),
            )
        if path == "/index.html":
            # An extra "category" whose listing page is broken HTML without product cards.
            page = (Path(self.directory) / "index.html").read_text()
            extra = '<a class="category-link" data-category="skirt" href="/c/broken.html">More</a></nav>'
            return self._send(200, "text/html; charset=utf-8", page.replace("</nav>", extra, 1).encode())
        if path == "/c/broken.html":
            return self._send(200, "text/html", b"<html><body><div id='listing'><p>Oops<div></span><a href=")
        if fault == "500-once" and seen == 1:
            return self._send(500, "text/plain", b"try again")
        if fault == "500":
            return self._send(500, "text/plain", b"server error")
        if fault == "404":
            return self._send(404, "text/plain", b"gone")
        if fault == "timeout":
            time.sleep(10)  # well past FAST_CRAWL_SETTINGS' DOWNLOAD_TIMEOUT
            return self._send(200, "text/plain", b"too late")
        if fault == "redirect-loop":
            self.send_response(302)
            self.send_header("Location", f"{path}?hop={seen}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if fault == "truncated-image":
            body = (Path(self.directory) / path.lstrip("/")).read_bytes()
            return self._send(200, "image/jpeg", body[: len(body) // 2])
        if fault == "not-an-image":
            return self._send(200, "image/jpeg", b"<html>this is not a picture</html>")
        if fault.startswith("image-of:"):
            original = Image.open(Path(self.directory) / fault.split(":", 1)[1].lstrip("/"))
            buffer = io.BytesIO()
            original.save(buffer, "JPEG", quality=70)  # the same photo, re-encoded
            return self._send(200, "image/jpeg", buffer.getvalue())
        return super().do_GET()

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def faulty_shop_handler(faults: dict[str, str]) -> type[FaultyShop]:
    """A FaultyShop subclass with its own fault map and request counter."""
    return type("FaultyShopWithFaults", (FaultyShop,), {"faults": faults, "requests": Counter()})
