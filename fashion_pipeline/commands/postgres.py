"""A PostgreSQL cluster of our own: the distribution's binaries, `initdb` into a folder, loopback only, no service.

`fashion-pipeline stack` keeps one under .stack/postgres; the tests make a throwaway one in a temporary folder.
`initdb` refuses to run as root, so under root the cluster belongs to the `postgres` system user (created by
Debian's package) and its commands run through `runuser`. Connections over TCP need the password kept in the
cluster's folder (mode 600); the Unix socket lives in that folder too, out of other users' reach.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SYSTEM_USER = "postgres"  # who owns a cluster started by root


class PostgresError(RuntimeError):
    """The cluster could not be created, started or reached; the message says why and what to do."""


def find_bin_dir() -> Path:
    """`FASHION_PG_BIN`, else Debian's newest /usr/lib/postgresql/<version>/bin, else initdb on PATH."""
    if os.environ.get("FASHION_PG_BIN"):
        return Path(os.environ["FASHION_PG_BIN"])
    versions = sorted(
        (p for p in DEBIAN_ROOT.glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1]
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresError(
        "PostgreSQL is not installed: `make postgresql` installs Debian's package "
        "(or set FASHION_PG_BIN to the folder holding initdb and pg_ctl)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class LocalPostgres:
    """One cluster in `folder` (data/, socket, log, password), listening on `host`:`port` only."""

    folder: Path
    port: int
    host: str = "127.0.0.1"
    user: str = "fashion"
    # For throwaway clusters: no fsync, since a crash only loses a test's scratch database.
    durable: bool = True

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()
        self.bin_dir = find_bin_dir()

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_file(self) -> Path:
        return self.folder / "postgres.log"

    @property
    def password(self) -> str:
        return (self.folder / "password").read_text().strip()

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL; psycopg2 named explicitly (STACK.md trap 13: SQLAlchemy 2.1 would pick psycopg 3)."""
        return f"{driver}://{self.user}:{quote(self.password, safe='')}@{self.host}:{self.port}/{database}"

    def _as_owner(self, *command: str | Path) -> list[str]:
        argv = [str(part) for part in command]
        return ["runuser", "-u", SYSTEM_USER, "--", *argv] if os.geteuid() == 0 else argv

    def _run(self, *command: str | Path) -> subprocess.CompletedProcess:
        result = subprocess.run(self._as_owner(*command), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PostgresError(f"{Path(str(command[0])).name} failed: {(result.stderr or result.stdout).strip()}")
        return result

    def init(self) -> None:
        """Create the cluster unless it exists (the password is made once and kept beside it)."""
        if (self.data_dir / "PG_VERSION").is_file():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        password_file = self.folder / "password"
        password_file.write_text(secrets.token_urlsafe(24) + "\n")
        password_file.chmod(0o600)
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(SYSTEM_USER)
            except KeyError as exc:
                raise PostgresError(f"running as root needs the `{SYSTEM_USER}` user of Debian's package") from exc
            for path in (self.folder, password_file):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            if subprocess.run(self._as_owner("test", "-w", self.folder), check=False).returncode != 0:
                raise PostgresError(
                    f"user `{SYSTEM_USER}` cannot reach {self.folder}: a parent folder is closed to other users "
                    "(chmod o+x it, or keep the cluster elsewhere)"
                )
        self.folder.chmod(0o700)
        self._run(
            self.bin_dir / "initdb",
            "-D",
            self.data_dir,
            "-U",
            self.user,
            "--pwfile",
            password_file,
            "--auth-host=scram-sha-256",
            "--auth-local=trust",  # the socket is in self.folder (mode 700): only the owner reaches it
            "-E",
            "UTF8",
            "--no-instructions",
            *([] if self.durable else ["--no-sync"]),
        )

    def start(self) -> None:
        """Start the cluster (creating it first if needed) and wait until it accepts connections."""
        self.init()
        if self.running():
            return
        options = f"-p {self.port} -c listen_addresses={self.host} -k {self.folder}"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        try:
            self._run(
                self.bin_dir / "pg_ctl",
                "-D",
                self.data_dir,
                "-l",
                self.log_file,
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            )
        except PostgresError as exc:
            tail = self.log_file.read_text(errors="replace").splitlines()[-5:] if self.log_file.is_file() else []
            raise PostgresError(f"{exc}\n{self.log_file}:\n" + "\n".join(tail)) from exc

    def running(self) -> bool:
        status = subprocess.run(
            self._as_owner(self.bin_dir / "pg_ctl", "-D", self.data_dir, "status"), capture_output=True, check=False
        )
        return status.returncode == 0

    def stop(self) -> None:
        if (self.data_dir / "PG_VERSION").is_file() and self.running():
            self._run(self.bin_dir / "pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "-t", "60", "stop")

    def create_database(self, name: str) -> None:
        """Create database `name` unless it exists."""
        import psycopg2

        connection = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname="postgres"
        )
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
