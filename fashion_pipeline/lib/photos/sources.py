"""The sources file: which labelled photo folders a user has, what their labels mean and which split each
photo belongs to. A YAML file (`FASHION_PHOTO_SOURCES`, or the `sources_file` setting of `labelled_photos`):

```yaml
sources:
  - name: my-shirts              # letters, digits, . _ -; prefixes every image id (`my-shirts/<stem>`)
    task: classifier             # classifier (photos of one garment) | detector (boxes)
    format: class_folders        # classifier: class_folders | csv;  detector: yolo
    mapping: labels_5class.csv   # CSV: label (or class id for yolo) -> one of the 5 categories; empty = skip
    crops: true                  # train/validation rows feed garment_crops (default true)
    validation_fraction: 0.1     # only with a `trainval` split: share drawn into validation by id hash
    splits:                      # train | validation | test | trainval, each one folder (+ optional id list)
      train: {folder: photos/train}
      test: {folder: ${MY_PHOTOS}/test, ids: test_ids.txt}
```

Layouts: class_folders `<folder>/<label>/<image>`; yolo `<folder>/images/<id>.<ext>` + `<folder>/labels/<id>.txt`
(`cls xc yc w h`, normalised); csv `{csv: file.csv}` per split with columns `image,label` (image relative to the
CSV), or one `csv: file.csv` on the source with a third column `split`. Without `mapping` the labels must be
the categories themselves (yolo: class ids in model order).

Paths may use `${VAR}`; an unset or empty variable is an error naming it. A path written relative resolves
against the YAML file's folder; a path that starts with a variable is taken as the shell would take it
(a relative value against the current directory, like `FASHION_DATA_DIR`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TASK_FORMATS = {"classifier": ("class_folders", "csv"), "detector": ("yolo",)}
SPLITS = ("train", "validation", "test")
TRAINVAL = "trainval"  # a folder split into train and validation here, by a hash of each photo's id
RESERVED_NAMES = {"deepfashion2"}  # the photo_source of DeepFashion2 rows in the training tables
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_SOURCE_KEYS = {"name", "task", "format", "mapping", "crops", "validation_fraction", "splits", "csv"}


class PhotoSourcesError(ValueError):
    """The sources file is malformed or names something that does not exist; the message says where."""


@dataclass(frozen=True)
class SplitInput:
    split: str  # train | validation | test | trainval
    folder: Path | None = None  # class_folders and yolo
    ids: Path | None = None  # optional: only these ids (file names without suffix) of the folder
    csv: Path | None = None  # csv format


@dataclass(frozen=True)
class PhotoSource:
    name: str
    task: str
    format: str
    mapping: Path | None
    splits: tuple[SplitInput, ...]
    csv: Path | None = None  # csv format: one file whose `split` column names each photo's split
    validation_fraction: float | None = None
    crops: bool = True


def resolve_path(value: Any, base: Path, where: str) -> Path:
    """`value` with `${VAR}` expanded, made absolute (see the module docstring for the rule)."""
    if not isinstance(value, str) or not value.strip():
        raise PhotoSourcesError(f"{where}: expected a path, got {value!r}")
    for braced, bare in _VARIABLE.findall(value):
        name = braced or bare
        if not os.environ.get(name):
            raise PhotoSourcesError(f"{where}: {value!r} uses ${{{name}}}, which is not set")
    path = Path(os.path.expandvars(value)).expanduser()
    if not path.is_absolute() and not value.startswith("$"):
        path = base / path
    return path.resolve()


def _existing(value: Any, base: Path, where: str, folder: bool = False) -> Path:
    path = resolve_path(value, base, where)
    if not (path.is_dir() if folder else path.is_file()):
        raise PhotoSourcesError(f"{where}: {'folder' if folder else 'file'} {path} does not exist")
    return path


def _split_input(source: str, split: str, entry: Any, fmt: str, base: Path) -> SplitInput:
    where = f"source {source!r}, split {split!r}"
    if split not in (*SPLITS, TRAINVAL):
        raise PhotoSourcesError(f"{where}: unknown split (use {', '.join((*SPLITS, TRAINVAL))})")
    allowed = {"csv"} if fmt == "csv" else {"folder", "ids"}
    if not isinstance(entry, dict) or not entry or set(entry) - allowed:
        raise PhotoSourcesError(f"{where}: expected a mapping with {sorted(allowed)}, got {entry!r}")
    if fmt == "csv":
        return SplitInput(split, csv=_existing(entry.get("csv"), base, f"{where}, csv"))
    if "folder" not in entry:
        raise PhotoSourcesError(f"{where}: `folder` is missing")
    return SplitInput(
        split,
        folder=_existing(entry["folder"], base, f"{where}, folder", folder=True),
        ids=_existing(entry["ids"], base, f"{where}, ids") if "ids" in entry else None,
    )


def _source(raw: Any, base: Path, index: int) -> PhotoSource:
    if not isinstance(raw, dict):
        raise PhotoSourcesError(f"source #{index + 1}: expected a mapping, got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or name in RESERVED_NAMES:
        raise PhotoSourcesError(
            f"source #{index + 1}: name {name!r} must be letters, digits, '.', '_' or '-' and not {RESERVED_NAMES}"
        )
    where = f"source {name!r}"
    unknown = set(raw) - _SOURCE_KEYS
    if unknown:
        raise PhotoSourcesError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(_SOURCE_KEYS)})")
    task, fmt = raw.get("task"), raw.get("format")
    if task not in TASK_FORMATS or fmt not in TASK_FORMATS[task]:
        raise PhotoSourcesError(f"{where}: task/format {task!r}/{fmt!r}; allowed: {TASK_FORMATS}")
    crops = raw.get("crops", True)
    if not isinstance(crops, bool):
        raise PhotoSourcesError(f"{where}: crops must be true or false, got {crops!r}")
    csv_file = _existing(raw["csv"], base, f"{where}, csv") if "csv" in raw else None
    if csv_file is not None and fmt != "csv":
        raise PhotoSourcesError(f"{where}: a source-level `csv` needs format csv")
    raw_splits = raw.get("splits") or {}
    if not isinstance(raw_splits, dict) or (csv_file is None) == (not raw_splits):
        raise PhotoSourcesError(f"{where}: give `splits` (a mapping of split -> input), or for csv one `csv` file")
    splits = tuple(_split_input(name, s, e, fmt, base) for s, e in raw_splits.items())
    names = {s.split for s in splits}
    if TRAINVAL in names and names & {"train", "validation"}:
        raise PhotoSourcesError(f"{where}: `trainval` and `train`/`validation` cannot be used together")
    fraction = raw.get("validation_fraction")
    has_trainval = TRAINVAL in names or csv_file is not None
    if fraction is not None and (not has_trainval or not isinstance(fraction, int | float) or not 0 < fraction < 1):
        raise PhotoSourcesError(f"{where}: validation_fraction must be in (0, 1) and needs a trainval split")
    if TRAINVAL in names and fraction is None:
        raise PhotoSourcesError(f"{where}: a trainval split needs validation_fraction")
    mapping = _existing(raw["mapping"], base, f"{where}, mapping") if raw.get("mapping") is not None else None
    return PhotoSource(name, task, fmt, mapping, splits, csv_file, fraction, crops)


def load_sources(path: Path | str) -> list[PhotoSource]:
    """Every source of a sources file, checked: names unique, tasks and formats known, every path present."""
    path = Path(path).resolve()
    if not path.is_file():
        raise PhotoSourcesError(f"photo sources file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PhotoSourcesError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list):
        raise PhotoSourcesError(f"{path}: expected a top-level `sources:` list")
    try:
        sources = [_source(entry, path.parent, i) for i, entry in enumerate(raw["sources"])]
    except PhotoSourcesError as exc:
        raise PhotoSourcesError(f"{path}: {exc}") from None
    names = [s.name for s in sources]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise PhotoSourcesError(f"{path}: source names used twice: {duplicated}")
    return sources
