"""SIGKILL in the middle of every writing asset (issue 11 §5): the last good output and the app survive the
kill, the next run succeeds, and nothing temporary is left behind.

Each kill point materializes one asset as an operator would, `dagster asset materialize` over the project's
Definitions in a subprocess, on a copy of a small but complete data root (crops, tiny real models, a crawled
folder shop, its embeddings and indexes, a serving release) with its own DAGSTER_HOME and MLflow store.
FASHION_FAULT_KILL names a fault point of lib/common/atomic.py and the target being written; the run SIGKILLs
itself exactly there:

- `atomic_path:before_rename`: a file's temp written and flushed, not yet renamed over the target;
- `atomic_dir:before_swap`: a folder's temp written, not yet swapped in (`@shirt`: inside knn_index, one
  category's index folder built, the others not);
- `atomic_dir:between_renames`: the two-rename swap of file systems without an atomic exchange, killed with
  the old folder moved aside and the new one not yet in place;
- `atomic_dir:after_swap`: the new folder in place, the old one not yet removed;
- serving_release: the release folder written but not renamed into place (`fsync_tree:done`), in place but
  the pointer not moved (`replace_symlink:before_rename`), the pointer moved but its history not written.

After each kill: (a) the output is the last good one (byte for byte; after a switch, the old one still whole
beside the new, complete one), and the app starts on the data root as `fashion-pipeline serve` does and
answers a photo exactly as before the kill; (b) the next run of the asset succeeds; (c) no temp file or folder
is left anywhere under the data root. The module ends with a table of the kill points tried and survived.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fashion_pipeline.lib.common import atomic
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline_tests.fixtures_catalog import write_photos
from fashion_pipeline_tests.fixtures_serving import build_tiny_real_models, encode, garment_photo
from fashion_pipeline_tests.fixtures_training import CLASSIFIER_TINY

REPO = Path(__file__).resolve().parents[1]
SITE = "real_products"  # the packaged folder site: a crawl with no server and no browser
PROBE = {"category": "shirt", "k": "2"}  # the untrained detector boxes nothing: the whole photo is the shirt
RUN_TIMEOUT_S = 600


# --- the atomic writes' own guarantees, without Dagster ------------------------------------------------
WRITE = """
import sys
from pathlib import Path
from fashion_pipeline.lib.common import atomic
atomic.write_text(sys.argv[2], Path(sys.argv[1]))
"""


def _python(code: str, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != atomic.FAULT_KILL_ENV}
    if fault:
        env[atomic.FAULT_KILL_ENV] = fault
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _tree(folder: Path) -> list[str]:
    """The files and folders under `folder`, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_killed_writers_temp_file_goes_with_the_next_write_and_a_live_writers_stays(tmp_path: Path) -> None:
    target = tmp_path / "products.parquet"
    atomic.write_text("good", target)
    killed = _python(WRITE, str(target), "half", fault="atomic_path:before_rename@products.parquet")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [dead] = [n for n in _names(tmp_path) if n.endswith(".tmp")]
    assert target.read_text() == "good" and (tmp_path / dead).read_text() == "half"

    with atomic.atomic_path(target) as live:  # a writer still at work while another one writes
        live.write_text("in progress")
        assert _python(WRITE, str(target), "next").returncode == 0
        assert live.exists() and not (tmp_path / dead).exists()
    assert target.read_text() == "in progress" and _names(tmp_path) == ["products.parquet"]


