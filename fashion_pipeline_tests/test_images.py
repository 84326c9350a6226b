"""The one image loader: every upload format to upright RGB, and a clear ImageError for the rest."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from fashion_pipeline.lib.common import frameworks
from fashion_pipeline.lib.common.images import ImageError, load_image


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_garbage_is_an_image_error_even_after_ultralytics_is_loaded() -> None:
    # Ultralytics patches PIL.Image.open to pip-install pi-heif on unknown files; frameworks undoes that.
    frameworks.ultralytics()
    with pytest.raises(ImageError) as refused:
        load_image(b"%PDF-1.4 certainly not a picture")
    # In words, without PIL's "<_io.BytesIO object at 0x...>".
    assert str(refused.value) == "not a readable image: the file is not JPEG, PNG, WebP, GIF, BMP or TIFF data"


def test_empty_and_truncated_files_are_refused() -> None:
    with pytest.raises(ImageError, match="empty file"):
        load_image(b"")
    jpeg = _encoded(Image.new("RGB", (64, 64), "red"), "JPEG")
    with pytest.raises(ImageError, match="broken image data"):
        load_image(jpeg[: len(jpeg) // 2])


def test_formats_outside_the_allowed_list_are_refused() -> None:
    with pytest.raises(ImageError):
        load_image(_encoded(Image.new("RGB", (8, 8)), "PPM"))


@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (Image.new("RGBA", (10, 6), (255, 0, 0, 0)), "PNG"),
        (Image.new("L", (10, 6), 128), "PNG"),
        (Image.new("P", (10, 6), 3), "GIF"),
        (Image.new("CMYK", (10, 6), (0, 255, 0, 0)), "JPEG"),
        (Image.new("RGB", (10, 6), "blue"), "WEBP"),
    ],
)
def test_every_mode_becomes_rgb(image: Image.Image, fmt: str) -> None:
    loaded = load_image(_encoded(image, fmt))
    assert loaded.mode == "RGB" and loaded.size == (10, 6)


def test_transparent_pixels_are_composited_on_white() -> None:
    loaded = load_image(_encoded(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), "PNG"))
    assert loaded.getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    loaded = load_image(_encoded(Image.new("RGB", (40, 20), "green"), "JPEG", exif=exif))
    assert loaded.size == (20, 40)
