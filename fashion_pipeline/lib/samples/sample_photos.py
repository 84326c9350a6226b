"""Painting one photo of the generated DeepFashion2 sample, and its DeepFashion2 annotation.

A `shop` photo is one product laid flat on a plain background; a `user` photo is an outfit worn by a person
on a cluttered background, with random framing, viewpoint, light and occluders. The garments' shapes and
looks come from garments; which photos to paint comes from deepfashion2_sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fashion_pipeline.lib.common.categories import DF2_CATEGORY_NAMES
from fashion_pipeline.lib.samples.garments import (
    LANDMARK_COUNTS,
    OUTWEAR,
    TOPS,
    Appearance,
    GarmentShape,
    GarmentSpec,
    Pose,
    build_shape,
    clip_polygon,
    person_parts,
    resample,
    texture,
)

# Mask values while painting a garment, and how much each darkens the fabric under it.
_FILL, _PATCH, _EDGE, _LINING = 255, 180, 90, 50
_SHADE = np.zeros(256, dtype=np.float32)
_SHADE[[_FILL, _PATCH, _EDGE, _LINING]] = [1.0, 0.8, 0.55, 0.3]
SKIN_TONES = ((241, 206, 180), (224, 172, 138), (198, 134, 96), (141, 85, 54), (92, 58, 38))
HAIR_COLORS = ((20, 16, 14), (60, 40, 25), (110, 75, 40), (180, 140, 80), (120, 120, 120))


@dataclass(frozen=True)
class Product:
    """One garment of a pair's outfit; style 0 means not for sale (not matchable)."""

    pair_id: int
    style: int
    spec: GarmentSpec
    look: Appearance

    @property
    def category_id(self) -> int:
        return self.spec.category_id


@dataclass(frozen=True)
class Photo:
    source: str  # "shop": products[0] alone; "user": the outfit worn, in layering order
    pair_id: int
    products: tuple[Product, ...]


@dataclass
class _Scene:
    """A photo being painted: pixels, which item owns each pixel (0 background, -1 occluder)."""

    canvas: np.ndarray  # (H, W, 3) float32
    owner: np.ndarray  # (H, W) int16
    painted: dict[int, int] = field(default_factory=dict)  # item index -> pixels it covered when painted

    @property
    def size(self) -> tuple[int, int]:
        return self.canvas.shape[1], self.canvas.shape[0]


# --------------------------------------------------------------------------------------------- painting


def _affine(
    scale_x: float, scale_y: float, angle: float, anchor: tuple[float, float], at: tuple[float, float]
) -> np.ndarray:
    """2x3 matrix taking body units to pixels: scale about `anchor`, rotate, place `anchor` at `at`."""
    c, s = math.cos(angle), math.sin(angle)
    linear = np.array([[c * scale_x, -s * scale_y], [s * scale_x, c * scale_y]])
    offset = np.asarray(at) - linear @ np.asarray(anchor)
    return np.hstack([linear, offset[:, None]])


def _to_pixels(matrix: np.ndarray, points) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def _xy(points: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points]


def _paint_garment(
    scene: _Scene, index: int, product: Product, shape: GarmentShape, matrix: np.ndarray, rng: np.random.Generator
) -> None:
    """Paint the product's fabric through its shape's mask; record which pixels it now owns."""
    width, height = scene.size
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for panel in shape.panels:
        draw.polygon(_xy(_to_pixels(matrix, panel)), fill=_FILL)
    if shape.lining is not None:
        draw.polygon(_xy(_to_pixels(matrix, shape.lining)), fill=_LINING)
    for patch in shape.patches:
        draw.polygon(_xy(_to_pixels(matrix, patch)), fill=_PATCH, outline=_EDGE)
    for line in shape.lines:
        draw.line(_xy(_to_pixels(matrix, line)), fill=_EDGE, width=1)
    for panel in shape.panels:
        draw.polygon(_xy(_to_pixels(matrix, panel)), outline=_EDGE)
    values = np.asarray(mask)
    rows, cols = np.nonzero(values)
    if rows.size == 0:
        scene.painted[index] = 0
        return
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    region = values[y0:y1, x0:x1]
    inside = region > 0
    # pixel centres back to body units, where the texture is defined
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + np.float32(0.5)
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]])).astype(np.float32)
    u = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    v = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    v_range = (min(p[1] for p in shape.outline), max(p[1] for p in shape.outline))
    # soft folds that differ from photo to photo, on top of the seams and patches' shading
    fold_u, fold_v, phase = rng.uniform(1.0, 3.0), rng.uniform(-1.0, 1.0), rng.uniform(0.0, 2 * math.pi)
    folds = 1.0 + rng.uniform(0.03, 0.09) * np.sin(fold_u * u + fold_v * v + phase)
    fabric = texture(product.look, u, v, v_range) * (_SHADE[region] * folds.astype(np.float32))[..., None]
    scene.canvas[y0:y1, x0:x1][inside] = fabric[inside]
    scene.owner[y0:y1, x0:x1][inside] = index
    scene.painted[index] = int(inside.sum())


