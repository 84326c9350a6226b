"""The catalog embeddings as one file per shop: `<embeddings_dir>/<site>.parquet`, each written by that site's
partition of `catalog_embeddings`, and read together here by everything that needs the whole catalog's vectors
(`knn_index`, the app's model-version check).

Per-site files let one site be re-embedded (after its recrawl) without reading or rewriting the others' rows.
Only the sites asked for are read: a configured site whose partition was never materialized has no file and
contributes nothing, and the file of a site removed from crawl/sites.yaml stays on disk unread (the catalog no
longer lists its products; re-adding the site reuses its vectors) and is reported by `unread_files`.

The files must agree on how their vectors were made (model version, vector layout): one index cannot mix
them, and `disagreements` says which sites to re-embed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from fashion_pipeline.lib.retrieval.embeddings import EMBEDDING_COLUMNS, read_embeddings

SUFFIX = ".parquet"
# A site's name becomes a file name: no separators, no hidden files.
_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def site_file(embeddings_dir: Path, site: str) -> Path:
    """Where `site`'s embeddings live."""
    if not _SITE_NAME.fullmatch(site):
        raise ValueError(f"site {site!r} cannot name an embeddings file: use letters, digits, _ and - in sites.yaml")
    return Path(embeddings_dir) / f"{site}{SUFFIX}"


def read_site_tables(embeddings_dir: Path, sites: Iterable[str]) -> dict[str, pd.DataFrame]:
    """site -> its embeddings table (`embeddings.read_embeddings`), for the `sites` that have a file."""
    return {
        site: read_embeddings(site_file(embeddings_dir, site))
        for site in sites
        if site_file(embeddings_dir, site).is_file()
    }


def unread_files(embeddings_dir: Path, sites: Iterable[str]) -> list[str]:
    """Names of the files under `embeddings_dir` that belong to none of `sites` (removed sites), sorted."""
    if not Path(embeddings_dir).is_dir():
        return []
    wanted = {f"{site}{SUFFIX}" for site in sites}
    return sorted(p.name for p in Path(embeddings_dir).glob(f"*{SUFFIX}") if p.name not in wanted)


def _made_with(table: pd.DataFrame) -> tuple[tuple[int, ...], str]:
    versions = tuple(sorted({int(v) for v in table["model_version"]}))
    return versions, table.attrs["layout"].layout_id


def disagreements(tables: Mapping[str, pd.DataFrame], model_version: int) -> list[str]:
    """Why the sites' tables cannot make one index (they were made by other models or layouts), naming the
    sites to re-embed: those not on the champion's `model_version`, else those off the most common layout.
    [] when they agree (a single site never disagrees with itself here; `index_checks` judges it)."""
    made = {site: _made_with(table) for site, table in tables.items() if len(table)}
    if len(set(made.values())) <= 1:
        return []
    described = "; ".join(
        f"{site}: model version {'/'.join(map(str, versions)) or '-'}, layout {layout}"
        for site, (versions, layout) in sorted(made.items())
    )
    redo = [site for site, (versions, _) in made.items() if versions != (int(model_version),)]
    if not redo:
        # All on the champion, in different layouts: the odd ones out, or every site when no layout has most.
        counts = pd.Series([layout for _, layout in made.values()]).value_counts()
        majority = counts.index[0] if len(counts) == 1 or counts.iloc[0] > counts.iloc[1] else None
        redo = [site for site, (_, layout) in made.items() if layout != majority]
    return [
        f"the sites' embeddings were made differently ({described}), so one index cannot hold them: "
        f"rematerialize catalog_embeddings for {', '.join(sorted(redo))}, then knn_index"
    ]


def combine(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The sites' tables as one (sites in the given order), with their `failed` products merged in `attrs`.

    Call `disagreements` first: the combined table carries one layout, the first non-empty site's.
    """
    if not tables:
        raise ValueError("no site's embeddings to combine: materialize catalog_embeddings for a crawled site")
    frames = list(tables.values())
    filled = [table for table in frames if len(table)] or frames
    # pandas compares the inputs' attrs to carry them over; ours (a layout, dicts) are set below instead.
    bare = [table.copy(deep=False) for table in filled]
    for table in bare:
        table.attrs = {}
    combined = pd.concat(bare, ignore_index=True)[EMBEDDING_COLUMNS]
    combined.attrs["layout"] = filled[0].attrs["layout"]
    combined.attrs["failed"] = {pid: why for table in frames for pid, why in table.attrs.get("failed", {}).items()}
    return combined


def model_versions(embeddings_dir: Path, sites: Iterable[str] | None = None) -> set[int] | None:
    """The model versions of the `sites`' embeddings (default: every site file), reading the version column
    only; None when there is no file."""
    if sites is None:
        present = sorted(Path(embeddings_dir).glob(f"*{SUFFIX}")) if Path(embeddings_dir).is_dir() else []
    else:
        present = [path for path in (site_file(embeddings_dir, site) for site in sites) if path.is_file()]
    if not present:
        return None
    return {int(v) for path in present for v in pq.read_table(path, columns=["model_version"]).column(0).to_pylist()}
