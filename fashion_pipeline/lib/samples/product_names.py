"""Names for the demo shop's products: the colours their photo shows, a fabric word and the category, unique.

The colour words come from the garment's own pixels: the plain background of a shop photo (its border
colour, and the soft shadow on it) is left out, the rest is reduced to a few colour groups, groups of
nearly one colour (one fabric, lit and shaded) are merged, and the largest names the product, with a second
word when a pattern's other colour covers a good part of it. A mean colour would not do: the mean of blue
and yellow stripes with some background is a grey-beige that no pixel of the photo has.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import numpy as np
from PIL import Image

TEXTURES = ("Cotton", "Linen", "Denim", "Silk", "Knit", "Satin", "Corduroy", "Chiffon", "Jersey", "Tweed")
# A style word in front tells apart products that would otherwise share colour, fabric and category.
STYLES = ("Classic", "Relaxed", "Slim", "Everyday", "Essential", "Vintage", "Modern", "Soft", "Light", "Tailored")

_ANALYSED_SIDE = 96  # px; enough pixels for stable colour groups, cheap for thousands of products
_BACKGROUND_DISTANCE = 40.0  # RGB distance from the border colour above which a pixel is garment
_SHADOW_RESIDUAL = 12.0  # RGB distance from a darkened background colour still counted as shadow
_MIN_GARMENT_SHARE = 0.1  # less than this apart from the border: the garment has the background's colour
_GROUPS = 4  # colours a photo is reduced to: a pattern has two, shading makes more of each
# Two groups of pixels are one fabric, lit and shaded, when one colour is the other darkened: the same
# direction in RGB (cosine) at no less than this share of its brightness.
_SAME_DIRECTION = 0.995
_SHADED_SHARE = 0.55
_SECOND_COLOUR_SHARE = 0.3  # a pattern's other colour is named when it covers this share of the garment

# Hue bands in degrees (start of each band), then what each band is called by brightness and saturation.
_HUE_BANDS = ((0, "red"), (15, "orange"), (40, "yellow"), (70, "green"), (160, "teal"), (200, "blue"),
              (250, "purple"), (290, "pink"), (345, "red"))  # fmt: skip


def colour_words(rgb: np.ndarray) -> np.ndarray:
    """The colour word of each RGB pixel (an (N, 3) uint8 array): Black, White, Grey, Red, Navy, Beige, ..."""
    values = np.asarray(rgb, dtype=np.float32).reshape(-1, 3) / 255.0
    high, low = values.max(axis=1), values.min(axis=1)
    chroma = high - low
    saturation = np.where(high > 0, chroma / np.maximum(high, 1e-6), 0.0)
    red, green, blue = values.T
    safe = np.maximum(chroma, 1e-6)
    hue = (
        np.select(
            [high == red, high == green],
            [((green - blue) / safe) % 6.0, (blue - red) / safe + 2.0],
            (red - green) / safe + 4.0,
        )
        * 60.0
    )
    band = np.full(len(values), "red", dtype=object)
    for start, name in _HUE_BANDS:
        band[hue >= start] = name
    words = np.empty(len(values), dtype=object)
    dark, light, pale = high < 0.5, high > 0.7, saturation < 0.45
    rules = [
        (high < 0.22, "Black"),
        ((chroma < 0.08) & (high > 0.8), "White"),
        (chroma < 0.08, "Grey"),
        ((band == "red") & light & (saturation < 0.5), "Pink"),
        ((band == "red") & pale, "Brown"),
        (band == "red", "Red"),
        ((band == "orange") & dark, "Brown"),
        ((band == "orange") & pale, "Beige"),
        (band == "orange", "Orange"),
        ((band == "yellow") & dark, "Olive"),
        ((band == "yellow") & pale, "Beige"),
        (band == "yellow", "Yellow"),
        ((band == "green") & dark & (hue < 100), "Olive"),
        (band == "green", "Green"),
        (band == "teal", "Teal"),
        ((band == "blue") & (high < 0.45), "Navy"),
        (band == "blue", "Blue"),
        (band == "purple", "Purple"),
        ((band == "pink") & (high < 0.45), "Purple"),
        (band == "pink", "Pink"),
    ]
    for condition, word in reversed(rules):  # the first rule that holds wins
        words[condition] = word
    return words


def garment_colours(image: Image.Image) -> list[str]:
    """The colour words a product photo shows: the largest colour's, and a pattern's second if it is large.

    The garment's pixels are grouped into a few colours (median cut), groups of nearly one colour are merged,
    and each is named by its brighter pixels.
    """
    small = image.convert("RGB").copy()
    # Nearest-neighbour sampling: averaging would blend thin stripes into a colour the fabric does not have.
    small.thumbnail((_ANALYSED_SIDE, _ANALYSED_SIDE), Image.Resampling.NEAREST)
    pixels = np.asarray(small, dtype=np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    flat = pixels.reshape(-1, 3)
    # The background, and the soft shadow a garment casts on it: the border colour, up to 20 % darker.
    shade = np.clip(flat @ background / max(float(background @ background), 1.0), 0.0, None)
    shadow = (shade > 0.8) & (np.linalg.norm(flat - shade[:, None] * background, axis=1) < _SHADOW_RESIDUAL)
    garment = flat[(np.linalg.norm(flat - background, axis=1) > _BACKGROUND_DISTANCE) & ~shadow]
    if len(garment) < _MIN_GARMENT_SHARE * len(flat):
        garment = flat  # a white shirt on white: the whole crop is the best evidence
    strip = Image.fromarray(garment.astype(np.uint8).reshape(1, -1, 3))
    labels = np.asarray(strip.quantize(colors=_GROUPS, method=Image.Quantize.MEDIANCUT)).reshape(-1)
    # Shading splits one fabric into lighter and darker groups: merge them back.
    groups: list[np.ndarray] = []
    for label in sorted(np.unique(labels), key=lambda v: -int((labels == v).sum())):
        members = garment[labels == label]
        colour = _fabric_colour(members)
        near = next((i for i, g in enumerate(groups) if _same_fabric(_fabric_colour(g), colour)), None)
        if near is None:
            groups.append(members)
        else:
            groups[near] = np.concatenate([groups[near], members])
    groups.sort(key=len, reverse=True)
    words = [_word(_fabric_colour(groups[0]))]
    if len(groups) > 1 and len(groups[1]) >= _SECOND_COLOUR_SHARE * len(garment):
        second = _word(_fabric_colour(groups[1]))
        if second != words[0]:
            words.append(second)
    return words


def _fabric_colour(pixels: np.ndarray) -> np.ndarray:
    # The brighter pixels: shading, folds and seams only darken a fabric, so they are nearest its colour.
    brightness = pixels.max(axis=1)
    return np.median(pixels[brightness >= np.percentile(brightness, 60)], axis=0)


def _same_fabric(a: np.ndarray, b: np.ndarray) -> bool:
    # Shading scales a colour down (multiplies every channel alike); a different colour turns it.
    length_a, length_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if min(length_a, length_b) < 1e-6:
        return max(length_a, length_b) < 60.0  # black beside near-black
    cosine = float(a @ b) / (length_a * length_b)
    return cosine > _SAME_DIRECTION and min(length_a, length_b) / max(length_a, length_b) >= _SHADED_SHARE


def _word(colour: np.ndarray) -> str:
    return str(colour_words(colour.reshape(1, 3).astype(np.uint8))[0])


def colour_phrase(words: Iterable[str]) -> str:
    return " and ".join(words)


def unique_name(colour: str, category: str, key: str, taken: set[str], seed: int = 0) -> str:
    """`"<colour> <fabric> <category>"`, with a style word in front if that name is already `taken`.

    The choices follow from `key` (the sku), so a product keeps its name when others are added, unless its
    first choice was taken by a product listed before it. The name returned is added to `taken`.
    """
    rng = random.Random(f"{seed}:{key}:name")
    textures = rng.sample(TEXTURES, len(TEXTURES))
    styles = rng.sample(STYLES, len(STYLES))
    candidates = [f"{colour} {t} {category}" for t in textures]
    candidates += [f"{s} {colour} {t} {category}" for s in styles for t in textures]
    name = next((c for c in candidates if c not in taken), None)
    if name is None:  # 110 names for one colour and category taken: number the rest
        name = next(
            f"{candidates[0]} No. {n}" for n in range(2, len(taken) + 3) if f"{candidates[0]} No. {n}" not in taken
        )
    taken.add(name)
    return name
