"""`fashion-pipeline serve`: the shopping page and HTTP API over the current serving release.

Without a release (a data root from before them) it serves the data root's files and says so; a release
materialized later is picked up without a restart, as is every later one and every rollback.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=None,
        help="largest photo accepted, in MB (default 10, or FASHION_MAX_UPLOAD_MB)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="photos analysed at once; more queue (default 2, or FASHION_INFERENCE_WORKERS)",
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import uvicorn
    from threadpoolctl import threadpool_limits

    from fashion_pipeline.lib.common.paths import DataPaths
    from fashion_pipeline.lib.retrieval.query import RecommenderError
    from fashion_pipeline.lib.retrieval.release_watch import ServedRelease
    from serve.app import ServeSettings, create_app

    settings = ServeSettings.from_env()
    if args.max_upload_mb is not None:
        settings = dataclasses.replace(settings, max_upload_mb=args.max_upload_mb)
    if args.workers is not None:
        settings = dataclasses.replace(settings, inference_workers=args.workers)
    paths = DataPaths.from_env()
    try:
        # Loaded before the server starts: a release that cannot be served stops it here with the reason.
        served = ServedRelease.start(paths, check_interval_s=settings.release_check_s)
    except RecommenderError as exc:
        print(f"fashion-pipeline serve: cannot start: {exc}", file=sys.stderr)
        return 1
    # Requests already run `inference_workers` at a time: one BLAS thread each keeps the k-NN scans from
    # oversubscribing the cores (an exact 10k scan: 4.5 ms single-threaded, 10.7 ms p50 with 2 threads busy).
    blas_limits = threadpool_limits(limits=1, user_api="blas")
    health = served.recommender.health()
    release = f"release {served.release_id}" if served.release_id else "no release: the data root's files"
    print(
        f"Serving {health['products']} products ({release}; detector v{health['detector_version']}, "
        f"embedder v{health['embedder_version']}) at http://{args.host}:{args.port}/",
        flush=True,
    )
    uvicorn.run(
        create_app(served, settings),
        host=args.host,
        port=args.port,
        log_level="info",
        limit_concurrency=settings.max_connections,  # beyond it uvicorn answers 503 without reading a body
    )
    blas_limits.restore_original_limits()
    return 0