def test_a_fault_point_fires_only_at_its_point_and_target(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    killed_by = {
        "atomic_path:before_rename@b.json": False,  # another target
        "atomic_dir:before_swap@a.json": False,  # another point
        "atomic_path:before_rename@a.*": True,  # the target's name as a glob
        "atomic_path:before_rename": True,  # any target
    }
    for fault, killed in killed_by.items():
        written = _python(WRITE, str(target), fault, fault=fault)
        assert written.returncode == (-signal.SIGKILL if killed else 0), fault
    assert target.read_text() == "atomic_dir:before_swap@a.json"  # the last write that was not killed


# --- the fault suite over the assets -------------------------------------------------------------------
@dataclass(frozen=True)
class KillPoint:
    asset: str
    point: str  # a fault point of lib/common/atomic.py
    target: str  # the name (glob) of the file or folder being written when the kill comes
    output: str  # the asset's output under the data root, which must survive the kill
    partition: str | None = None
    prepare: Callable[[DataPaths], None] | None = None  # makes the run have something new to write

    @property
    def id(self) -> str:
        return f"{self.asset} {self.point}@{self.target}"

    @property
    def fault(self) -> str:
        return f"{self.point}@{self.target}"


def _folder_swaps(asset: str, target: str, output: str, partition: str | None = None) -> list[KillPoint]:
    return [
        KillPoint(asset, f"atomic_dir:{point}", target, output, partition)
        for point in ("before_swap", "between_renames", "after_swap")
    ]


def _embeddings_partition() -> str | None:
    from fashion_pipeline.defs.retrieval import assets

    return SITE if assets.catalog_embeddings.partitions_def is not None else None


def _new_detector_champion(paths: DataPaths) -> None:
    """What a new detector champion's publish changes: a release of the same models would be `unchanged`."""
    metadata = json.loads((paths.detector_dir / "metadata.json").read_text())
    atomic.write_json(
        {**metadata, "registered_version": metadata["registered_version"] + 1}, paths.detector_dir / "metadata.json"
    )


KILL_POINTS = [
    *_folder_swaps("garment_crops", "crops", "crops"),
    *_folder_swaps("catalog_raw", SITE, f"catalog/raw/{SITE}", SITE),
    KillPoint("catalog_embeddings", "atomic_path:before_rename", "*.parquet", "embeddings", _embeddings_partition()),
    *_folder_swaps("knn_index", "index", "index"),
    KillPoint("knn_index", "atomic_dir:before_swap", "shirt", "index"),  # one category built, the others not
    # One training publish (a training run takes about 45 s here); its swap's other moments are the same code
    # as the crops', the crawl's and the index's above.
    KillPoint("garment_classifier", "atomic_dir:between_renames", "classifier", "models/classifier"),
    *[
        KillPoint("serving_release", point, target, "releases/current", prepare=_new_detector_champion)
        for point, target in (
            ("fsync_tree:done", ".build.*"),  # the release folder written, not yet renamed into place
            ("replace_symlink:before_rename", "current"),  # the release in place, the pointer not yet moved
            ("replace_symlink:after_rename", "current"),  # the pointer moved, its history not yet written
        )
    ],
]
SWITCHED = ("atomic_dir:after_swap", "replace_symlink:after_rename")  # the new output in place, old not cleaned
RUN_CONFIG = {"garment_classifier": {**CLASSIFIER_TINY, "min_accuracy": 0.0}}
OUTCOMES: dict[str, str] = {}  # kill point -> "survived", or the check it failed
RUN_SECONDS: list[tuple[str, float]] = []  # (assets, seconds) of every materialization run


@dataclass
class Materializer:
    """`dagster asset materialize` on one data root, with its own Dagster instance and MLflow store."""

    root: Path
    photos: Path  # FASHION_REAL_PHOTOS: the folder shop the real_products site crawls

    def __call__(
        self, assets: str, partition: str | None = None, fault: str | None = None
    ) -> subprocess.CompletedProcess:
        home = self.root.parent / "dagster_home"
        home.mkdir(exist_ok=True)
        mlruns = self.root.parent / "mlruns"  # MLflow keeps the artifacts beside its store
        mlruns.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = {k: v for k, v in os.environ.items() if k != atomic.FAULT_KILL_ENV}
        env |= {
            "FASHION_DATA_DIR": str(self.root),
            "DAGSTER_HOME": str(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{mlruns / 'mlflow.db'}",
            "FASHION_REAL_PHOTOS": str(self.photos),
        }
        if fault:
            env[atomic.FAULT_KILL_ENV] = fault
        command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "fashion_pipeline.definitions"]
        command += ["--select", assets]
        command += ["--partition", partition] if partition else []
        config = {name: {"config": RUN_CONFIG[name]} for name in assets.split(",") if name in RUN_CONFIG}
        command += ["--config-json", json.dumps({"ops": config})] if config else []
        started = time.monotonic()
        run = subprocess.run(
            command, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
        )
        RUN_SECONDS.append((assets, round(time.monotonic() - started, 1)))
        return run


def _tail(run: subprocess.CompletedProcess) -> str:
    return (run.stdout + run.stderr)[-3000:]


def _folder_shop(photos: Path) -> None:
    """The real_products site's layout (a catalog.csv and its images): two products of each category."""
    folder = photos / "fashion-product-catalog"
    categories = ["shirt", "outwear", "short", "skirt", "dress"] * 2
    write_photos(folder / "images", [f"{n}.jpg" for n in range(len(categories))])
    with (folder / "catalog.csv").open("w", newline="") as out:
        rows = csv.writer(out)
        rows.writerow(["id", "image", "gender", "articleType", "baseColour", "productDisplayName", "target5"])
        for n, category in enumerate(categories):
            rows.writerow([n, f"images/{n}.jpg", "Women", category.title(), "Red", f"{category} {n}", category])


def _snapshot(path: Path) -> dict[str, str]:
    """Every file of `path` (a file, a folder, or a link to one) by its path inside it, with the sha256 of its
    bytes and where a link points; dot names (a write in progress or a killed writer's) are no output."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    found = {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if not any(part.startswith(".") for part in p.relative_to(path).parts)
    }
    return {"->": os.readlink(path), **found} if path.is_symlink() else found


def _leftovers(root: Path) -> list[str]:
    """Temp files and folders of atomic writes anywhere under `root` (`.<name>.<random>.tmp` / `.old`)."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob(".*")
        if p.name.endswith((".tmp", ".old"))
        and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1])
    )


