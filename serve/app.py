"""The shopping app: `POST /api/recommend`, `GET /healthz`, product images and the one page at `GET /`.

It reads the materialized files only, through the `Recommender` of the current serving release, loaded at
start and reloaded between requests when the release pointer moves (lib/retrieval/release_watch.py). Model
inference is CPU-bound, so it runs in worker threads, at most `inference_workers` at a time: a burst of requests
queues instead of oversubscribing the cores or decoding every photo at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fashion_pipeline.lib.common.images import ImageError
from fashion_pipeline.lib.retrieval.query import QueryError
from fashion_pipeline.lib.retrieval.recommender import Recommender
from fashion_pipeline.lib.retrieval.release_watch import DEFAULT_CHECK_S, ServedRelease
from fashion_pipeline.lib.samples.demo_shop import public_url as demo_shop_public_url
from serve.upload import IMAGE_FIELD, UploadError, read_upload

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEMO_SHOP_PATH = "/demo-shop"
QUERY_FIELDS = ("k", "category", "max_price", "site", "crops")
# The page loads only its own script and style; product images may come from the shops themselves.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; "
    "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class ServeSettings:
    max_upload_mb: float = 10.0
    inference_workers: int = min(2, os.cpu_count() or 1)
    # Photo requests held beyond those being analysed (each holds its upload); more are answered 503.
    max_waiting: int = 32
    # Other origins whose pages may POST photos ("https://shop.example"); this app's own page always may.
    allowed_origins: tuple[str, ...] = ()
    # Open connections uvicorn accepts before answering 503 (`limit_concurrency`).
    max_connections: int = 64
    # Seconds between two looks at the release pointer (`FASHION_RELEASE_CHECK_S`): a new release is served
    # that long after it is switched in, plus its loading time.
    release_check_s: float = DEFAULT_CHECK_S

    @classmethod
    def from_env(cls) -> ServeSettings:
        """`FASHION_MAX_UPLOAD_MB`, `FASHION_INFERENCE_WORKERS`, `FASHION_MAX_WAITING`,
        `FASHION_ALLOWED_ORIGINS` (comma-separated) and `FASHION_RELEASE_CHECK_S`, when set."""
        default = cls()
        origins = os.environ.get("FASHION_ALLOWED_ORIGINS", "")
        return cls(
            max_upload_mb=float(os.environ.get("FASHION_MAX_UPLOAD_MB", default.max_upload_mb)),
            inference_workers=int(os.environ.get("FASHION_INFERENCE_WORKERS", default.inference_workers)),
            max_waiting=int(os.environ.get("FASHION_MAX_WAITING", default.max_waiting)),
            allowed_origins=tuple(o.strip().rstrip("/") for o in origins.split(",") if o.strip()),
            release_check_s=float(os.environ.get("FASHION_RELEASE_CHECK_S", default.release_check_s)),
        )

    def allowed_hosts(self) -> set[str]:
        return set(LOOPBACK_HOSTS) | {urlsplit(o).hostname or "" for o in self.allowed_origins}

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


def _origin_problem(request: Request, allowed_origins: tuple[str, ...], allowed_hosts: set[str]) -> str | None:
    """Why a browser's POST is refused (another origin, or this origin under a foreign host name), or None."""
    origin = request.headers.get("origin")
    if origin is None:
        return None  # not sent by a browser page (curl, scripts): nothing to forge
    if origin.rstrip("/") in allowed_origins:
        return None
    host = request.headers.get("host", "")
    hostname = urlsplit(f"//{host}").hostname or ""
    # Same origin under a name this app answers to: a page that rebinds its own name to 127.0.0.1 is refused.
    if origin in (f"http://{host}", f"https://{host}") and hostname in allowed_hosts:
        return None
    return f"photos from pages of {origin} are refused: only this app's page (or FASHION_ALLOWED_ORIGINS) may send"


