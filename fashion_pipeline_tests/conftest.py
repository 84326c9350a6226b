"""Test-wide settings: offline, no telemetry, every file under a temporary root, and shared tiny datasets."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fashion_pipeline_tests import network_guard

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="fashion-tests-"))

# Set before anything imports Dagster, MLflow or Ultralytics: they read these at import time.
os.environ.update(
    {
        "FASHION_DATA_DIR": str(_SESSION_ROOT / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{_SESSION_ROOT / 'mlruns' / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "DAGSTER_HOME": str(_SESSION_ROOT / "dagster_home"),
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "0",
        "YOLO_CONFIG_DIR": str(_SESSION_ROOT / "yolo_config"),
        "HF_HUB_OFFLINE": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
)
os.environ.pop("FASHION_DF2_ROOT", None)
# A developer's weights folder would change what `pretrained="auto"` finds; tests choose their own.
os.environ.pop("FASHION_WEIGHTS_DIR", None)
(_SESSION_ROOT / "mlruns").mkdir(parents=True, exist_ok=True)
(_SESSION_ROOT / "dagster_home").mkdir(parents=True, exist_ok=True)
(_SESSION_ROOT / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

pytest_plugins = [
    "fashion_pipeline_tests.fixtures_deepfashion2",
    "fashion_pipeline_tests.fixtures_training",
    "fashion_pipeline_tests.fixtures_catalog",
    "fashion_pipeline_tests.fixtures_retrieval",
    "fashion_pipeline_tests.fixtures_serving",
    "fashion_pipeline_tests.fixtures_stack",
]

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_REAL_DATA = SHARED / "data" / "real"
SHARED_WEIGHTS = SHARED / "weights"

# --- no connection leaves the machine -------------------------------------------------------------------
# Every attempt to reach a non-loopback address or to look up a name beyond this machine is refused and
# recorded, here and in child Python processes (network_guard); `_no_network_attempts` fails the test that
# made one, even when the code under test caught the refusal. Chromium is launched with resolver rules that
# leave only 127.0.0.1 (LOOPBACK_CHROMIUM_ARGS; FASHION_CRAWL_LOOPBACK_ONLY for crawls, fixtures_catalog).
network_guard.install()
network_guard.guard_children(_SESSION_ROOT / "network_guard", _SESSION_ROOT / "network_attempts.log")


@pytest.fixture(autouse=True)
def _no_network_attempts() -> Iterator[None]:
    earlier = network_guard.take()
    if earlier:
        pytest.fail(f"a fixture set up for this test tried to reach beyond loopback (refused): {earlier}")
    yield
    attempts = network_guard.take()
    if attempts:
        pytest.fail(
            f"this test tried to reach beyond loopback (refused): {attempts}; a test about refusals takes them "
            "with network_guard.recorded_attempts()"
        )


class _AttemptsSince:
    def __call__(self) -> list[str]:
        return network_guard.peek()


@pytest.fixture
def network_attempts() -> _AttemptsSince:
    """Call it at the end of a test: the non-loopback connections and lookups tried since the test began."""
    return _AttemptsSince()


@pytest.fixture(scope="session")
def session_root() -> Path:
    return _SESSION_ROOT


def _shared_folder(folder: Path) -> Path:
    """`folder` under ../shared; without it the test is skipped (a user's clone), under CI=true it fails."""
    if folder.is_dir():
        return folder
    message = f"{folder} is missing: this test reads real data or weights from ../shared"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: ../shared must be there)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The staged real photos and pages (../shared/data/real); never copied into the repo."""
    return _shared_folder(SHARED_REAL_DATA)


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    """The pretrained weights of ../shared/weights (WEIGHTS.md); never copied into the repo."""
    return _shared_folder(SHARED_WEIGHTS)
