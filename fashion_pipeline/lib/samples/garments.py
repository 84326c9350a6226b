"""Parametric garments for the generated DeepFashion2 sample: a shape per category and a look per product.

Shapes live in a body frame (units, y down): neck base at y=0, shoulders at x=±1, waist y=2, hips y=2.6,
crotch y=3.1, ankles y=5.9. A garment is built for a `Pose` (arm and leg angles), so a worn garment lines
up with the person drawn under it and a shop garment lies flat with its sleeves spread. Textures are
functions of body-frame coordinates, so a product looks the same in every photo whatever its scale.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

Point = tuple[float, float]

TOPS = (1, 2, 5, 6)
OUTWEAR = (3, 4)
BOTTOMS = (7, 8, 9)
DRESSES = (10, 11, 12, 13)
# Number of landmarks per category in DeepFashion2 (its landmark definitions, categories 1..13).
LANDMARK_COUNTS = {1: 25, 2: 33, 3: 31, 4: 39, 5: 15, 6: 15, 7: 10, 8: 14, 9: 8, 10: 29, 11: 37, 12: 19, 13: 19}
# What covers the shoulders: the feature that tells tops, outwear and dresses apart from each other.
UPPER_KIND = {1: "short", 2: "long", 3: "short", 4: "long", 5: "vest", 6: "sling"}
UPPER_KIND |= {10: "short", 11: "long", 12: "vest", 13: "sling"}
PATTERNS = ("solid", "stripes", "checks", "dots", "gradient")

SHOULDER_JOINT = (0.95, 0.42)  # where the arm (and a sleeve's axis) hangs from
HIP_JOINT = (0.45, 2.6)  # where a leg (and a trouser leg's axis) starts
ARM_LENGTH = 2.6
ANKLE_Y = 5.9


@dataclass(frozen=True)
class Pose:
    arm_angle: float  # radians from vertical, outwards; worn about 0.25, laid flat 0.5-0.9
    leg_angle: float  # radians from vertical, outwards
    worn: bool  # worn outwear hangs open and shows what is under it


@dataclass(frozen=True)
class GarmentSpec:
    """The fixed cut of one product: the same in its shop photo and in every user photo."""

    category_id: int
    width: float  # shoulder half-width
    length: float  # hem height (y of the hem)
    hem_width: float  # half-width at the hem (for trousers and shorts: of one leg)
    neck_width: float
    neck_depth: float  # for a sling: the height of the bodice's top edge
    sleeve_length: float
    strap_width: float
    opening: float  # outwear: half-width of the open front at the hem when worn


@dataclass(frozen=True)
class GarmentShape:
    panels: list[list[Point]]  # filled polygons = the DeepFashion2 segmentation
    outline: list[Point]  # the silhouette walked once around, for landmarks
    patches: list[list[Point]]  # shaded parts on top: collar, lapels, waistband, pockets
    lines: list[list[Point]]  # seams and folds
    lining: list[Point] | None  # the dark inside seen down the front of closed outwear


@dataclass(frozen=True)
class Appearance:
    """The fixed look of one product: colours, texture kind and its parameters (body units)."""

    pattern: str
    colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    period: float
    angle: float
    duty: float


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def random_spec(category_id: int, rng: np.random.Generator) -> GarmentSpec:
    """A random cut of a garment of `category_id`, varied within what still reads as that category."""
    upper = UPPER_KIND.get(category_id)
    values = {
        "width": _u(rng, 0.98, 1.1),
        "length": _u(rng, 2.35, 2.9),
        "hem_width": _u(rng, 0.86, 1.0),
        "neck_width": _u(rng, 0.3, 0.4),
        "neck_depth": _u(rng, 0.12, 0.32),
        "sleeve_length": 0.0,
        "strap_width": 0.0,
        "opening": 0.0,
    }
    if upper == "short":
        values["sleeve_length"] = _u(rng, 0.85, 1.2)
    elif upper == "long":
        values["sleeve_length"] = _u(rng, 2.3, 2.55)
    elif upper == "vest":
        values |= {"strap_width": _u(rng, 0.22, 0.36), "neck_width": _u(rng, 0.34, 0.44)}
        values["neck_depth"] = _u(rng, 0.35, 0.75)
    elif upper == "sling":
        values |= {"strap_width": _u(rng, 0.05, 0.08), "neck_width": _u(rng, 0.4, 0.5)}
        values["neck_depth"] = _u(rng, 0.45, 0.7)
    if category_id in OUTWEAR:
        values |= {"width": _u(rng, 1.1, 1.2), "length": _u(rng, 2.75, 3.9), "hem_width": _u(rng, 1.02, 1.2)}
        values |= {"neck_width": _u(rng, 0.36, 0.42), "neck_depth": _u(rng, 0.7, 1.1)}
        values |= {"opening": _u(rng, 0.35, 0.6), "sleeve_length": values["sleeve_length"] + 0.1}
    elif category_id == 7:
        values |= {"length": _u(rng, 3.45, 3.95), "hem_width": _u(rng, 0.34, 0.42)}
    elif category_id == 8:
        values |= {"length": _u(rng, 5.6, 5.95), "hem_width": _u(rng, 0.22, 0.38)}
    elif category_id in (9, *DRESSES):
        length = _u(rng, 3.2, 4.9) if category_id == 9 else _u(rng, 3.5, 5.4)
        flare = _u(rng, 0.15, 0.45)  # how fast the hem widens with length
        values |= {"length": length, "hem_width": 0.95 + flare * (length - 2.5)}
    return GarmentSpec(category_id=category_id, **values)


def _mirror_closed(right: list[Point]) -> list[Point]:
    """Right half from the centre line back to the centre line -> the whole symmetric outline."""
    return right + [(-x, y) for x, y in reversed(right[1:-1])]


def _upper_right(spec: GarmentSpec, pose: Pose, centre_x: float) -> list[Point]:
    """Neckline, shoulder, sleeve or strap and armpit of the right half, from the centre front."""
    kind = UPPER_KIND[spec.category_id]
    w, nw, nd = spec.width, spec.neck_width, spec.neck_depth
    armpit = (0.84 + 0.3 * (w - 1.0), 0.95)
    if kind == "sling":
        xs, sw = nw, spec.strap_width
        return [(centre_x, nd + 0.12), (xs * 0.6, nd + 0.05), (xs - 0.02, nd), (xs, 0.02), (xs + sw, 0.02),
                (xs + sw + 0.03, nd - 0.02), (armpit[0] - 0.04, nd + 0.15), armpit]  # fmt: skip
    if spec.category_id in OUTWEAR:
        # a V opening, and the collar standing up beside the neck
        neck = [(centre_x, nd), (nw * 0.95, 0.02), (nw + 0.02, -0.14), (nw + 0.2, -0.08)]
    else:
        neck = [(centre_x, nd), (nw * 0.55, nd * 0.85), (nw * 0.9, nd * 0.4), (nw, 0.0)]
    if kind == "vest":
        strap_outer = nw + spec.strap_width
        return [*neck, (strap_outer, 0.02), (strap_outer - 0.04, 0.4), (armpit[0] - 0.06, 0.8), armpit]
    theta = pose.arm_angle
    d = (math.sin(theta), math.cos(theta))
    n = (math.cos(theta), -math.sin(theta))
    jx, jy = SHOULDER_JOINT
    cuff_centre = (jx + d[0] * spec.sleeve_length, jy + d[1] * spec.sleeve_length)
    cuff = 0.27 if kind == "short" else 0.19
    if spec.category_id in OUTWEAR:
        cuff += 0.04
    outer = (cuff_centre[0] + n[0] * cuff, cuff_centre[1] + n[1] * cuff)
    inner = (cuff_centre[0] - n[0] * cuff, cuff_centre[1] - n[1] * cuff)
    # a short sleeve hangs against the body: keep its inner corner clear of the side seam
    inner = (max(inner[0], armpit[0] + 0.06), inner[1])
    return [*neck, (w, 0.1), outer, inner, armpit]


def _hem(hem_width: float, length: float, centre_x: float = 0.0, sag: float = 0.06) -> list[Point]:
    return [(hem_width, length), (hem_width * 0.55 + centre_x * 0.45, length + sag * 0.8), (centre_x, length + sag)]


def _top_right(spec: GarmentSpec, pose: Pose, centre_x: float = 0.0) -> list[Point]:
    side = (0.8 + 0.3 * (spec.width - 1.0), 1.8)
    return [*_upper_right(spec, pose, centre_x), side, *_hem(spec.hem_width, spec.length, centre_x)]


def _skirt_below_waist(spec: GarmentSpec) -> list[Point]:
    return [(0.74, 2.0), (0.92, 2.5), *_hem(spec.hem_width, spec.length, sag=0.1)]


def _trousers_right(spec: GarmentSpec, pose: Pose) -> list[Point]:
    phi = pose.leg_angle
    d = (math.sin(phi), math.cos(phi))
    n = (math.cos(phi), -math.sin(phi))
    hx, hy = HIP_JOINT
    reach = (spec.length - hy) / d[1]
    centre = (hx + d[0] * reach, hy + d[1] * reach)
    outer = (centre[0] + n[0] * spec.hem_width, centre[1] + n[1] * spec.hem_width)
    inner = (max(centre[0] - n[0] * spec.hem_width, 0.08), centre[1] - n[1] * spec.hem_width)
    return [(0.0, 1.96), (0.76, 1.95), (0.93, 2.55), outer, inner, (0.0, 2.95)]


def build_shape(spec: GarmentSpec, pose: Pose) -> GarmentShape:
    """The garment's polygons for this pose, in body units."""
    cid = spec.category_id
    patches: list[list[Point]] = []
    lines: list[list[Point]] = []
    lining = None
    if cid in BOTTOMS:
        right = _trousers_right(spec, pose) if cid in (7, 8) else [(0.0, 1.98), *_skirt_below_waist(spec)]
        outline = _mirror_closed(right)
        patches.append([(-0.76, 1.95), (0.76, 1.95), (0.78, 2.14), (-0.78, 2.14)])  # waistband
        if cid in (7, 8):
            lines.append([(0.0, 2.14), (0.0, 2.75)])  # fly
            if cid == 8:
                lines += [[(s * 0.48, 2.9), (s * (0.48 + spec.length * 0.1 * math.sin(pose.leg_angle)),
                          spec.length - 0.1)] for s in (-1, 1)]  # fmt: skip
        else:
            for x in (-0.45, 0.0, 0.45):  # pleats fan out with the flare
                lines.append([(x * 0.9, 2.2), (x * spec.hem_width, spec.length + 0.05)])
        return GarmentShape([outline], outline, patches, lines, None)
    if cid in DRESSES:
        upper = _upper_right(spec, pose, 0.0)
        outline = _mirror_closed([*upper, (0.78, 1.55), *_skirt_below_waist(spec)])
        lines.append([(-0.72, 2.02), (0.72, 2.02)])  # waist seam
        return GarmentShape([outline], outline, patches, lines, None)
    outline = _mirror_closed(_top_right(spec, pose))
    if cid in TOPS:
        return GarmentShape([outline], outline, patches, lines, None)
    # outwear: lapels, pockets; worn open in user photos, laid flat and closed in shop photos
    nw, nd, hem_y = spec.neck_width, spec.neck_depth, spec.length
    top_gap, hem_gap = (0.12, spec.opening) if pose.worn else (0.0, 0.0)
    for s in (-1, 1):
        patches.append([(s * (top_gap + 0.01), nd), (s * nw * 0.95, 0.04), (s * (nw + 0.28), 0.45),
                        (s * (top_gap + 0.12), nd + 0.2)])  # fmt: skip
        px = spec.hem_width * 0.55
        patches.append([(s * (px - 0.2), hem_y - 0.75), (s * (px + 0.2), hem_y - 0.75),
                        (s * (px + 0.2), hem_y - 0.7), (s * (px - 0.2), hem_y - 0.7)])  # fmt: skip
    if not pose.worn:
        lining = [(-0.07, nd - 0.1), (0.07, nd - 0.1), (0.05, hem_y + 0.05), (-0.05, hem_y + 0.05)]
        return GarmentShape([outline], outline, patches, lines, lining)
    right = _top_right(spec, pose, centre_x=top_gap)
    right[-1] = (hem_gap, right[-1][1])
    right[-2] = ((right[-3][0] + hem_gap) / 2, right[-2][1])
    left = [(-x, y) for x, y in reversed(right)]
    return GarmentShape([right, left], right + left, patches, lines, None)


