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


def _quadrants(size: tuple[int, int]) -> Image.Image:
    """Red left half, blue right half: a downscaled decode must keep where things are."""
    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((30, 30, 200), (size[0] // 2, 0, size[0], size[1]))
    return image


@pytest.mark.parametrize(
    ("fmt", "size", "decoded"),
    [
        ("JPEG", (4000, 3000), (1000, 750)),  # the JPEG decoder's own 1/4 scale
        ("JPEG", (3000, 1000), (1500, 500)),  # 1/2: 1/4 would be smaller than asked
        ("PNG", (3000, 2000), (1000, 667)),  # decoded, then reduced by 3
        ("PNG", (1500, 900), (1500, 900)),  # under twice the bound: kept as it is
        ("JPEG", (800, 600), (800, 600)),
    ],
)
def test_large_photos_are_decoded_downscaled(fmt: str, size: tuple[int, int], decoded: tuple[int, int]) -> None:
    image = load_image(_encoded(_quadrants(size), fmt), max_side=1000)
    assert image.size == decoded and image.mode == "RGB"
    left, right = image.getpixel((decoded[0] // 4, decoded[1] // 2)), image.getpixel((3 * decoded[0] // 4, 1))
    assert left[0] > 150 > left[2] and right[2] > 150 > right[0]


def test_a_64_megapixel_jpeg_never_exists_at_full_size(tmp_path) -> None:
    """Peak memory of a fresh process decoding an 8000 x 8000 JPEG: the full decode alone would be 192 MB."""
    import subprocess
    import sys

    photo = tmp_path / "big.jpg"
    Image.new("RGB", (8000, 8000), (120, 80, 40)).save(photo, quality=80)
    script = (
        "import resource, sys\n"
        "from fashion_pipeline.lib.common.images import load_image\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "image = load_image(data, max_side=1280)\n"
        "print(image.size, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(photo)], capture_output=True, text=True, check=True)
    size, growth_mb = result.stdout.rsplit(" ", 1)
    assert size == "(2000, 2000)"  # the decoder's 1/4 scale, the largest that stays over 1280
    assert int(growth_mb) < 40, f"peak memory grew by {growth_mb} MB"
