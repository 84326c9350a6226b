"""What the app serves: the current release, loaded at start and reloaded between requests when the pointer moves.

`ServedRelease.current()` is called once at the start of each request. At most every `check_interval_s` it
reads the pointer (one readlink); when it names another release, that release loads in a background thread
while the old one keeps answering, and the reference is swapped when it is ready. A request keeps the
recommender it started with to its end, so none sees half of one release and half of another. A release that
fails to load is not retried until the pointer moves again; `status()` (shown by /healthz) says what waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.retrieval.query import RecommenderError
from fashion_pipeline.lib.retrieval.release_pointer import current_release_id

log = logging.getLogger(__name__)

DEFAULT_CHECK_S = 2.0  # seconds between two looks at the pointer: a new release is served within this


def load_release(paths: DataPaths, release_dir: Path) -> Any:
    """The real loader: the release's champions, indexes and catalog (Recommender.from_release)."""
    from fashion_pipeline.lib.retrieval.recommender import Recommender

    return Recommender.from_release(paths, release_dir)


def load_data_root(paths: DataPaths) -> Any:
    from fashion_pipeline.lib.retrieval.recommender import Recommender

    return Recommender.from_paths(paths)


def load_current(
    paths: DataPaths,
    load: Callable[[DataPaths, Path], Any] = load_release,
    load_without_release: Callable[[DataPaths], Any] = load_data_root,
) -> tuple[Any, str | None]:
    """The recommender of the current release and its id; the data root's own files (id None) without one.

    Data roots from before releases have no pointer: they keep serving (with a warning) until the first
    serving_release materialization, which a running app then picks up without a restart.
    """
    release_id = current_release_id(paths)
    if release_id is None:
        log.warning(
            "no serving release in %s (materialize serving_release): serving the data root's files directly",
            paths.releases_dir,
        )
        return load_without_release(paths), None
    try:
        return load(paths, paths.releases_dir / release_id), release_id
    except RecommenderError as exc:
        raise RecommenderError(
            f"the current release {release_id} cannot be served: {exc} (`fashion-pipeline release rollback` "
            "returns to the previous release)"
        ) from exc


@dataclass(frozen=True)
class PendingRelease:
    release_id: str
    state: str  # "loading" or "failed"
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"release": self.release_id, "state": self.state, "error": self.error}


class ServedRelease:
    """The recommender the app answers with, and the release it came from (None: the data root's files)."""

    def __init__(
        self,
        recommender: Any,
        release_id: str | None = None,
        *,
        paths: DataPaths | None = None,
        load: Callable[[DataPaths, Path], Any] = load_release,
        check_interval_s: float = DEFAULT_CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._recommender = recommender
        self.release_id = release_id
        self._paths = paths  # None: a fixed recommender (tests, a library user), never reloaded
        self._load = load
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._checked = clock()
        self._lock = threading.Lock()
        self._pending: PendingRelease | None = None
        self._loader: threading.Thread | None = None

    @classmethod
    def start(
        cls, paths: DataPaths, load: Callable[[DataPaths, Path], Any] = load_release, **options: Any
    ) -> ServedRelease:
        """Load the current release now (refusing, with the reason, when it cannot be served) and watch the pointer."""
        without_release = options.pop("load_without_release", load_data_root)
        recommender, release_id = load_current(paths, load, without_release)
        return cls(recommender, release_id, paths=paths, load=load, **options)

    @property
    def recommender(self) -> Any:
        """The recommender served now, without looking at the pointer."""
        return self._recommender

    def current(self) -> Any:
        """The recommender a request should use; looks at the pointer when `check_interval_s` has passed."""
        if self._paths is not None:
            now = self._clock()
            if now - self._checked >= self.check_interval_s:
                self._checked = now
                self._look_at_pointer()
        return self._recommender

    def _look_at_pointer(self) -> None:
        assert self._paths is not None
        pointed = current_release_id(self._paths)
        with self._lock:
            if self._loader is not None and self._loader.is_alive():
                return  # one load at a time; the next look after it sees where the pointer is then
            if pointed is None or pointed == self.release_id:
                self._pending = None  # rolled back to what is served (or no release): nothing waits
                return
            if self._pending is not None and self._pending.release_id == pointed:
                return  # it failed to load: wait for the pointer to move again
            self._pending = PendingRelease(pointed, "loading")
            self._loader = threading.Thread(
                target=self._load_in_background, args=(pointed,), name=f"load-release-{pointed}", daemon=True
            )
            self._loader.start()

    def _load_in_background(self, release_id: str) -> None:
        assert self._paths is not None
        try:
            recommender = self._load(self._paths, self._paths.releases_dir / release_id)
        except Exception as exc:
            # Any failure (a damaged file, memory): a thread's exception would vanish, so it is logged and
            # shown in /healthz, and the old release keeps answering.
            log.exception("release %s could not be loaded; still serving %s", release_id, self.release_id)
            with self._lock:
                self._pending = PendingRelease(release_id, "failed", str(exc) or type(exc).__name__)
            return
        with self._lock:
            self._recommender = recommender  # one reference: a request holds the one it started with
            self.release_id = release_id
            self._pending = None
        log.info("now serving release %s", release_id)

    def wait_for_load(self, timeout: float | None = None) -> None:
        """Wait for a release being loaded (if any) to be swapped in or to fail."""
        loader = self._loader
        if loader is not None:
            loader.join(timeout)

    def status(self) -> dict[str, Any]:
        """The release served, and the newer one the pointer names while it loads or after it failed to."""
        with self._lock:
            pending = self._pending.to_dict() if self._pending else None
        return {"release": self.release_id, "newer_release": pending}
