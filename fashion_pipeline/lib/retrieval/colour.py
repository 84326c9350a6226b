"""Garment colour: a shop's colour names folded into families, and a colour descriptor computed from pixels.

ImageNet features are trained to ignore colour, so a red shirt's nearest neighbours are shirts of any
colour. The descriptor here is what the index adds to them (lib/retrieval/layout.py joins the two).

**Families.** A catalog's colour names (Myntra's `baseColour`: "Navy Blue", "Maroon", "Off White", ...) are
folded into the 11 basic colour terms of Berlin and Kay (black, white, grey, red, orange, yellow, green,
blue, purple, pink, brown) plus `multi` for a garment of several colours. Shades go to the term a shopper
would search with: Navy Blue, Teal and Turquoise Blue -> blue; Maroon, Burgundy -> red; Charcoal, Grey
Melange -> grey; Off White, Cream -> white; Olive, Sea Green -> green; Lavender, Mauve -> purple; Magenta,
Peach -> pink; Mustard, Gold -> yellow; Rust -> orange; Beige, Khaki, Tan, Coffee Brown -> brown. Unknown
names fold to None (no family, never counted as a match).

**Descriptor.** Each pixel of the image (resized to `side` x `side`) is softly assigned to CIELAB prototypes
of those families (several shades per family, e.g. navy, mid and light blue), weighted towards the centre
(the garment sold or detected is centred) and with the studio background left out: near-white pixels
connected to the image border. The descriptor is the square root of the normalised prototype histogram,
so it has unit length and the dot product of two descriptors is their Bhattacharyya coefficient (1 for the
same colour distribution, 0 for disjoint ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image

FAMILIES = ("black", "white", "grey", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "multi")

# A catalog colour name (lower case, single spaces) -> its family. Names equal to a family map to themselves.
FAMILY_OF: dict[str, str] = {
    **{family: family for family in FAMILIES},
    "gray": "grey",
    "charcoal": "grey",
    "grey melange": "grey",
    "silver": "grey",
    "off white": "white",
    "cream": "white",
    "navy blue": "blue",
    "navy": "blue",
    "turquoise blue": "blue",
    "teal": "blue",
    "maroon": "red",
    "burgundy": "red",
    "olive": "green",
    "sea green": "green",
    "lime green": "green",
    "fluorescent green": "green",
    "lavender": "purple",
    "mauve": "purple",
    "magenta": "pink",
    "peach": "pink",
    "mustard": "yellow",
    "gold": "yellow",
    "rust": "orange",
    "beige": "brown",
    "khaki": "brown",
    "tan": "brown",
    "coffee brown": "brown",
    "bronze": "brown",
    "copper": "brown",
    "nude": "brown",
    "skin": "brown",
    "multicolour": "multi",
    "multicolor": "multi",
}

# (family, sRGB) shades the pixels are assigned to; several per family so that navy and sky blue, or beige
# and chocolate, are told apart within the descriptor while both still count as their family.
PROTOTYPES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("black", (18, 18, 20)),
    ("grey", (58, 58, 62)),
    ("grey", (120, 120, 122)),
    ("grey", (185, 185, 188)),
    ("white", (245, 245, 245)),
    ("white", (238, 228, 200)),
    ("red", (200, 30, 40)),
    ("red", (115, 22, 38)),
    ("orange", (240, 120, 30)),
    ("orange", (175, 80, 40)),
    ("yellow", (245, 215, 50)),
    ("yellow", (200, 160, 45)),
    ("green", (45, 150, 65)),
    ("green", (25, 75, 45)),
    ("green", (110, 110, 50)),
    ("green", (150, 210, 165)),
    ("blue", (25, 35, 80)),
    ("blue", (45, 95, 190)),
    ("blue", (135, 180, 230)),
    ("blue", (30, 150, 165)),
    ("purple", (95, 40, 130)),
    ("purple", (180, 160, 210)),
    ("pink", (240, 140, 170)),
    ("pink", (210, 40, 130)),
    ("pink", (250, 200, 205)),
    ("brown", (105, 68, 42)),
    ("brown", (205, 185, 145)),
    ("brown", (165, 125, 85)),
)
PROTOTYPE_FAMILIES = tuple(family for family, _ in PROTOTYPES)
DIMENSION = len(PROTOTYPES)


def colour_family(name: object) -> str | None:
    """The family of a catalog colour name ("Navy Blue" -> "blue"); None for a missing or unknown name."""
    if not isinstance(name, str):
        return None
    key = " ".join(name.replace("_", " ").replace("-", " ").lower().split())
    return FAMILY_OF.get(key)


@dataclass(frozen=True)
class ColourSettings:
    """How the descriptor is computed; part of the vector layout (a change makes old vectors incomparable)."""

    side: int = 64  # pixels per side the image is resized to: colour needs no detail, and it keeps this fast
    sigma: float = 14.0  # CIELAB distance at which a pixel's weight for a prototype falls to exp(-1/2)
    centre_sigma: float = 0.25  # Gaussian centre weight, as a fraction of the side; 0 weighs every pixel alike
    background_lightness: float = 90.0  # L* above which a pixel ...
    background_chroma: float = 8.0  # ... with chroma below this is studio white, if connected to the border

    def to_json(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_SETTINGS = ColourSettings()


# Pixels are looked up in a table over the RGB cube quantised to this many levels per channel (steps of 8:
# far finer than colour names need), so a descriptor costs a resize, a bincount and one small product.
LEVELS = 32


@lru_cache(maxsize=4)
def _lookup(settings: ColourSettings) -> tuple[np.ndarray, np.ndarray]:
    """For each quantised RGB colour: its soft weights over PROTOTYPES (rows sum to 1), and whether it is studio white."""
    import cv2

    centres = (np.arange(LEVELS, dtype=np.float32) + 0.5) * (256 / LEVELS)
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), axis=-1).reshape(1, -1, 3)
    lab = cv2.cvtColor(grid / 255.0, cv2.COLOR_RGB2Lab).reshape(-1, 3)  # L* in [0, 100], a*, b* about +-128
    prototypes = np.asarray([rgb for _, rgb in PROTOTYPES], np.float32).reshape(1, -1, 3) / 255.0
    prototypes_lab = cv2.cvtColor(prototypes, cv2.COLOR_RGB2Lab).reshape(-1, 3)
    distances = ((lab[:, None, :] - prototypes_lab[None]) ** 2).sum(axis=2)  # (colours, prototypes)
    # Relative to each colour's nearest prototype, so a colour between prototypes still counts in full.
    soft = np.exp(-(distances - distances.min(axis=1, keepdims=True)) / (2 * settings.sigma**2))
    soft /= soft.sum(axis=1, keepdims=True)
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    white = (lab[:, 0] > settings.background_lightness) & (chroma < settings.background_chroma)
    return soft.astype(np.float32), white


@lru_cache(maxsize=4)
def _centre_weights(side: int, centre_sigma: float) -> np.ndarray:
    if centre_sigma <= 0:
        return np.ones((side, side), np.float32)
    axis = (np.arange(side, dtype=np.float32) + 0.5) / side - 0.5
    ramp = np.exp(-(axis**2) / (2 * centre_sigma**2))
    return np.outer(ramp, ramp).astype(np.float32)


def _border_connected(mask: np.ndarray) -> np.ndarray:
    """The pixels of `mask` connected to the image border: the backdrop, not a white garment inside it."""
    import cv2

    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return np.isin(labels, border[border > 0])  # label 0 is everything outside the mask


def colour_histogram(image: Image.Image, settings: ColourSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """(DIMENSION,) float32 summing to 1: the share of the garment's pixels near each prototype."""
    soft, white = _lookup(settings)
    rgb = np.asarray(image.convert("RGB").resize((settings.side, settings.side), Image.Resampling.BOX))
    quantised = rgb.astype(np.int32) // (256 // LEVELS)
    index = (quantised[..., 0] * LEVELS + quantised[..., 1]) * LEVELS + quantised[..., 2]  # (side, side)
    weights = _centre_weights(settings.side, settings.centre_sigma)
    foreground = weights * ~_border_connected(white[index])
    if foreground.sum() <= 0:  # everything looked like backdrop (a white garment filling the frame)
        foreground = weights
    colours, where = np.unique(index.ravel(), return_inverse=True)  # the few hundred colours present
    per_colour = np.bincount(where, weights=foreground.ravel(), minlength=len(colours)).astype(np.float32)
    histogram = per_colour @ soft[colours]
    return (histogram / histogram.sum()).astype(np.float32)


