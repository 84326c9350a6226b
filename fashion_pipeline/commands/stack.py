"""`fashion-pipeline stack up|down|status|materialize`: the server deployment on one machine, on loopback.

`up` starts, each in its own process group with its log under .stack/logs/: PostgreSQL (a cluster in
.stack/postgres, see postgres.py), the MLflow tracking server on it (database `mlflow`, artifacts proxied from
.stack/mlflow-artifacts), the code server (`dagster api grpc`, the user code, as the Helm chart's user
deployment runs it), the Dagster webserver and the Dagster daemon (schedules, sensors, automation, the run
queue) over the instance of deploy/dagster.yaml (database `dagster`). Runs are launched by the daemon through
the code server, so they get its environment: MLFLOW_TRACKING_URI points at the MLflow server.
`down` stops them all and keeps the data; `up` again resumes. `materialize` is stack_runs.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from fashion_pipeline.commands.postgres import LocalPostgres, PostgresError

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
LOCATION_NAME = "fashion_pipeline"
# Nothing leaves the machine (STACK.md traps 3, 5, 14); a user's own setting wins.
QUIET_ENVIRONMENT = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "0",
}


def state_dir() -> Path:
    return Path(os.environ.get("FASHION_STACK_DIR", ".stack")).resolve()


@dataclass
class Ports:
    host: str = "127.0.0.1"
    postgres: int = 15432
    mlflow: int = 5000
    code_server: int = 4266
    dagster: int = 3000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start PostgreSQL, MLflow, the code server, the Dagster webserver and daemon")
    defaults = Ports()
    up.add_argument("--host", default=defaults.host, help="interface every service listens on (default 127.0.0.1)")
    for name in ("postgres", "mlflow", "code_server", "dagster"):
        up.add_argument(f"--{name.replace('_', '-')}-port", type=int, default=getattr(defaults, name))
    actions.add_parser("down", help="stop every service of the stack (the data stays in .stack/)")
    actions.add_parser("status", help="which services run and answer")
    from fashion_pipeline.commands import stack_runs

    stack_runs.add_arguments(
        actions.add_parser("materialize", help="launch the whole graph through the stack's webserver and wait")
    )


def write_instance(dagster_home: Path) -> Path:
    """DAGSTER_HOME with deploy/dagster.yaml (Postgres storage from $DAGSTER_PG_URL, the run queue, pools)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    shutil.copyfile(DEPLOY_DIR / "dagster.yaml", target)
    return target


def mlflow_server_command(backend_store_uri: str, artifacts: Path, host: str, port: int) -> list[str]:
    """`mlflow server` on a database backend, serving the artifacts itself (clients upload through it)."""
    return [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts.resolve().as_uri(),
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",  # each worker is a few hundred MB; one answers a team's tracking calls
    ]


