"""The app's limits: photo POSTs only from its own page (or configured origins), and a bounded waiting queue
(503 with Retry-After beyond it)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from fashion_pipeline_tests.fixtures_serving import TWO_GARMENTS, encode, garment_photo, make_recommender
from serve.app import ServeSettings, create_app

GOOD_JPEG = encode(garment_photo(TWO_GARMENTS), "JPEG", quality=90)


def _post(app, headers: dict[str, str], base_url: str = "http://127.0.0.1:8000") -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            return await client.post("/api/recommend", files={"image": ("a.jpg", GOOD_JPEG, "image/jpeg")},
                                     headers=headers)  # fmt: skip

    return asyncio.run(send())


@pytest.mark.parametrize(
    ("headers", "base_url", "allowed"),
    [
        ({}, "http://127.0.0.1:8000", True),  # a script: no Origin
        ({"origin": "http://127.0.0.1:8000"}, "http://127.0.0.1:8000", True),  # the app's own page
        ({"origin": "http://localhost:8000"}, "http://localhost:8000", True),
        ({"origin": "https://evil.example"}, "http://127.0.0.1:8000", False),  # any page the user visits
        ({"origin": "null"}, "http://127.0.0.1:8000", False),  # a sandboxed frame or a file
        ({"origin": "http://evil.example:8000"}, "http://evil.example:8000", False),  # DNS rebinding
        ({"origin": "https://shop.example"}, "http://127.0.0.1:8000", True),  # configured
        ({"origin": "https://shop.example"}, "https://shop.example", True),  # configured, behind its proxy
    ],
)
def test_photo_posts_only_from_the_apps_own_page(serving_catalog, headers, base_url, allowed) -> None:
    settings = ServeSettings(allowed_origins=("https://shop.example",))
    response = _post(create_app(make_recommender(serving_catalog), settings), headers, base_url)
    if allowed:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 403
        assert response.json() == {
            "error": f"photos from pages of {headers['origin']} are refused: only this app's page (or "
            "FASHION_ALLOWED_ORIGINS) may send"
        }


def test_origins_are_read_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("FASHION_ALLOWED_ORIGINS", "https://a.example/, https://b.example")
    monkeypatch.setenv("FASHION_MAX_WAITING", "3")
    settings = ServeSettings.from_env()
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.max_waiting == 3
    assert settings.allowed_hosts() == {"localhost", "127.0.0.1", "::1", "a.example", "b.example"}


def test_requests_beyond_the_waiting_queue_get_503_with_retry_after(serving_catalog) -> None:
    """One worker, one waiting place: a third photo is refused at once instead of holding its upload."""
    recommender = make_recommender(serving_catalog)
    release, started = threading.Event(), threading.Event()
    analyse = recommender.recommend_bytes

    def slow(data, query):
        started.set()
        assert release.wait(30)
        return analyse(data, query)

    recommender.recommend_bytes = slow
    app = create_app(recommender, ServeSettings(inference_workers=1, max_waiting=1))

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:

            def post():
                return client.post("/api/recommend", files={"image": ("a.jpg", GOOD_JPEG, "image/jpeg")})

            running = asyncio.create_task(post())
            await asyncio.to_thread(started.wait, 30)  # the first photo holds the worker
            waiting = asyncio.create_task(post())
            await asyncio.sleep(0.2)  # the second has been read and waits for the worker
            refused = await post()
            release.set()
            return [await running, await waiting, refused]

    running, waiting, refused = asyncio.run(scenario())
    assert (running.status_code, waiting.status_code) == (200, 200)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json() == {"error": "the server is busy analysing other photos: try again in a few seconds"}
