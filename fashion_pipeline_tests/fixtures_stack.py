"""Fixture for the server-deployment tests: a throwaway PostgreSQL cluster, like the one `make stack` keeps."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fashion_pipeline.commands.postgres import LocalPostgres, PostgresError, free_port


@pytest.fixture(scope="session")
def throwaway_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL cluster in a temporary folder on a free loopback port, stopped and removed at the end.

    Without PostgreSQL installed the tests that need it are skipped with one line (`make test` installs it);
    under CI=true they fail instead.
    """
    # mkdtemp makes a folder only its owner may enter; under root the cluster runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="fashion-pg-"))
    base.chmod(0o711)
    try:
        cluster = LocalPostgres(base / "cluster", free_port(), durable=False)
    except PostgresError as exc:
        shutil.rmtree(base, ignore_errors=True)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{exc} (CI=true: `make test` installs it)")
        pytest.skip(str(exc))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