def _app_answer(root: Path) -> dict:
    """Start the app on the data root as `fashion-pipeline serve` does, and ask it about the probe photo."""
    import asyncio

    from fashion_pipeline.lib.retrieval.release_watch import ServedRelease
    from serve.app import create_app

    served = ServedRelease.start(DataPaths(root=root))
    assert served.release_id == os.readlink(DataPaths(root=root).current_release)  # not the data root's files
    app = create_app(served)
    photo = encode(garment_photo({"shirt": (40, 30, 280, 210)}), "JPEG")

    async def ask() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            return await client.post("/api/recommend", files={"image": ("look.jpg", photo, "image/jpeg")}, data=PROBE)

    response = asyncio.run(ask())
    assert response.status_code == 200, response.text
    return response.json()


@dataclass(frozen=True)
class FaultWorld:
    root: Path  # the last good state; each kill point works on its own copy
    photos: Path
    answer: dict  # the app's answer to the probe photo from the last good state


@pytest.fixture(scope="module")
def fault_world(tiny_dataset: DataPaths, tmp_path_factory: pytest.TempPathFactory) -> FaultWorld:
    base = tmp_path_factory.mktemp("kill-faults")
    root = base / "good" / "data"
    paths = DataPaths(root=root)
    shutil.copytree(tiny_dataset.deepfashion2_dir, paths.deepfashion2_dir)  # items name their images absolutely
    _folder_shop(base / "photos")
    build_tiny_real_models(paths)
    materialize = Materializer(root, base / "photos")
    embeddings_partition = _embeddings_partition()
    steps = [
        ("catalog_raw,catalog_images", SITE),
        ("garment_crops,product_catalog", None),
        ("catalog_embeddings", embeddings_partition),
        ("knn_index", None),
        ("serving_release", None),
    ]
    for assets, partition in steps:
        run = materialize(assets, partition)
        assert run.returncode == 0, f"{assets}: {_tail(run)}"
    assert _leftovers(root) == []
    answer = _app_answer(root)
    [garment] = answer["detections"]
    assert len(garment["recommendations"]) == 2  # both shirts of the shop
    return FaultWorld(root, base / "photos", answer)


