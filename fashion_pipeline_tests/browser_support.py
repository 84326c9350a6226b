"""What the browser tests share: Chromium launched offline with every request recorded, servers started in
the background on free loopback ports, and the screenshots the README shows.

Two records of the browser's traffic are kept. Playwright's request events give every request a page makes,
with its method and type. Chromium's own network log (`--log-net-log`) also has what Playwright cannot see:
requests of shared workers (MLflow's UI sends its telemetry from one) and of the browser itself. Both must
stay on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from PIL import Image

from fashion_pipeline.crawl.settings import LOOPBACK_CHROMIUM_ARGS
from fashion_pipeline_tests.fixtures_catalog import require_chromium

REPO_ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1280, "height": 800}
# Where the screenshots go: FASHION_SCREENSHOTS_DIR=docs refreshes the README's pictures; else a temp folder.
SCREENSHOTS_ENV = "FASHION_SCREENSHOTS_DIR"
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-extension", "devtools"}


def is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or parts.hostname in ("127.0.0.1", "localhost", "::1")


@dataclass
class RequestLog:
    """Every request the pages of a browser made, as (method, url, resource type)."""

    requests: list[tuple[str, str, str]] = field(default_factory=list)

    def record(self, request) -> None:
        self.requests.append((request.method, request.url, request.resource_type))

    def urls(self, method: str | None = None) -> list[str]:
        return [url for m, url, _ in self.requests if method is None or m == method]

    def outside(self) -> list[str]:
        return [f"{m} {url}" for m, url, _ in self.requests if not is_loopback(url)]


def net_log_urls(path: Path) -> list[tuple[str, str]]:
    """(method, url) of every URL request in a Chromium network log, the browser's own included."""
    events = json.loads(path.read_text())["events"]
    found = []
    for event in events:
        params = event.get("params") or {}
        if "url" in params and "method" in params:  # URL_REQUEST_START_JOB: one per request actually started
            found.append((params["method"], params["url"]))
    return found


@dataclass
class Browser:
    """A Chromium with its request log; `close()` ends it and returns what its network log recorded."""

    browser: object
    log: RequestLog
    net_log: Path

    def new_page(self, **options):
        context = self.browser.new_context(viewport=VIEWPORT, **options)
        context.on("request", self.log.record)
        page = context.new_page()
        page.set_default_timeout(30_000)
        return page


@contextlib.contextmanager
def playwright_session() -> Iterator[object]:
    """Playwright's driver, for one module: one per thread at a time, each browser launched from it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        yield playwright


@contextlib.contextmanager
def chromium(playwright, tmp_dir: Path) -> Iterator[Browser]:
    """Chromium as the crawl tests start it (LOOPBACK_CHROMIUM_ARGS, its own services turned inward), with a network log.

    On exit it checks both records: no request of any page, worker or of the browser left 127.0.0.1.
    """
    executable = require_chromium()
    net_log = Path(tmp_dir) / "chromium-net-log.json"
    args = [*LOOPBACK_CHROMIUM_ARGS, f"--log-net-log={net_log}"]
    handle = Browser(playwright.chromium.launch(executable_path=executable, args=args), RequestLog(), net_log)
    try:
        yield handle
    finally:
        handle.browser.close()
    started = net_log_urls(net_log)
    print(f"chromium: {len(handle.log.requests)} page requests, {len(started)} requests in its network log")
    outside = [f"{method} {url}" for method, url in started if not is_loopback(url)]
    assert handle.log.outside() == [], f"pages reached beyond 127.0.0.1: {handle.log.outside()}"
    assert outside == [], f"the browser reached beyond 127.0.0.1: {outside}"


@contextlib.contextmanager
def app_page(browser: Browser, url: str, errors: list[str]) -> Iterator[object]:
    """The shopping page at `url`, ready (its filters filled from /healthz); then it must have logged no
    error: script errors, CSP violations, failed loads (a test expecting one removes it from `errors`)."""
    page = browser.new_page()
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]", state="attached")
    yield page
    page.context.close()
    assert errors == [], f"the page logged errors: {errors}"


def save_screenshot(page, name: str, fallback_dir: Path) -> Path:
    """The viewport as `<name>.png`, reduced to a 256-colour palette (a UI screenshot barely changes)."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or fallback_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    raw = folder / f".{name}.raw.png"
    page.screenshot(path=str(raw))
    with Image.open(raw) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    raw.unlink()
    return path


# --- servers in the background ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What marks a process as CI or a test run: MLflow switches its telemetry off by itself when it sees one, so
# a server started with them would hide whether the project's own setting does it.
CI_MARKERS = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY")


@dataclass
class BackgroundServer:
    """A server process started in its own process group; `url` once it answers."""

    name: str
    command: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/", timeout_s: float = 120.0) -> BackgroundServer:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                list(self.command), cwd=REPO_ROOT, env=dict(self.env), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + ready_path, timeout=2).status_code == 200:
                    return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            # Not the servers' full graceful shutdown: it waits for the browser's idle keep-alive connections.
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
