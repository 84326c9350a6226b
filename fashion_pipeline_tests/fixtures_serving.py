"""Fixtures for the recommender, the app and the CLI: fake models over a tiny real catalog and k-NN index.

The fakes implement the detector and embedder interfaces of lib/training/detector.py and
lib/training/embedder.py with colour rules, so a test knows exactly which garment a photo holds and which
product must come back:

- `ColourDetector` finds saturated colour patches: red = shirt, blue = short, green = skirt, magenta =
  dress, orange = outwear. A grey or greyscale photo has no garment.
- `ColourEmbedder` embeds an image as its mean colour over a 3x3 grid, so the product whose image has the
  patch's colour is the nearest.

The catalog (products.parquet, product images) and the indexes (real `knn.build_index`) are written under a
temporary data root; product pages and the shops' image URLs are served by a local "shop" server.
"""

from __future__ import annotations

import functools
import http.server
import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fashion_pipeline.lib.common.categories import CATEGORIES
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.retrieval.knn import build_index, load_indexes
from fashion_pipeline.lib.retrieval.recommender import Recommender

EMBEDDER_VERSION = 3
DETECTOR_VERSION = 2
GREY = (128, 128, 128)
GARMENT_COLOURS = {
    "shirt": (220, 30, 30),
    "outwear": (240, 140, 20),
    "short": (30, 30, 220),
    "skirt": (30, 200, 30),
    "dress": (200, 30, 200),
}
SITES = ("demo_shop", "other_shop")
EUR_TO_USD = 1.08


@dataclass(frozen=True)
class FakeDetection:
    box: tuple[float, float, float, float]
    category: str
    score: float


def _colour_mask(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    # Generous tolerance: JPEG, WebP and palette encodings shift colours a little.
    return (np.abs(pixels.astype(np.int16) - np.array(colour, dtype=np.int16)) <= 45).all(axis=2)


class ColourDetector:
    """Detects each garment colour patch covering at least 1% of the photo; counts concurrent calls."""

    version = DETECTOR_VERSION
    classes = CATEGORIES

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s  # lets a concurrency test see calls overlap
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def detect(self, image: Image.Image, conf: float = 0.25) -> list[FakeDetection]:
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            pixels = np.asarray(image.convert("RGB"))
            found = []
            for category, colour in GARMENT_COLOURS.items():
                mask = _colour_mask(pixels, colour)
                if mask.sum() < 0.01 * mask.size:
                    continue
                ys, xs = np.nonzero(mask)
                box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
                found.append(FakeDetection(box=box, category=category, score=0.9))
            return [d for d in found if d.score >= conf]
        finally:
            with self._lock:
                self.in_flight -= 1


class ColourEmbedder:
    """Mean colour over a 3x3 grid, L2-normalised (27-d); records each batch size."""

    version = EMBEDDER_VERSION
    classes = CATEGORIES
    input_size = 24
    embedding_dim = 27

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.batch_sizes.append(len(images))
        rows = []
        for image in images:
            small = np.asarray(image.convert("RGB").resize((24, 24)), dtype=np.float32) / 255.0
            grid = small.reshape(3, 8, 3, 8, 3).mean(axis=(1, 3))  # (3, 3, RGB)
            rows.append(grid.reshape(-1))
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(images), self.embedding_dim)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)


# --- photos ---------------------------------------------------------------------------------------------
def garment_photo(
    patches: dict[str, tuple[int, int, int, int]], size: tuple[int, int] = (320, 240), background=GREY
) -> Image.Image:
    """A grey photo with one solid patch per garment category at the given (x1, y1, x2, y2) boxes."""
    image = Image.new("RGB", size, background)
    for category, box in patches.items():
        image.paste(GARMENT_COLOURS[category], box)
    return image