@pytest.fixture(scope="module", autouse=True)
def _kill_table(request: pytest.FixtureRequest) -> Iterator[None]:
    """The kill points tried and survived, printed after the module (also when it passes, unlike print)."""
    yield
    if not OUTCOMES:
        return
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    width = max(len(point) for point in OUTCOMES)
    lines = ["", f"{'kill point':<{width}}  outcome", f"{'-' * width}  -------"]
    lines += [f"{point:<{width}}  {outcome}" for point, outcome in OUTCOMES.items()]
    survived = sum(outcome == "survived" for outcome in OUTCOMES.values())
    lines.append(f"kill points tried: {len(OUTCOMES)}, survived: {survived}")
    by_asset: dict[str, list[float]] = {}
    for assets, seconds in RUN_SECONDS:
        by_asset.setdefault(assets, []).append(seconds)
    runs = ", ".join(f"{a} {len(t)} x {sum(t) / len(t):.0f} s" for a, t in by_asset.items())
    lines.append(f"materialization runs (killed or not), mean wall time: {runs}")
    for line in lines:
        (terminal.write_line if terminal else print)(line)


def _old_kept_whole(output: Path, before: dict[str, str]) -> bool:
    """The last good output whole beside the new one: the old release, or a swapped folder until its cleanup
    (exchanged into the temp folder, or moved aside by the first of two renames)."""
    if "->" in before:
        return _snapshot(output.parent / before["->"]) == {k: v for k, v in before.items() if k != "->"}
    for name in glob.glob(f".{glob.escape(output.name)}.*", root_dir=output.parent, include_hidden=True):
        if any(
            _snapshot(old) == before for old in (output.parent / name, output.parent / name / "old") if old.is_dir()
        ):
            return True
    return False


@pytest.mark.parametrize("kill", KILL_POINTS, ids=lambda kill: kill.id)
def test_a_sigkill_mid_write_loses_nothing_and_leaves_nothing(
    kill: KillPoint, fault_world: FaultWorld, tmp_path: Path
) -> None:
    OUTCOMES[kill.id] = "not killed"
    root = tmp_path / "data"
    shutil.copytree(fault_world.root, root, symlinks=True)
    if kill.prepare:
        kill.prepare(DataPaths(root=root))
    output = root / kill.output
    before = _snapshot(output)
    materialize = Materializer(root, fault_world.photos)

    killed = materialize(kill.asset, kill.partition, fault=kill.fault)
    assert killed.returncode == -signal.SIGKILL, f"the run was not killed at {kill.fault}: {_tail(killed)}"

    OUTCOMES[kill.id] = "(a) output lost"
    if kill.point == "atomic_dir:between_renames":  # the old output moved aside whole; the next write puts it back
        assert not output.exists() and _old_kept_whole(output, before)
    elif kill.point in SWITCHED:
        assert _old_kept_whole(output, before)
        switched_in = _tree(output)
    else:
        assert _snapshot(output) == before
    OUTCOMES[kill.id] = "(a) app did not answer as before"
    assert _app_answer(root) == fault_world.answer

    OUTCOMES[kill.id] = "(b) next run failed"
    rerun = materialize(kill.asset, kill.partition)
    assert rerun.returncode == 0, _tail(rerun)
    if kill.point in SWITCHED:  # what the killed run switched in was a whole output
        assert switched_in == _tree(output)

    OUTCOMES[kill.id] = "(c) temp left"
    assert _leftovers(root) == []
    OUTCOMES[kill.id] = "survived"