def create_app(recommender: Recommender | ServedRelease, settings: ServeSettings | None = None) -> FastAPI:
    """The app around the served release (`serve` passes one that follows the pointer), or around a fixed,
    already loaded recommender (tests pass one built from fakes)."""
    settings = settings or ServeSettings()
    if settings.inference_workers < 1:
        raise ValueError(f"inference_workers must be at least 1, got {settings.inference_workers}")
    served = recommender if isinstance(recommender, ServedRelease) else ServedRelease(recommender)
    recommender = served.recommender  # the data root (images, demo shop) is the same for every release
    app = FastAPI(title="fashion-pipeline", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served
    app.state.recommender = recommender  # the one serving now; the middleware below keeps it current
    app.state.settings = settings
    limiters: dict[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = {}

    def inference_limiter() -> anyio.CapacityLimiter:
        # One limiter per event loop (a test client may run several loops over the app's life).
        loop = asyncio.get_running_loop()
        if loop not in limiters:
            limiters.clear()
            limiters[loop] = anyio.CapacityLimiter(settings.inference_workers)
        return limiters[loop]

    allowed_hosts = settings.allowed_hosts()

    @app.middleware("http")
    async def same_origin_posts(request: Request, call_next) -> Response:
        # A form POST from any page the user visits needs no CORS preflight, so a photo request must come
        # from this app's own page (or a configured origin), to a host name this app answers to (a page
        # that rebinds its own name to 127.0.0.1 would otherwise be "same origin").
        if request.method == "POST":
            problem = _origin_problem(request, settings.allowed_origins, allowed_hosts)
            if problem:
                return _error(403, problem)
        return await call_next(request)

    @app.middleware("http")
    async def current_release(request: Request, call_next) -> Response:
        # Between requests: the pointer is looked at (a readlink, at most every release_check_s) and a newer
        # release loads in a thread. This request answers with the recommender it gets here, to its end.
        request.state.recommender = app.state.recommender = served.current()
        return await call_next(request)

    @app.middleware("http")
    async def security_headers(request: Request, call_next) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            message = f"nothing at {request.url.path}"
        return _error(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error(422, problems or "invalid request")

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: logged with its traceback, answered as JSON like every other error.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error: the server log has the details")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    demo_shop = recommender.paths.demo_shop_dir if recommender.paths else None
    served_shop: dict[str, str] | None = None
    if demo_shop is not None and demo_shop.is_dir():
        # The catalog records the demo shop's pages under FASHION_DEMO_SHOP_URL (by default this app's own
        # address); the page maps those links here, so they open whatever host and port the app runs on.
        app.mount(DEMO_SHOP_PATH, StaticFiles(directory=demo_shop, html=True), name="demo-shop")
        served_shop = {"url": demo_shop_public_url(), "served_at": f"{DEMO_SHOP_PATH}/"}

    @app.get("/healthz")
    async def healthz(request: Request) -> dict:
        # `release`: the one answering; `newer_release`: the one the pointer names while it loads or failed to.
        health = {
            **request.state.recommender.health(),
            **served.status(),
            "max_upload_bytes": settings.max_upload_bytes,
        }
        return {**health, "demo_shop": served_shop} if served_shop else health

    images_dir = recommender.paths.catalog_images_dir.resolve() if recommender.paths else None

    @app.get("/images/{product_id:path}")
    async def product_image(product_id: str, request: Request) -> Response:
        # The path comes from the catalog row of this product id, never from the request.
        path = request.state.recommender.product_image_path(product_id)
        # Only the catalog's image folder is served: a row naming another file under the data root (the
        # Parquet tables, a model) is refused as if it had no image.
        if path is None or images_dir is None or not path.resolve().is_relative_to(images_dir):
            return _error(404, f"no downloaded image for product {product_id!r}")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})

    held = {"requests": 0}  # photo requests being read, waiting for a worker or analysed (one event loop)

    @app.post("/api/recommend")
    async def recommend(request: Request) -> JSONResponse:
        if held["requests"] >= settings.inference_workers + settings.max_waiting:
            return JSONResponse(
                {"error": "the server is busy analysing other photos: try again in a few seconds"},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_S), "Cache-Control": "no-store"},
            )
        held["requests"] += 1
        try:
            return await _recommend(request)
        finally:
            held["requests"] -= 1

    async def _recommend(request: Request) -> JSONResponse:
        recommender = request.state.recommender  # one release for the whole request
        upload = await read_upload(request, settings.max_upload_bytes)
        # The options may also come in the URL (?k=5&site=...), for scripts; form fields win.
        fields = {**request.query_params, **upload.fields}
        unknown = sorted(set(fields) - set(QUERY_FIELDS))
        if unknown:
            return _error(
                422, f"unknown field(s) {', '.join(unknown)}: send {IMAGE_FIELD} and any of {', '.join(QUERY_FIELDS)}"
            )
        try:
            query = recommender.make_query(
                k=fields.get("k"),
                category=fields.get("category"),
                max_price=fields.get("max_price"),
                site=fields.get("site"),
                include_crops=fields.get("crops", "").lower() in ("1", "true", "yes"),
            )
        except QueryError as exc:
            return _error(422, str(exc))
        try:
            answer = await anyio.to_thread.run_sync(
                recommender.recommend_bytes, upload.image, query, limiter=inference_limiter()
            )
        except ImageError as exc:
            return _error(400, str(exc))
        return JSONResponse(answer.to_dict(), headers={"Cache-Control": "no-store"})

    return app