TWO_GARMENTS = {"shirt": (40, 30, 140, 130), "skirt": (180, 120, 280, 220)}


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes) -> bytes:
    """A PNG written by hand, for what PIL cannot write: 16-bit RGB, or a header claiming huge dimensions."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b"")


def rgb16_png(image: Image.Image) -> bytes:
    pixels = np.asarray(image.convert("RGB"), dtype=">u2") * 257  # 8 -> 16 bit, big-endian as PNG wants
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter type 0 per row
    return png_bytes(image.width, image.height, 16, 2, rows)


def decompression_bomb_png(side: int = 30_000) -> bytes:
    """A PNG whose header claims side x side greyscale pixels, with a few kilobytes of data: cheap to send."""
    return png_bytes(side, side, 8, 0, b"\x00" * (side + 1) * 4)


def exif_rotated_jpeg() -> tuple[bytes, tuple[float, float, float, float]]:
    """A JPEG stored landscape with EXIF orientation 6 (rotate 90 degrees clockwise to display).

    Returns the bytes and the shirt's box in the upright (portrait, 240 x 320) photo.
    """
    stored = garment_photo({"shirt": (20, 30, 100, 90)}, size=(320, 240))
    exif = Image.Exif()
    exif[0x0112] = 6
    # Rotating the stored image 90 degrees clockwise maps (x, y) to (H - y, x): box (20,30)-(100,90) in
    # the 320 x 240 stored frame lands at x 240-90..240-30, y 20..100 in the upright frame.
    return encode(stored, "JPEG", quality=95, exif=exif), (150.0, 20.0, 210.0, 100.0)


def animated_gif() -> bytes:
    first = garment_photo(TWO_GARMENTS)
    second = garment_photo({"dress": (10, 10, 100, 100)})
    buffer = io.BytesIO()
    first.save(buffer, format="GIF", save_all=True, append_images=[second], duration=100, loop=0)
    return buffer.getvalue()


def working_formats() -> dict[str, tuple[bytes, set[str]]]:
    """Uploads that must be answered with 200: name -> (bytes, garments the fake detector must find)."""
    photo = garment_photo(TWO_GARMENTS)
    both = {"shirt", "skirt"}
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.new("L", photo.size, 255).point(lambda _: 200))  # translucent overall
    rgba.paste((*GARMENT_COLOURS["shirt"], 255), TWO_GARMENTS["shirt"])
    rgba.paste((*GARMENT_COLOURS["skirt"], 255), TWO_GARMENTS["skirt"])
    grey16 = Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    return {
        "jpeg": (encode(photo, "JPEG", quality=92), both),
        "animated_gif": (animated_gif(), both),  # first frame
        "cmyk_jpeg": (encode(photo.convert("CMYK"), "JPEG", quality=95), both),
        "rgb_16bit_png": (rgb16_png(photo), both),
        "grey_16bit_png": (encode(grey16, "PNG"), set()),  # no colour left: no garment, still 200
        "palette_png": (encode(photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG"), both),
        "rgba_png": (encode(rgba, "PNG"), both),
        "greyscale_jpeg": (encode(photo.convert("L"), "JPEG"), set()),
        "webp": (encode(photo, "WEBP", quality=90), both),
    }


# --- catalog, indexes, shop -----------------------------------------------------------------------------
def _shade(colour: tuple[int, int, int], step: int) -> tuple[int, int, int]:
    # step 0 is the garment colour itself; later steps drift towards grey, so they rank lower.
    return tuple(int(c + (128 - c) * 0.15 * step) for c in colour)  # type: ignore[return-value]


@dataclass(frozen=True)
class ServingCatalog:
    paths: DataPaths
    products: pd.DataFrame
    shop_url: str


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture(scope="session")
def serving_shop(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A local shop web server: product pages and the shop's own product images (its `image_url`s)."""
    root = tmp_path_factory.mktemp("serving_shop")
    (root / "product").mkdir()
    (root / "img").mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def write_catalog(root: Path, shop_url: str, shop_root: Path, per_category: int = 6) -> ServingCatalog:
    """products.parquet + product images + one real k-NN index per category, under data root `root`."""
    paths = DataPaths(root=root)
    embedder = ColourEmbedder()
    rows = []
    images: dict[str, list[Image.Image]] = {}
    for category, colour in GARMENT_COLOURS.items():
        for step in range(per_category):
            site = SITES[step % 2]
            sku = f"{category}-{step}"
            # The product fills its photo but for a grey rim as wide as the crop margin around a detection,
            # so the product of the patch's exact colour is the nearest to a detected patch.
            image = Image.new("RGB", (66, 66), GREY)
            image.paste(_shade(colour, step), (3, 3, 63, 63))
            image_path = paths.catalog_images_dir / site / f"{sku}.jpg"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            image.save(image_path, quality=95)
            image.save(shop_root / "img" / f"{sku}.jpg", quality=95)
            (shop_root / "product" / f"{sku}.html").write_text(
                f"<!doctype html><meta charset=utf-8><title>{sku}</title><h1>{category} {step}</h1>"
            )
            euro = site == "other_shop"
            price = 20.0 + 10 * step
            rows.append(
                {
                    "product_id": f"{site}:{sku}",
                    "site": site,
                    "sku": sku,
                    "name": f"{category.title()} no. {step}",
                    "url": f"{shop_url}/product/{sku}.html",
                    "image_url": f"{shop_url}/img/{sku}.jpg",
                    # relative to the catalog images folder, as the crawl's image pipeline stores it
                    "image_path": f"{site}/{sku}.jpg",
                    "price": price,
                    "currency": "EUR" if euro else "USD",
                    "price_usd": round(price * EUR_TO_USD, 2) if euro else price,
                    "category": category,
                    "first_seen": pd.Timestamp("2024-01-01", tz="UTC"),
                    "last_seen": pd.Timestamp("2024-01-02", tz="UTC"),
                }
            )
            images.setdefault(category, []).append(image)
    products = pd.DataFrame(rows)
    paths.products.parent.mkdir(parents=True, exist_ok=True)
    products.to_parquet(paths.products, index=False)
    for category, category_images in images.items():
        ids = products.loc[products["category"] == category, "product_id"].tolist()
        build_index(
            embedder.embed(category_images),
            ids,
            paths.index_dir / category,
            category=category,
            model_version=EMBEDDER_VERSION,
        )
    return ServingCatalog(paths=paths, products=products, shop_url=shop_url)


