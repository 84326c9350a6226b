"""catalog_embeddings partitioned by site: a recrawl of one site re-embeds that site only (what the automation
requests, evaluated by Dagster on a real instance), knn_index holds every site's products, sites embedded
differently are refused, and the demo cuts the graph into runs where partitioning changes."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from PIL import Image

from fashion_pipeline.defs.catalog.assets import product_catalog, site_partitions
from fashion_pipeline.defs.resources import DataPathsResource
from fashion_pipeline.defs.retrieval import assets
from fashion_pipeline.lib.retrieval import embeddings, knn, site_embeddings
from fashion_pipeline.lib.retrieval.layout import RetrievalEmbedder, default_layout
from fashion_pipeline_tests.fixtures_retrieval import (
    OTHER_SITE,
    WORLD_SITES,
    HistogramEmbedder,
    RetrievalWorld,
    materialize_retrieval,
)
from fashion_pipeline_tests.test_retrieval_assets import fake_models  # noqa: F401  (a fixture)

EMBEDDINGS = dg.AssetKey("catalog_embeddings")
INDEX = dg.AssetKey("knn_index")
CATALOG = dg.AssetKey("product_catalog")


class Automation:
    """The retrieval assets' automation conditions evaluated tick by tick on one instance, as the sensor does.

    The crawl side and the models are plain specs whose updates the test reports (they are tested in their own
    stages); product_catalog keeps its real condition.
    """

    def __init__(self, world: RetrievalWorld) -> None:
        self.world = world
        self.instance = dg.DagsterInstance.ephemeral()
        self.defs = dg.Definitions(
            assets=[
                dg.AssetSpec("garment_classifier"),
                dg.AssetSpec("retrieval_projection", deps=["garment_classifier"]),
                dg.AssetSpec("catalog_images", partitions_def=site_partitions),
                product_catalog,
                assets.catalog_embeddings,
                assets.knn_index,
            ],
            resources={"paths": DataPathsResource(data_dir=str(world.paths.root), df2_root="")},
        )
        self.cursor = None

    def report(self, key: str, partition: str | None = None) -> None:
        self.instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))

    def tick(self) -> dict[dg.AssetKey, set[str | None]]:
        """What one evaluation requests: asset -> partitions (None: the unpartitioned asset)."""
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        return {
            key: set(result.get_requested_partitions(key))
            for key in (CATALOG, EMBEDDINGS, INDEX)
            if result.get_num_requested(key)
        }

    def run(self, requested: dict[dg.AssetKey, set[str | None]]) -> None:
        """Materialize what was requested (the retrieval assets for real; product_catalog reported)."""
        if CATALOG in requested:
            self.report("product_catalog")
        if EMBEDDINGS in requested:
            sites = sorted(requested[EMBEDDINGS])
            assert materialize_retrieval([assets.catalog_embeddings], self.world.paths.root, sites, instance=self.instance).success  # fmt: skip
        if INDEX in requested:
            assert materialize_retrieval([assets.knn_index], self.world.paths.root, instance=self.instance).success


def test_a_recrawl_re_embeds_only_its_site_and_a_new_champion_every_site(
    retrieval_world: RetrievalWorld,
    fake_models: dict,  # noqa: F811
) -> None:
    automation = Automation(retrieval_world)
    assert automation.tick() == {}  # the first evaluation: nothing materialized, nothing requested
    automation.report("garment_classifier")
    automation.report("retrieval_projection")
    for site in WORLD_SITES:
        automation.report("catalog_images", site)

    # Both shops crawled: the catalog merges first; embedding waits for it (it reads the merged catalog).
    assert automation.tick() == {CATALOG: {None}}
    automation.run({CATALOG: {None}})
    # Then each crawled site embeds; the configured sites never crawled (amazon, real_products) do not.
    assert automation.tick() == {EMBEDDINGS: set(WORLD_SITES)}
    automation.run({EMBEDDINGS: set(WORLD_SITES)})
    # knn_index follows the partitions, though two configured sites never had embeddings.
    assert automation.tick() == {INDEX: {None}}
    automation.run({INDEX: {None}})
    assert automation.tick() == {}

    # demo_shop is recrawled: one product photo changed.
    other_file = site_embeddings.site_file(retrieval_world.paths.embeddings_dir, OTHER_SITE)
    other_before = other_file.read_bytes()
    changed = retrieval_world.products.iloc[0]
    Image.new("RGB", (64, 96), (40, 200, 40)).save(changed["image_path"])
    automation.report("catalog_images", "demo_shop")
    assert automation.tick() == {CATALOG: {None}}
    automation.run({CATALOG: {None}})
    assert automation.tick() == {EMBEDDINGS: {"demo_shop"}}  # not the other shop
    embedders_before = len(fake_models["embedders"])
    automation.run({EMBEDDINGS: {"demo_shop"}})
    assert [e.embedded for e in fake_models["embedders"][embedders_before:]] == [1]  # the changed photo only
    assert other_file.read_bytes() == other_before
    assert automation.tick() == {INDEX: {None}}
    automation.run({INDEX: {None}})
    indexes = knn.load_indexes(retrieval_world.paths.index_dir)
    indexed = {str(p) for index in indexes.values() for p in index.product_ids}
    assert changed["product_id"] in indexed and f"{OTHER_SITE}:o0" in indexed

    # A new champion: its layout is refitted (retrieval_projection) before anything re-embeds; then every site.
    automation.report("garment_classifier")
    assert automation.tick() == {}
    automation.report("retrieval_projection")
    assert automation.tick() == {EMBEDDINGS: set(WORLD_SITES)}


def test_mixed_model_versions_across_sites_are_refused_and_the_served_index_kept(
    retrieval_world: RetrievalWorld,
    fake_models: dict,  # noqa: F811
) -> None:
    root = retrieval_world.paths.root
    assert materialize_retrieval([assets.catalog_embeddings, assets.knn_index], root).success
    served = knn.load_indexes(retrieval_world.paths.index_dir)
    fake_models["version"] = 2  # the other shop re-embedded by a model that is not the champion (version 1)
    assert materialize_retrieval([assets.catalog_embeddings], root, sites=[OTHER_SITE]).success

    runs = materialize_retrieval([assets.knn_index], root, raise_on_error=False)

    check = runs.checks()["index_matches_catalog_and_model"]
    assert not check.passed
    assert "demo_shop: model version 1" in check.description and f"{OTHER_SITE}: model version 2" in check.description
    assert f"rematerialize catalog_embeddings for {OTHER_SITE}, then knn_index" in check.description
    kept = knn.load_indexes(retrieval_world.paths.index_dir)
    assert {c: list(i.product_ids) for c, i in kept.items()} == {c: list(i.product_ids) for c, i in served.items()}
    assert runs.metadata("knn_index")["served"] == "the previous indexes (the new build was discarded)"


def test_mixed_layouts_name_the_odd_site_or_every_site_on_a_tie(retrieval_world: RetrievalWorld) -> None:
    by_site = dict(iter(retrieval_world.products.groupby("site")))
    bare = HistogramEmbedder()  # its vectors alone (the layout before retrieval_projection existed)
    coloured = RetrievalEmbedder(HistogramEmbedder(), default_layout(bare.embedding_dim))
    tables = {
        "demo_shop": embeddings.embed_catalog(by_site["demo_shop"], bare)[0],
        OTHER_SITE: embeddings.embed_catalog(by_site[OTHER_SITE], coloured)[0],
    }
    [tie] = site_embeddings.disagreements(tables, 1)
    assert f"rematerialize catalog_embeddings for {', '.join(sorted(tables))}, then knn_index" in tie
    tables["amazon"] = tables[OTHER_SITE]
    [odd] = site_embeddings.disagreements(tables, 1)
    assert "rematerialize catalog_embeddings for demo_shop, then knn_index" in odd
    assert site_embeddings.disagreements({"demo_shop": tables["demo_shop"]}, 1) == []


def test_site_files_read_write_and_name_checks(retrieval_world: RetrievalWorld, tmp_path: Path) -> None:
    folder = tmp_path / "sites"
    tables = {}
    for site, group in retrieval_world.products.groupby("site"):
        table, stats = embeddings.embed_catalog(group, HistogramEmbedder())
        embeddings.write_embeddings(table, site_embeddings.site_file(folder, site), 64, stats.failed)
        tables[site] = table
    embeddings.write_embeddings(tables["demo_shop"], folder / "closed_shop.parquet", 64)

    read = site_embeddings.read_site_tables(folder, ["demo_shop", OTHER_SITE, "amazon"])
    assert sorted(read) == sorted(WORLD_SITES)  # amazon has no file: it contributes nothing
    combined = site_embeddings.combine(read)
    assert sorted(combined["product_id"]) == sorted(pd.concat(tables.values())["product_id"])
    assert combined.attrs["failed"] == {f"{OTHER_SITE}:dead": "no image file (download failed or no image URL)"}
    assert site_embeddings.unread_files(folder, WORLD_SITES) == ["closed_shop.parquet"]
    assert site_embeddings.model_versions(folder, WORLD_SITES) == {1}
    assert site_embeddings.model_versions(tmp_path / "none") is None
    with pytest.raises(ValueError, match="cannot name an embeddings file"):
        site_embeddings.site_file(folder, "../demo_shop")


def test_the_demo_and_the_stack_run_each_partitioned_stretch_once_per_site() -> None:
    from fashion_pipeline.commands.stack_runs import batches
    from fashion_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    cut = batches(graph, set(graph.get_all_asset_keys()))
    names = [[key.to_user_string() for key in batch] for batch in cut]
    assert [graph.get(batch[0]).partitions_def is not None for batch in cut] == [False, True, False, True, False]
    assert all(len({graph.get(key).partitions_def for key in batch}) == 1 for batch in cut)
    assert {"garment_classifier", "retrieval_projection"} <= set(names[0])
    assert names[1:4] == [["catalog_raw", "catalog_images"], ["product_catalog"], ["catalog_embeddings"]]
    assert names[4][0] == "knn_index" and "retrieval_evaluation" in names[4]
    # Without the trained models (a demo keeping its champions) the cut is the same after the first batch.
    kept = {key for key in graph.get_all_asset_keys() if key.to_user_string() not in {"garment_classifier"}}
    assert [[k.to_user_string() for k in batch] for batch in batches(graph, kept)][1:4] == names[1:4]