def colour_descriptors(images: Sequence[Image.Image], settings: ColourSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """(N, DIMENSION) float32 unit rows: the square root of each image's colour histogram."""
    if len(images) == 0:
        return np.zeros((0, DIMENSION), np.float32)
    return np.sqrt(np.stack([colour_histogram(image, settings) for image in images])).astype(np.float32)


# Horizontal bands of the central two thirds (left, top, right, bottom as fractions): on a model the garment
# sold is the top or the bottom of the picture, and a projection fitted on labelled products learns which band
# tells its colour (lib/retrieval/projection.py). Bands are histogrammed without the centre weight.
BANDS = ((1 / 6, 0.0, 5 / 6, 0.5), (1 / 6, 0.25, 5 / 6, 0.75), (1 / 6, 0.5, 5 / 6, 1.0))
BAND_DIMENSION = len(BANDS) * DIMENSION


def band_descriptors(images: Sequence[Image.Image], settings: ColourSettings = DEFAULT_SETTINGS) -> np.ndarray:
    """(N, BAND_DIMENSION) float32: the square-rooted colour histogram of each band of BANDS, side by side."""
    if len(images) == 0:
        return np.zeros((0, BAND_DIMENSION), np.float32)
    flat = replace(settings, centre_sigma=0.0)
    rows = []
    for image in images:
        width, height = image.size
        bands = [
            image.crop((round(x1 * width), round(y1 * height), max(round(x2 * width), 1), max(round(y2 * height), 1)))
            for x1, y1, x2, y2 in BANDS
        ]
        rows.append(np.concatenate([colour_histogram(band, flat) for band in bands]))
    return np.sqrt(np.stack(rows)).astype(np.float32)


def family_shares(descriptors: np.ndarray) -> np.ndarray:
    """(N, 11) share of each basic family (FAMILIES without `multi`) in descriptors from `colour_descriptors`.

    Rescaled descriptors are accepted (the layout stores them weighted): each row is renormalised first.
    """
    rows = np.atleast_2d(np.asarray(descriptors, np.float64))
    squared = rows**2
    totals = squared.sum(axis=1, keepdims=True)
    histograms = squared / np.where(totals > 0, totals, 1.0)
    basic = FAMILIES[:-1]
    columns = [
        histograms[:, [i for i, f in enumerate(PROTOTYPE_FAMILIES) if f == family]].sum(axis=1) for family in basic
    ]
    return np.stack(columns, axis=1)


def dominant_family(descriptors: np.ndarray, min_share: float = 0.5) -> list[str | None]:
    """Per row, the family holding at least `min_share` of the garment's pixels; None when none dominates."""
    shares = family_shares(descriptors)
    best = shares.argmax(axis=1)
    basic = FAMILIES[:-1]
    return [basic[b] if shares[i, b] >= min_share else None for i, b in enumerate(best)]