@pytest.fixture(scope="session")
def serving_catalog(tmp_path_factory, serving_shop) -> ServingCatalog:
    shop_url, shop_root = serving_shop
    return write_catalog(tmp_path_factory.mktemp("serving_data"), shop_url, shop_root)


def make_recommender(catalog: ServingCatalog, detector: ColourDetector | None = None) -> Recommender:
    return Recommender(
        detector or ColourDetector(),
        ColourEmbedder(),
        load_indexes(catalog.paths.index_dir),
        catalog.products,
        paths=catalog.paths,
    )


@pytest.fixture(scope="session")
def serving_recommender(serving_catalog) -> Recommender:
    return make_recommender(serving_catalog)


# --- a real server --------------------------------------------------------------------------------------
class LiveServer:
    """The app under uvicorn on 127.0.0.1 and a free port, in a background thread of the test process."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.recommender: Recommender = app.state.recommender
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def serving_server(serving_catalog) -> Iterator[LiveServer]:
    from serve.app import ServeSettings, create_app

    app = create_app(make_recommender(serving_catalog), ServeSettings())
    with LiveServer(app) as server:
        yield server


# --- tiny real models: the real loaders, ONNX Runtime and Keras, untrained and small ---------------------
REAL_MODEL_VERSION = 7


def build_tiny_real_models(paths: DataPaths) -> None:
    """An untrained yolo11n (5 classes, 64 px, ONNX) and MobileNetV3Small (32 px) as champions under `paths`.

    Untrained weights detect nothing, but every stage runs the real code: decode, ONNX Runtime, Keras.
    """
    import json
    import shutil

    import yaml

    from fashion_pipeline.lib.common import frameworks
    from fashion_pipeline.lib.training import classifier_model, detector, detector_training

    frameworks.ultralytics()
    import ultralytics
    from ultralytics import YOLO

    paths.detector_dir.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((Path(ultralytics.__file__).parent / "cfg/models/11/yolo11.yaml").read_text())
    cfg["nc"] = len(CATEGORIES)
    yaml_path = paths.detector_dir / "yolo11n.yaml"  # the file name carries the scale: n
    yaml_path.write_text(yaml.safe_dump(cfg))
    weights = paths.detector_dir / detector_training.WEIGHTS_FILE
    YOLO(str(yaml_path)).save(str(weights))
    exported = YOLO(str(weights)).export(format="onnx", imgsz=64, simplify=False, device="cpu", verbose=False)
    if Path(exported).resolve() != (paths.detector_dir / detector.ONNX_FILE).resolve():
        shutil.move(exported, paths.detector_dir / detector.ONNX_FILE)
    (paths.detector_dir / "metadata.json").write_text(
        json.dumps({"classes": list(CATEGORIES), "input_size": 64, "registered_version": 4})
    )

    settings = classifier_model.ClassifierSettings(
        architecture="mobilenet_v3_small", pretrained="none", input_size=32, augment=False
    )
    model = classifier_model.build_model(settings)
    paths.classifier_dir.mkdir(parents=True, exist_ok=True)
    model.save(paths.classifier_dir / classifier_model.MODEL_FILE)
    metadata = {
        "classes": list(CATEGORIES),
        "input_size": 32,
        "embedding_dim": int(model.get_layer(classifier_model.EMBEDDING_LAYER).output.shape[-1]),
        "registered_version": REAL_MODEL_VERSION,
    }
    (paths.classifier_dir / "metadata.json").write_text(json.dumps(metadata))


@pytest.fixture(scope="session")
def tiny_real_catalog(tmp_path_factory, serving_shop) -> ServingCatalog:
    """The fake catalog, embedded by a real (untrained) classifier into real indexes, beside real models."""
    from fashion_pipeline.lib.common.images import load_image
    from fashion_pipeline.lib.training.embedder import load_embedder

    shop_url, shop_root = serving_shop
    catalog = write_catalog(tmp_path_factory.mktemp("real_models_data"), shop_url, shop_root)
    paths = catalog.paths
    build_tiny_real_models(paths)
    embedder = load_embedder(paths.classifier_dir)
    products = catalog.products
    for category, group in products.groupby("category"):
        images = [load_image(paths.catalog_images_dir / p) for p in group["image_path"]]
        build_index(
            embedder.embed(images),
            group["product_id"].tolist(),
            paths.index_dir / category,
            category=category,
            model_version=embedder.version,
        )
    return catalog
