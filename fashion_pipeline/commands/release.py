"""`fashion-pipeline release list | rollback [--to ID]`: the serving releases, and going back to an earlier one.

Releases are built by the `serving_release` asset. A rollback only moves the pointer (one atomic symlink
replace): a running `fashion-pipeline serve` follows between requests, as it follows a new release.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the releases on disk, oldest first, with the current one marked")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    back = actions.add_parser("rollback", help="serve the previous release again (or the one named by --to)")
    back.add_argument("--to", default=None, metavar="ID", help="the release to serve (`release list` shows the ids)")


def run(args: argparse.Namespace) -> int:
    from fashion_pipeline.lib.common.paths import DataPaths
    from fashion_pipeline.lib.retrieval import release_pointer

    paths = DataPaths.from_env()
    if args.action == "list":
        rows = release_pointer.list_releases(paths)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            print(format_releases(rows, paths.releases_dir))
        return 0
    try:
        before, after = release_pointer.rollback(paths, args.to)
    except release_pointer.ReleaseError as exc:
        print(f"fashion-pipeline release rollback: {exc}", file=sys.stderr)
        return 1
    print(f"serving release {after} (was {before}); a running app switches within a few seconds")
    return 0


def format_releases(rows: list[dict], releases_dir) -> str:
    if not rows:
        return f"no releases in {releases_dir}: materialize the serving_release asset"
    lines = []
    for row in rows:
        mark = "current " if row["current"] else "previous" if row["previous"] else ""
        lines.append(
            f"{mark:8}  {row['release_id']}  created {row['created_at']}  classifier v{row['classifier_version']}  "
            f"detector v{row['detector_version']}  {row['products']} products, {row['indexed']} indexed"
        )
    return "\n".join(lines)
