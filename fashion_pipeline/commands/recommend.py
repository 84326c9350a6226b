"""`fashion-pipeline recommend IMAGE`: the products for the garments in one photo, as the HTTP API answers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="a photo (JPEG, PNG, WebP, GIF, ...)")
    parser.add_argument("--k", type=int, default=None, help="products per garment (default 10)")
    parser.add_argument("--category", default=None, help="search this category instead of the detected one")
    parser.add_argument("--max-price", type=float, default=None, help="highest price in US dollars")
    parser.add_argument("--site", default=None, help="only products from this shop")
    parser.add_argument("--json", action="store_true", help="print the JSON answer of POST /api/recommend")


def run(args: argparse.Namespace) -> int:
    from fashion_pipeline.lib.common.images import ImageError
    from fashion_pipeline.lib.common.paths import DataPaths
    from fashion_pipeline.lib.retrieval.query import QueryError, RecommenderError
    from fashion_pipeline.lib.retrieval.release_watch import load_current

    if not args.image.is_file():
        print(f"fashion-pipeline recommend: {args.image} is not a file", file=sys.stderr)
        return 2
    try:
        recommender, _ = load_current(DataPaths.from_env())  # the current release, as the app answers
        query = recommender.make_query(k=args.k, category=args.category, max_price=args.max_price, site=args.site)
        answer = recommender.recommend_bytes(args.image, query).to_dict()
    except (RecommenderError, QueryError, ImageError) as exc:
        print(f"fashion-pipeline recommend: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, RecommenderError) else 2
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        print(format_answer(answer))
    return 0


def format_answer(answer: dict) -> str:
    """The answer as text for a terminal: each garment, then its products with price and link."""
    lines = [answer["message"]] if answer.get("message") else []
    for number, garment in enumerate(answer["detections"], start=1):
        box = ", ".join(f"{v:.0f}" for v in garment["box"])
        lines.append(f"{number}. {garment['category']} (confidence {garment['score']:.2f}) at [{box}]")
        for rank, product in enumerate(garment["recommendations"], start=1):
            price = "price unknown" if product["price"] is None else f"{product['price']:.2f} {product['currency']}"
            if product.get("price_usd") is not None and product["currency"] != "USD":
                price += f" (~{product['price_usd']:.2f} USD)"
            lines.append(f"   {rank:2d}. {product['name']}  {price}  [{product['site']}]  {product['url']}")
    return "\n".join(lines)