def _plain_background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A light studio background with a soft vertical fall-off."""
    base = np.array([rng.uniform(228, 252)] * 3) + rng.uniform(-6, 6, size=3)
    fall = np.linspace(0.0, rng.uniform(-14, 8), height, dtype=np.float32)[:, None, None]
    return np.broadcast_to(base.astype(np.float32), (height, width, 3)) + fall


def _cluttered_background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """Street or room: a gradient, a floor, random blocks, blobs and lines, slightly out of focus.

    Drawn at half size: scaling it up blurs it like a background behind a person in focus.
    """
    full_size = (width, height)
    width, height = (width + 1) // 2, (height + 1) // 2
    top, bottom = rng.uniform(40, 220, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    pixels = top + ramp * (bottom - top)
    floor = int(height * rng.uniform(0.55, 0.9))
    pixels = np.broadcast_to(pixels, (height, width, 3)).copy()
    pixels[floor:] = rng.uniform(30, 200, size=3)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 18))):
        color = tuple(int(c) for c in rng.integers(20, 236, size=3))
        x, y = rng.uniform(-0.1, 1.0) * width, rng.uniform(-0.1, 1.0) * height
        w, h = rng.uniform(0.05, 0.45) * width, rng.uniform(0.05, 0.5) * height
        kind = rng.integers(4)
        if kind == 0:
            draw.rectangle([x, y, x + w, y + h], fill=color)
        elif kind == 1:
            draw.ellipse([x, y, x + w, y + h], fill=color)
        elif kind == 2:
            draw.polygon([(x + rng.uniform(0, w), y + rng.uniform(0, h)) for _ in range(4)], fill=color)
        else:
            draw.line([(x, y), (x + w, y + h)], fill=color, width=int(rng.integers(1, 5)))
    return image.resize(full_size, Image.BILINEAR)


def _draw_person(image: Image.Image, pose: Pose, matrix: np.ndarray, rng: np.random.Generator, from_back: bool) -> None:
    """Skin, head, hair and shoes, under the garments; seen from the back the hair hides the face."""
    draw = ImageDraw.Draw(image)
    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    hair = HAIR_COLORS[int(rng.integers(len(HAIR_COLORS)))]
    if rng.random() < 0.5:  # long hair falls behind the shoulders
        draw.polygon(_xy(_to_pixels(matrix, [(-0.5, -1.1), (0.5, -1.1), (0.62, 0.6), (-0.62, 0.6)])), fill=hair)
    parts = person_parts(pose)
    for polygon in parts["skin"]:
        draw.polygon(_xy(_to_pixels(matrix, polygon)), fill=skin)
    for polygon in parts["shoes"]:
        draw.polygon(_xy(_to_pixels(matrix, polygon)), fill=(int(rng.integers(10, 90)),) * 3)
    head = _to_pixels(matrix, [(math.cos(t) * 0.38, -0.95 + math.sin(t) * 0.48) for t in np.linspace(0, 6.28, 24)])
    draw.polygon(_xy(head), fill=skin)
    cap = [(math.cos(t) * 0.42, -1.0 + math.sin(t) * 0.47) for t in np.linspace(math.pi, 2 * math.pi, 12)]
    draw.polygon(_xy(_to_pixels(matrix, [*cap, (0.4, -0.95), (-0.4, -0.95)])), fill=hair)
    if from_back:
        draw.polygon(_xy(head), fill=hair)


def _add_occluder(scene: _Scene, matrix: np.ndarray, rng: np.random.Generator) -> None:
    """A bag in front of the hip, a post in the foreground or a table edge: hides part of the outfit."""
    width, height = scene.size
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    kind = rng.integers(3)
    if kind == 0:
        side = rng.choice([-1.0, 1.0])
        x, y = side * rng.uniform(0.6, 1.6), rng.uniform(2.2, 3.4)
        w, h = rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.8)
        draw.polygon(
            _xy(_to_pixels(matrix, [(x - w, y), (x + w, y), (x + w * 1.1, y + h), (x - w * 1.1, y + h)])), fill=1
        )
    elif kind == 1:
        x, w = rng.uniform(0.1, 0.9) * width, rng.uniform(0.04, 0.12) * width
        draw.rectangle([x, 0, x + w, height], fill=1)
    else:
        y = rng.uniform(0.6, 0.85) * height
        draw.polygon([(0, y), (width, y + rng.uniform(-20, 20)), (width, height), (0, height)], fill=1)
    inside = np.asarray(mask) > 0
    color = rng.uniform(20, 230, size=3).astype(np.float32)
    scene.canvas[inside] = color * rng.uniform(0.8, 1.0, size=(int(inside.sum()), 1)).astype(np.float32)
    scene.owner[inside] = -1


def _finish(scene: _Scene, rng: np.random.Generator, strength: float) -> Image.Image:
    """Camera and light: brightness, contrast, a colour cast and sensor noise (scaled by `strength`)."""
    pixels = scene.canvas
    mean = float(pixels.mean())
    contrast = 1.0 + strength * rng.uniform(-0.25, 0.2)
    gain = 1.0 + strength * rng.uniform(-0.3, 0.25)
    cast = 1.0 + strength * rng.uniform(-0.08, 0.08, size=3)
    # ((p - mean) * contrast + mean) * gain * cast, folded into one multiply-add per channel
    factor = (contrast * gain * cast).astype(np.float32)
    offset = (mean * (1.0 - contrast) * gain * cast).astype(np.float32)
    noise = rng.standard_normal(size=pixels.shape[:2], dtype=np.float32) * np.float32(1.0 + 4.0 * strength)
    pixels = pixels * factor + offset + noise[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255, out=pixels).astype(np.uint8))


def render_photo(photo: Photo, rng: np.random.Generator, image_size: int) -> tuple[Image.Image, dict]:
    """Paint a shop or user photo and its DeepFashion2 annotation (retried if no item came out visible)."""
    for _ in range(8):
        image, items = (_render_shop if photo.source == "shop" else _render_user)(photo, rng, image_size)
        if items:
            annotation: dict = {"source": photo.source, "pair_id": photo.pair_id}
            annotation |= {f"item{i}": item for i, item in enumerate(items, start=1)}
            return image, annotation
    raise RuntimeError(f"could not render a visible garment for pair {photo.pair_id} ({photo.source})")


def _render_shop(photo: Photo, rng: np.random.Generator, image_size: int) -> tuple[Image.Image, list[dict]]:
    """One product laid flat, large and centred on a plain light background."""
    product = photo.products[0]
    width = height = image_size
    pose = Pose(arm_angle=rng.uniform(0.5, 0.85), leg_angle=rng.uniform(0.04, 0.1), worn=False)
    shape = build_shape(product.spec, pose)
    outline = np.asarray(shape.outline)
    low, high = outline.min(axis=0), outline.max(axis=0)
    fill = rng.uniform(0.68, 0.88)
    scale = min(width * fill / (high[0] - low[0]), height * fill / (high[1] - low[1]))
    jitter = rng.uniform(-0.04, 0.04, size=2) * image_size
    matrix = _affine(
        scale, scale, rng.uniform(-0.06, 0.06), tuple((low + high) / 2), (width / 2 + jitter[0], height / 2 + jitter[1])
    )
    scene = _Scene(_plain_background(width, height, rng).astype(np.float32), np.zeros((height, width), np.int16))
    shadow = _to_pixels(matrix, shape.outline) + rng.uniform(2, 6, size=2)
    # a soft shadow, drawn at quarter size: upscaling blurs it for free
    shadow_mask = Image.new("L", (width // 4, height // 4), 0)
    ImageDraw.Draw(shadow_mask).polygon(_xy(shadow / 4), fill=40)
    shadow_values = np.asarray(shadow_mask.resize((width, height), Image.BILINEAR), dtype=np.float32)
    scene.canvas *= (1.0 - shadow_values / 255.0)[..., None]
    _paint_garment(scene, 1, product, shape, matrix, rng)
    items = [_annotate(scene, 1, product, shape, matrix, viewpoint=1)]
    return _finish(scene, rng, strength=0.25), [item for item in items if item]


def _render_user(photo: Photo, rng: np.random.Generator, image_size: int) -> tuple[Image.Image, list[dict]]:
    """The outfit worn by a person: random framing, viewpoint, light, background and occluders."""
    height = image_size
    width = image_size if rng.random() < 0.3 else round(image_size * 0.75)
    for_sale_upper_only = all(p.category_id in TOPS + OUTWEAR for p in photo.products if p.style > 0)
    framings = ["full", "knees", "waist"] if for_sale_upper_only else ["full", "knees"]
    framing = str(rng.choice(framings))
    top, bottom = -1.55, {"full": 6.2, "knees": 4.4, "waist": 3.0}[framing]
    fill = rng.uniform(0.6, 0.95) if framing == "full" else rng.uniform(0.95, 1.15)
    scale = height * fill / (bottom - top)
    side_view = rng.random() < 0.35
    squeeze = rng.uniform(0.6, 0.82) if side_view else rng.uniform(0.92, 1.0)
    angle = rng.uniform(-0.2, 0.2) if side_view else rng.uniform(-0.08, 0.08)
    half_span = 1.9 * scale * squeeze
    centre_x = rng.uniform(min(half_span, width / 2), max(width - half_span, width / 2))
    top_px = rng.uniform(0.0, max(height - (bottom - top) * scale, 0.0) + 1.0) + rng.uniform(-0.04, 0.02) * height
    matrix = _affine(scale * squeeze, scale, angle, (0.0, 2.3), (centre_x, top_px + (2.3 - top) * scale))
    pose = Pose(arm_angle=rng.uniform(0.22, 0.36), leg_angle=rng.uniform(0.03, 0.09), worn=True)
    background = _cluttered_background(width, height, rng)
    _draw_person(background, pose, matrix, rng, from_back=side_view and rng.random() < 0.5)
    scene = _Scene(np.asarray(background, dtype=np.float32).copy(), np.zeros((height, width), np.int16))
    shapes = [build_shape(product.spec, pose) for product in photo.products]
    for index, (product, shape) in enumerate(zip(photo.products, shapes, strict=True), start=1):
        _paint_garment(scene, index, product, shape, matrix, rng)
    if rng.random() < 0.35:
        _add_occluder(scene, matrix, rng)
    viewpoint = 3 if side_view else 2
    items = [
        _annotate(scene, index, product, shape, matrix, viewpoint)
        for index, (product, shape) in enumerate(zip(photo.products, shapes, strict=True), start=1)
    ]
    photo_image = _finish(scene, rng, strength=1.0)
    if rng.random() < 0.7:  # phone cameras: slightly soft focus or motion
        photo_image = photo_image.filter(ImageFilter.BoxBlur(rng.uniform(0.3, 0.9)))
    return photo_image, [item for item in items if item]


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _annotate(
    scene: _Scene, index: int, product: Product, shape: GarmentShape, matrix: np.ndarray, viewpoint: int
) -> dict | None:
    """The DeepFashion2 item for a painted garment, or None when too little of it is visible."""
    width, height = scene.size
    visible = scene.owner == index
    n_visible, n_painted = int(visible.sum()), scene.painted.get(index, 0)
    if n_visible < 40 or n_visible < 0.1 * n_painted:
        return None
    rows, cols = np.nonzero(visible)
    box = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
    if box[2] - box[0] < 6 or box[3] - box[1] < 6:
        return None
    panels = [_to_pixels(matrix, panel) for panel in shape.panels]
    full_area = sum(_polygon_area(p) for p in panels)
    in_frame = min(n_painted / max(full_area, 1.0), 1.0)
    segmentation = []
    for panel in panels:
        clipped = clip_polygon(panel, width, height)
        if len(clipped) >= 3:
            segmentation.append([round(float(c), 1) for c in clipped.reshape(-1)])
    landmarks: list[int] = []
    for x, y in _to_pixels(matrix, resample(shape.outline, LANDMARK_COUNTS[product.category_id])):
        col, row = int(x), int(y)
        if not (0 <= col < width and 0 <= row < height):
            landmarks += [0, 0, 0]
            continue
        near = scene.owner[max(row - 2, 0) : row + 3, max(col - 2, 0) : col + 3]
        landmarks += [col, row, 2 if (near == index).any() else 1]
    box_share = (box[2] - box[0]) * (box[3] - box[1]) / (width * height)
    visible_share = n_visible / max(n_painted, 1)
    return {
        "segmentation": segmentation,
        "scale": 1 if box_share < 0.08 else 2 if box_share < 0.3 else 3,
        "viewpoint": viewpoint,
        "zoom_in": 1 if in_frame >= 0.93 else 2 if in_frame >= 0.6 else 3,
        "landmarks": landmarks,
        "style": product.style,
        "bounding_box": box,
        "category_id": product.category_id,
        "occlusion": 1 if visible_share >= 0.85 else 2 if visible_share >= 0.5 else 3,
        "category_name": DF2_CATEGORY_NAMES[product.category_id],
    }