def wait_until(check, what: str, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None):
    """Poll `check()` until it is true; fail naming `what` (and its log's last lines) on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.5)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log and log.is_file() else ""
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s" + (f"; {log}:\n{tail}" if tail else ""))


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Stack:
    """The services of one state folder; their pids and ports are kept in state.json for `down`/`status`."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or state_dir()
        self.logs = self.root / "logs"
        self.state_file = self.root / "state.json"
        self.dagster_home = self.root / "dagster_home"

    def read_state(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.is_file() else {"processes": {}}

    def postgres(self, ports: Ports) -> LocalPostgres:
        return LocalPostgres(self.root / "postgres", ports.postgres, host=ports.host)

    def environment(self, pg: LocalPostgres, ports: Ports) -> dict[str, str]:
        return {
            **QUIET_ENVIRONMENT,
            **os.environ,
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_PG_URL": pg.url("dagster"),
            "MLFLOW_TRACKING_URI": f"http://{ports.host}:{ports.mlflow}",
        }

    def up(self, ports: Ports) -> dict[str, str]:
        state = self.read_state()
        if any(alive(p) for p in state["processes"].values()):
            raise RuntimeError(f"the stack in {self.root} is already running: `make stack-stop` first")
        self.logs.mkdir(parents=True, exist_ok=True)
        pg = self.postgres(ports)
        pg.start()
        for database in ("dagster", "mlflow"):
            pg.create_database(database)
        write_instance(self.dagster_home)
        workspace = self.root / "workspace.yaml"
        workspace.write_text(
            "load_from:\n  - grpc_server:\n"
            f"      host: {ports.host}\n      port: {ports.code_server}\n      location_name: {LOCATION_NAME}\n"
        )
        env = self.environment(pg, ports)
        env_file = self.root / "env"
        env_file.write_text(
            "".join(f"export {k}={env[k]}\n" for k in ("DAGSTER_HOME", "DAGSTER_PG_URL", "MLFLOW_TRACKING_URI"))
        )
        env_file.chmod(0o600)
        bin_dir = Path(sys.executable).parent
        dagster, code_address = str(bin_dir / "dagster"), ["-h", ports.host, "-p", str(ports.code_server)]
        services = {
            "mlflow": (
                mlflow_server_command(pg.url("mlflow"), self.root / "mlflow-artifacts", ports.host, ports.mlflow),
                lambda: http_ok(f"http://{ports.host}:{ports.mlflow}/health"),
            ),
            "code_server": (
                [
                    dagster,
                    "api",
                    "grpc",
                    "-m",
                    "fashion_pipeline.definitions",
                    *code_address,
                    "--location-name",
                    LOCATION_NAME,
                ],
                lambda: run_ok([dagster, "api", "grpc-health-check", *code_address], env),
            ),
            "webserver": (
                [str(bin_dir / "dagster-webserver"), "-w", str(workspace), "-h", ports.host, "-p", str(ports.dagster)],
                lambda: http_ok(f"http://{ports.host}:{ports.dagster}/server_info"),
            ),
            "daemon": (
                [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)],
                lambda: run_ok([str(bin_dir / "dagster-daemon"), "liveness-check"], env),
            ),
        }
        state = {"ports": asdict(ports), "processes": {}}
        try:
            for name, (command, ready) in services.items():
                log = self.logs / f"{name}.log"
                process = start_process(command, env, log)
                state["processes"][name] = {"pid": process.pid, "command": Path(command[0]).name}
                self.state_file.write_text(json.dumps(state, indent=2))
                wait_until(ready, name, timeout=180, process=process, log=log)
        except BaseException:
            self.down()
            raise
        return {
            "Dagster UI": f"http://{ports.host}:{ports.dagster}",
            "MLflow": env["MLFLOW_TRACKING_URI"],
            "PostgreSQL": f"{ports.host}:{ports.postgres} (databases dagster, mlflow; password in {pg.folder}/password)",
            "environment": f"source {env_file}",
        }

    def down(self) -> list[str]:
        state = self.read_state()
        stopped = []
        for name, process in reversed(list(state["processes"].items())):
            if alive(process):
                stop_group(process["pid"])
                stopped.append(name)
        ports = Ports(**state.get("ports", {}))
        pg = self.postgres(ports)
        if (pg.data_dir / "PG_VERSION").is_file() and pg.running():
            pg.stop()
            stopped.append("postgres")
        self.state_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> dict[str, bool]:
        state = self.read_state()
        ports = Ports(**state.get("ports", {}))
        running = {name: alive(process) for name, process in state["processes"].items()}
        try:
            pg = self.postgres(ports)
            running["postgres"] = (pg.data_dir / "PG_VERSION").is_file() and pg.running()
        except PostgresError:
            running["postgres"] = False
        return running


def start_process(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`command` in its own process group (`stop_group` stops its children too), its output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run_ok(command: list[str], env: dict[str, str]) -> bool:
    return subprocess.run(command, env=env, capture_output=True, check=False).returncode == 0


def alive(process: dict) -> bool:
    """True when the recorded pid still runs the recorded command (a reused pid is not ours)."""
    try:
        cmdline = Path(f"/proc/{process['pid']}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return process["command"] in cmdline


def stop_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group `pid` leads (children included), SIGKILL what is left after `timeout`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.3)
    os.killpg(pid, signal.SIGKILL)


def run(args: argparse.Namespace) -> int:
    stack = Stack()
    if args.action == "up":
        ports = Ports(args.host, args.postgres_port, args.mlflow_port, args.code_server_port, args.dagster_port)
        started = time.perf_counter()
        for name, where in stack.up(ports).items():
            print(f"{name:>12}: {where}", flush=True)
        print(f"stack up in {time.perf_counter() - started:.0f} s; `make stack-stop` stops it", flush=True)
    elif args.action == "down":
        stopped = stack.down()
        print("stopped: " + (", ".join(stopped) or "nothing was running"))
    elif args.action == "status":
        running = stack.status()
        for name, up in running.items():
            print(f"{name:>12}: {'running' if up else 'stopped'}")
        return 0 if running and all(running.values()) else 1
    else:
        from fashion_pipeline.commands import stack_runs

        return stack_runs.run(args, stack)
    return 0
