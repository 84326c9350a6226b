"""`fashion-pipeline contact-sheet PHOTO...`: one picture of what the app answers for a set of photos.

Each row shows a photo with its detected boxes and categories, and beside it the top products for each
garment, as the app would list them: a quick way to look at a release's quality on real photos.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

THUMB = 112  # pixels per product thumbnail
PHOTO_HEIGHT = 3 * THUMB  # a photo spans three garment rows
MAX_GARMENTS = 3
LABEL_HEIGHT = 14
BOX_COLOURS = ((230, 60, 60), (40, 140, 230), (40, 170, 80))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", type=Path, nargs="+", help="photos or folders of photos")
    parser.add_argument("--out", type=Path, required=True, help="the sheet to write (.jpg or .png)")
    parser.add_argument("--k", type=int, default=5, help="products shown per garment (default 5)")


def run(args: argparse.Namespace) -> int:
    from fashion_pipeline.lib.common.images import ImageError, load_image
    from fashion_pipeline.lib.common.paths import DataPaths
    from fashion_pipeline.lib.retrieval.query import QueryError, RecommenderError
    from fashion_pipeline.lib.retrieval.recommender import Recommender

    photos = sorted(p for path in args.photos for p in ([path] if path.is_file() else path.iterdir()) if p.is_file())
    if not photos:
        print("contact-sheet: no photos given", file=sys.stderr)
        return 2
    try:
        recommender = Recommender.from_paths(DataPaths.from_env())
        query = recommender.make_query(k=args.k)
    except (RecommenderError, QueryError) as exc:
        print(f"contact-sheet: {exc}", file=sys.stderr)
        return 1
    rows = []
    for photo in photos:
        try:
            image = load_image(photo)
        except ImageError as exc:
            print(f"contact-sheet: skipped {photo.name}: {exc}", file=sys.stderr)
            continue
        answer = recommender.recommend(image, query)
        rows.append(_row(photo.name, image, answer, recommender, args.k))
        found = ", ".join(_said(g) for g in answer.detections) or "nothing"
        print(f"{photo.name}: {found}")
    sheet = _stack(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, **({"quality": 85} if args.out.suffix.lower() in (".jpg", ".jpeg") else {}))
    print(f"contact sheet of {len(rows)} photos written to {args.out}")
    return 0


def _said(garment) -> str:
    """One garment as searched, and what each model said of it (the category shown is the one searched)."""
    detector = f"detector {garment.detected_category} {garment.score:.2f}" if garment.detected_category else ""
    classifier = (
        f"classifier {garment.classifier_probability:.2f}" if garment.classifier_probability is not None else ""
    )
    return f"{garment.category} [{garment.searched_as}: {', '.join(filter(None, (detector, classifier)))}]"


def _row(name, image, answer, recommender, k):
    from PIL import Image, ImageDraw

    from fashion_pipeline.lib.common.images import load_image

    scale = PHOTO_HEIGHT / image.height
    photo = image.convert("RGB").resize((max(1, round(image.width * scale)), PHOTO_HEIGHT))
    draw = ImageDraw.Draw(photo)
    garments = answer.detections[:MAX_GARMENTS]
    for number, garment in enumerate(garments):
        colour = BOX_COLOURS[number % len(BOX_COLOURS)]
        x1, y1, x2, y2 = (v * scale for v in garment.box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=3)
        draw.text((x1 + 4, y1 + 2), f"{number + 1} {garment.category}", fill=colour)
    width = photo.width + 8 + k * THUMB
    row = Image.new("RGB", (width, PHOTO_HEIGHT + LABEL_HEIGHT), "white")
    row.paste(photo, (0, LABEL_HEIGHT))
    ImageDraw.Draw(row).text((2, 1), name, fill="black")
    for number, garment in enumerate(garments):
        top = LABEL_HEIGHT + number * THUMB
        for rank, product in enumerate(garment.recommendations[:k]):
            path = recommender.product_image_path(product.product_id)
            if path is None:
                continue
            thumb = load_image(path).convert("RGB")
            thumb.thumbnail((THUMB - 4, THUMB - 4))
            row.paste(thumb, (photo.width + 8 + rank * THUMB, top + 2))
        ImageDraw.Draw(row).rectangle(
            (photo.width + 2, top + 2, photo.width + 5, top + THUMB - 2), fill=BOX_COLOURS[number % len(BOX_COLOURS)]
        )
    return row


def _stack(rows):
    from PIL import Image

    width = max((r.width for r in rows), default=1)
    sheet = Image.new("RGB", (width, sum(r.height + 6 for r in rows) or 1), "white")
    top = 0
    for row in rows:
        sheet.paste(row, (0, top))
        top += row.height + 6
    return sheet