def person_parts(pose: Pose) -> dict[str, list[list[Point]]]:
    """Skin, hair and shoe polygons of a person standing in `pose` (body units)."""
    parts: dict[str, list[list[Point]]] = {"skin": [], "shoes": []}
    theta, phi = pose.arm_angle, pose.leg_angle
    for s in (-1, 1):
        jx, jy = SHOULDER_JOINT
        d, n = (math.sin(theta), math.cos(theta)), (math.cos(theta), -math.sin(theta))
        wrist = (jx + d[0] * ARM_LENGTH, jy + d[1] * ARM_LENGTH)
        arm = [(jx + n[0] * 0.2, jy + n[1] * 0.2 - 0.15), (wrist[0] + n[0] * 0.1, wrist[1] + n[1] * 0.1),
               (wrist[0] + d[0] * 0.3, wrist[1] + d[1] * 0.3),
               (wrist[0] - n[0] * 0.1, wrist[1] - n[1] * 0.1), (jx - n[0] * 0.2, jy - n[1] * 0.2)]  # fmt: skip
        parts["skin"].append([(s * x, y) for x, y in arm])
        hx, hy = HIP_JOINT
        d, n = (math.sin(phi), math.cos(phi)), (math.cos(phi), -math.sin(phi))
        reach = (ANKLE_Y - hy) / d[1]
        ankle = (hx + d[0] * reach, hy + d[1] * reach)
        leg = [(hx + 0.3, hy - 0.3), (ankle[0] + n[0] * 0.1, ankle[1]), (ankle[0] - n[0] * 0.1, ankle[1]),
               (hx - 0.32, hy - 0.1)]  # fmt: skip
        parts["skin"].append([(s * x, y) for x, y in leg])
        shoe = [(ankle[0] - 0.14, ankle[1] - 0.05), (ankle[0] + 0.14, ankle[1] - 0.05),
                (ankle[0] + 0.22, ankle[1] + 0.2), (ankle[0] - 0.12, ankle[1] + 0.22)]  # fmt: skip
        parts["shoes"].append([(s * x, y) for x, y in shoe])
    parts["skin"].append([(-0.85, 0.12), (-0.2, -0.05), (0.2, -0.05), (0.85, 0.12), (0.8, 1.0), (-0.8, 1.0)])
    parts["skin"].append([(-0.17, -0.55), (0.17, -0.55), (0.19, 0.1), (-0.19, 0.1)])  # neck
    return parts


