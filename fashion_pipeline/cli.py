"""`fashion-pipeline`: demo, serve, recommend, evaluate, stack, contact-sheet, release. Each subcommand lives in fashion_pipeline/commands/."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module in fashion_pipeline.commands exposing add_arguments(parser) and run(args) -> int
COMMANDS = {
    "demo": "Materialize every asset on the embedded default, then start the Dagster UI, MLflow UI and app.",
    "serve": "Serve the shopping page and HTTP API from the materialized files.",
    "recommend": "Recommend products for the garments in one photo (same answer as POST /api/recommend).",
    "evaluate": "Score the champion models on a labelled folder of your own photos.",
    "stack": "The server deployment on this machine: PostgreSQL, MLflow server, Dagster webserver and daemon.",
    "contact-sheet": "Draw one picture of what the app answers for a set of photos (boxes, categories, products).",
    "release": "List the serving releases, or roll the app back to the previous one (or --to ID).",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fashion-pipeline", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(f"fashion_pipeline.commands.{name.replace('-', '_')}").add_arguments(sub)
    args = parser.parse_args(argv)
    return importlib.import_module(f"fashion_pipeline.commands.{args.command.replace('-', '_')}").run(args)


if __name__ == "__main__":
    sys.exit(main())
