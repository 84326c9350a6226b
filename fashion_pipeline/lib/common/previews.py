"""Small Markdown previews for asset metadata: count tables with bars, and a strip of sample images."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from PIL import Image

from fashion_pipeline.lib.common.images import load_image


def count_table_md(counts: pd.DataFrame, row: str, column: str, value: str = "count") -> str:
    """A Markdown table of `value` by `row` x `column`, with a bar for the row totals (a class histogram)."""
    pivot = counts.pivot_table(index=row, columns=column, values=value, aggfunc="sum", fill_value=0, observed=True)
    pivot["total"] = pivot.sum(axis=1)
    peak = max(int(pivot["total"].max()), 1)
    header = f"| {row} | " + " | ".join(str(c) for c in pivot.columns) + " | |"
    lines = [header, "|" + "---|" * (len(pivot.columns) + 2)]
    for key, values in pivot.iterrows():
        bar = "█" * max(1, round(20 * int(values["total"]) / peak)) if values["total"] else ""
        lines.append(f"| {key} | " + " | ".join(str(int(v)) for v in values) + f" | {bar} |")
    return "\n".join(lines)


def image_strip_md(paths: Sequence[Path | str], height: int = 96, title: str = "samples") -> str:
    """One JPEG strip of the given images embedded as a data URL (the Dagster UI renders it inline)."""
    tiles = []
    for path in paths:
        image = load_image(path)
        tiles.append(image.resize((max(1, round(image.width * height / image.height)), height)))
    if not tiles:
        return ""
    strip = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), height), "white")
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width + 4
    return image_md(strip, title)


def image_md(image: Image.Image, title: str) -> str:
    """`image` as Markdown with a JPEG data URL (the Dagster UI renders it inline)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=80)
    return f"![{title}](data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()})"