def resample(polyline: list[Point], count: int) -> np.ndarray:
    """`count` points evenly spaced by arc length around a closed polyline (for landmarks)."""
    pts = np.asarray([*polyline, polyline[0]], dtype=np.float64)
    steps = np.hypot(*np.diff(pts, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    at = np.linspace(0.0, arc[-1], count, endpoint=False)
    return np.stack([np.interp(at, arc, pts[:, 0]), np.interp(at, arc, pts[:, 1])], axis=1)


def clip_polygon(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Sutherland-Hodgman clip of a polygon (N, 2) to the image rectangle."""
    poly = [tuple(p) for p in points]
    for axis, bound, keep_below in ((0, 0.0, False), (0, width, True), (1, 0.0, False), (1, height, True)):
        out: list[tuple[float, float]] = []
        for i, cur in enumerate(poly):
            prev = poly[i - 1]
            cur_in = cur[axis] <= bound if keep_below else cur[axis] >= bound
            prev_in = prev[axis] <= bound if keep_below else prev[axis] >= bound
            if cur_in != prev_in:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append((prev[0] + t * (cur[0] - prev[0]), prev[1] + t * (cur[1] - prev[1])))
            if cur_in:
                out.append(cur)
        poly = out
        if not poly:
            break
    return np.asarray(poly, dtype=np.float64).reshape(-1, 2)


def _random_color(rng: np.random.Generator, neutral: bool = False) -> tuple[int, int, int]:
    if neutral:  # black, white, greys, denim, beige: the colours most bottoms and coats come in
        h, s, v = [(0.0, 0.0, _u(rng, 0.1, 0.95)), (0.6, _u(rng, 0.35, 0.6), _u(rng, 0.3, 0.7)),
                   (0.1, _u(rng, 0.2, 0.4), _u(rng, 0.55, 0.85))][int(rng.integers(3))]  # fmt: skip
    else:
        h, s, v = _u(rng, 0, 1), _u(rng, 0.25, 0.95), _u(rng, 0.3, 0.95)
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(h, s, v))  # type: ignore[return-value]


def random_appearance(category_id: int, rng: np.random.Generator) -> Appearance:
    """A random product look: two colours that contrast, a texture kind and its scale."""
    neutral = category_id in (7, 8, 3, 4) and rng.random() < 0.4
    pattern = str(rng.choice(PATTERNS, p=[0.3, 0.2, 0.16, 0.14, 0.2]))
    first = _random_color(rng, neutral)
    for _ in range(20):  # a second colour far enough from the first to show the pattern
        second = _random_color(rng)
        if sum(abs(a - b) for a, b in zip(first, second, strict=True)) > 150:
            break
    angle = float(rng.choice([0.0, math.pi / 2, math.pi / 4, -math.pi / 4]))
    return Appearance(pattern, (first, second), _u(rng, 0.16, 0.5), angle, _u(rng, 0.3, 0.6))


def texture(look: Appearance, u: np.ndarray, v: np.ndarray, v_range: tuple[float, float]) -> np.ndarray:
    """RGB float values (..., 3) of the product's fabric at body-frame points (u, v)."""
    c1, c2 = (np.asarray(c, dtype=np.float32) for c in look.colors)
    a = u * math.cos(look.angle) + v * math.sin(look.angle)
    b = -u * math.sin(look.angle) + v * math.cos(look.angle)
    if look.pattern == "solid":
        mix = np.zeros_like(u)
    elif look.pattern == "stripes":
        mix = ((a / look.period) % 1.0 < look.duty).astype(np.float32)
    elif look.pattern == "checks":
        mix = 0.5 * (((a / look.period) % 1.0 < look.duty) + ((b / look.period) % 1.0 < look.duty))
    elif look.pattern == "dots":
        da, db = (a / look.period) % 1.0 - 0.5, (b / look.period) % 1.0 - 0.5
        mix = (np.hypot(da, db) < 0.18 + 0.2 * look.duty).astype(np.float32)
    else:  # gradient from the top of the garment to its hem
        mix = np.clip((v - v_range[0]) / max(v_range[1] - v_range[0], 1e-6), 0.0, 1.0)
    rgb = c1 + mix[..., None].astype(np.float32) * (c2 - c1)
    shade = 1.0 - 0.22 * np.clip(np.abs(u) / 1.2, 0.0, 1.0) ** 2  # round body: darker towards the sides
    return rgb * shade[..., None].astype(np.float32)
