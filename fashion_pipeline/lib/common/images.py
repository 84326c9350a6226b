"""The one image loader: bytes or a path in, an upright RGB PIL image out, or a clear `ImageError`.

Used by the dataset stages, training, the catalog and the server alike, so an image is decoded the same
way everywhere (EXIF rotation honoured, any mode converted to RGB, decompression bombs refused).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# Refuse images that would decode to more pixels than this (a 30,000 x 30,000 PNG is 900 MP).
MAX_IMAGE_PIXELS = 64_000_000
# The formats people upload and shops serve; PIL's rarer decoders are not exposed to untrusted bytes.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG covers MPO (multi-picture JPEG)
_FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP or TIFF"


class ImageError(ValueError):
    """An input that is not a usable image; the message says why."""


def _open(source: bytes | Path | str) -> Image.Image:
    if isinstance(source, bytes | bytearray):
        if not source:
            raise ImageError("empty file")
        return Image.open(io.BytesIO(source), formats=ALLOWED_FORMATS)
    return Image.open(Path(source), formats=ALLOWED_FORMATS)


def load_image(
    source: bytes | Path | str, max_pixels: int = MAX_IMAGE_PIXELS, max_side: int | None = None
) -> Image.Image:
    """Decode `source` into an RGB image, upright per its EXIF orientation (first frame if animated).

    `max_side` bounds the decoded size for callers that need no more (the server: the models see a few
    hundred pixels): a JPEG is decoded already scaled down by its decoder (draft mode: 1/2, 1/4 or 1/8, never
    below `max_side`), so a 64 MP photo never exists in memory at full size; other formats are decoded, then
    reduced at once. The longer side ends between `max_side` and twice it at most.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open(source)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"image too large: {width}x{height} pixels (limit {max_pixels:,})")
            image.seek(0)
            if max_side and max(width, height) > max_side and image.format == "JPEG":
                fit = max_side / max(width, height)  # the size that fits, so both sides allow the same scale
                image.draft("RGB", (max(1, int(width * fit)), max(1, int(height * fit))))
            image.load()
            if max_side and max(image.size) >= 2 * max_side:
                image = image.reduce(max(image.size) // max_side)
            image = ImageOps.exif_transpose(image)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        # PIL's own message names the in-memory buffer by its object address, which tells a user nothing.
        raise ImageError(f"not a readable image: the file is not {_FORMAT_NAMES} data") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"not a readable image: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Truncated or corrupt data surfaces as OSError ("image file is truncated") or SyntaxError.
        raise ImageError(f"broken image data: {exc}") from exc
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency is composited on white, 16-bit is scaled down."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        peak = array.max() or 1.0
        return Image.fromarray((array / peak * 255).astype("uint8")).convert("RGB")
    if image.mode == "P" or image.mode in ("LA", "RGBA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def upright_size(source: bytes | Path | str) -> tuple[int, int]:
    """(width, height) once EXIF rotation is applied, from the header only (what load_image would return
    without `max_side`)."""
    with _open(source) as image:
        width, height = image.size
        quarter_turn = image.getexif().get(0x0112) in (5, 6, 7, 8)  # Orientation: transposed or rotated 90
    return (height, width) if quarter_turn else (width, height)


def image_size(path: Path | str) -> tuple[int, int]:
    """(width, height) from the header only, without decoding the pixels."""
    with Image.open(path) as image:
        return image.size
