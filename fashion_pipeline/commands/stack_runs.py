"""`fashion-pipeline stack materialize`: the whole graph launched through the stack's webserver, as the UI does.

Each run goes the production way: GraphQL `launchRun` -> the run queue (deploy/dagster.yaml's limits and
pools) -> the daemon -> the code server -> a run worker with the chosen executor. Jobs cannot mix partitioned
and unpartitioned assets, so the graph is cut into consecutive batches where partitioning changes, and each
batch is one run (one per site for the partitioned ones), launched when the batch before it has succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fashion_pipeline.commands.stack import Stack

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}"""
STATUS = "query Status($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--select", default="", help="comma-separated asset names (default: every asset)")
    parser.add_argument("--sites", default="demo_shop", help="catalog partitions to run (default: demo_shop)")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=os.cpu_count() or 1,
        help="processes per run under the multiprocess executor; 0 = the in-process executor",
    )
    parser.add_argument("--config-json", default="{}", help='ops config, e.g. {"ops": {"deepfashion2_sample": ...}}')


def batches(graph: Any, selected: set[Any]) -> list[list[Any]]:
    """Selected assets in dependency order, cut where partitioned and unpartitioned assets alternate.

    Each batch is one kind (all partitioned alike, or all unpartitioned): one run, or one run per partition.
    The graph alternates here (dataset and training, then the crawl per site, the merged catalog, the
    embeddings per site, then the indexes and evaluations), so the batches alternate too.
    """
    level: dict[Any, int] = {}
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        level[key] = max(
            (level[p] + (node.partitions_def != graph.get(p).partitions_def) for p in node.parent_keys if p in level),
            default=0,
        )
    ordered = [key for key in graph.toposorted_asset_keys if key in selected and graph.get(key).is_materializable]
    kinds: list[Any] = []  # the partitions definitions seen (None: unpartitioned)
    grouped: dict[tuple[int, int], list[Any]] = {}
    for key in ordered:
        # Assets at one level that are partitioned differently (none today) still get runs of their own.
        partitions = graph.get(key).partitions_def
        if partitions not in kinds:
            kinds.append(partitions)
        grouped.setdefault((level[key], kinds.index(partitions)), []).append(key)
    return [grouped[n] for n in sorted(grouped)]


def _graphql(url: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    import httpx

    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=60)
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(f"GraphQL error: {body['errors'][0].get('message')}")
    return body["data"]


def launch(url: str, keys: list[Any], run_config: dict[str, Any], partition: str | None) -> str:
    from fashion_pipeline.commands.stack import LOCATION_NAME

    tags = [{"key": "dagster/partition", "value": partition}] if partition else []
    params = {
        "selector": {
            "repositoryLocationName": LOCATION_NAME,
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": list(key.path)} for key in keys],
        },
        "runConfigData": run_config,
        "executionMetadata": {"tags": tags},
    }
    result = _graphql(url, LAUNCH, {"params": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        detail = result.get("message") or "; ".join(e["message"] for e in result.get("errors", []))
        raise RuntimeError(f"launch refused ({result['__typename']}): {detail}")
    return result["run"]["runId"]


def wait(url: str, run_ids: list[str], poll_s: float = 3.0) -> dict[str, str]:
    statuses: dict[str, str] = {}
    while len(statuses) < len(run_ids):
        for run_id in run_ids:
            if run_id not in statuses:
                status = _graphql(url, STATUS, {"id": run_id})["runOrError"].get("status")
                if status in TERMINAL:
                    statuses[run_id] = status
        time.sleep(poll_s)
    return statuses


def run(args: argparse.Namespace, stack: Stack) -> int:
    from fashion_pipeline.definitions import defs

    state = stack.read_state()
    if "ports" not in state:
        raise SystemExit("the stack is not running: `make stack` first")
    url = f"http://{state['ports']['host']}:{state['ports']['dagster']}"
    graph = defs.resolve_asset_graph()
    wanted = {name.strip() for name in args.select.split(",") if name.strip()}
    selected = {key for key in graph.get_all_asset_keys() if not wanted or key.to_user_string() in wanted}
    ops_config = json.loads(args.config_json).get("ops", {})
    execution = {"multiprocess": {"max_concurrent": args.max_concurrent}} if args.max_concurrent else {"in_process": {}}
    sites = [site.strip() for site in args.sites.split(",") if site.strip()]
    started = time.perf_counter()
    for batch in batches(graph, selected):
        names = {key.to_user_string() for key in batch}
        partitions = graph.get(batch[0]).partitions_def
        partition_keys = [None] if partitions is None else [s for s in sites if s in partitions.get_partition_keys()]
        run_config = {
            "execution": {"config": execution},
            "ops": {name: config for name, config in ops_config.items() if name in names},
        }
        batch_started = time.perf_counter()
        run_ids = [launch(url, batch, run_config, partition) for partition in partition_keys]
        statuses = wait(url, run_ids)
        label = ", ".join(sorted(names)) + (f" [{', '.join(p for p in partition_keys if p)}]" if partitions else "")
        print(f"==> {label}: {', '.join(statuses.values())} in {time.perf_counter() - batch_started:.0f} s", flush=True)
        failed = [run_id for run_id, status in statuses.items() if status != "SUCCESS"]
        if failed:
            print(f"failed runs: {', '.join(f'{url}/runs/{run_id}' for run_id in failed)}", flush=True)
            return 1
    print(f"materialized through the stack in {time.perf_counter() - started:.0f} s", flush=True)
    return 0
