"""Catalog embeddings: one row per readable product, recomputed only for new or changed images or a new model."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fashion_pipeline.lib.retrieval import embeddings
from fashion_pipeline_tests.fixtures_retrieval import HistogramEmbedder, RetrievalWorld

READABLE = 9  # products in the world's catalog with an image file


def test_first_run_embeds_every_readable_product_and_reports_the_rest(retrieval_world: RetrievalWorld) -> None:
    embedder = HistogramEmbedder()

    table, stats = embeddings.embed_catalog(retrieval_world.products, embedder, None, batch_size=4)

    assert list(table.columns) == embeddings.EMBEDDING_COLUMNS
    assert len(table) == READABLE and stats.embedded == READABLE and stats.reused == 0
    assert stats.failed == {"darveys:dead": "no image file (download failed or no image URL)"}
    assert embedder.calls == 3  # batches of 4, 4, 1
    matrix = embeddings.embedding_matrix(table)
    assert matrix.shape == (READABLE, 64) and matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-6)
    assert set(table["model_version"]) == {1}
    assert table["product_id"].tolist() == [p for p in retrieval_world.products["product_id"] if p != "darveys:dead"]


def test_second_run_embeds_only_the_changed_product(retrieval_world: RetrievalWorld) -> None:
    first, _ = embeddings.embed_catalog(retrieval_world.products, HistogramEmbedder())
    changed = retrieval_world.products.iloc[2]
    Image.new("RGB", (64, 96), (40, 40, 200)).save(changed["image_path"])
    embedder = HistogramEmbedder()

    second, stats = embeddings.embed_catalog(retrieval_world.products, embedder, first)

    assert (stats.embedded, stats.reused, embedder.embedded) == (1, READABLE - 1, 1)
    assert stats.full_rebuild_reason is None
    moved = second["product_id"] == changed["product_id"]
    assert not np.allclose(second.loc[moved, "embedding"].iloc[0], first.loc[moved, "embedding"].iloc[0])
    np.testing.assert_array_equal(
        embeddings.embedding_matrix(second[~moved]), embeddings.embedding_matrix(first[~moved])
    )


def test_unchanged_catalog_embeds_nothing_and_drops_removed_products(retrieval_world: RetrievalWorld) -> None:
    first, _ = embeddings.embed_catalog(retrieval_world.products, HistogramEmbedder())
    fewer = retrieval_world.products.iloc[1:]
    embedder = HistogramEmbedder()

    second, stats = embeddings.embed_catalog(fewer, embedder, first)

    assert (embedder.embedded, stats.reused, stats.removed) == (0, READABLE - 1, 1)
    assert retrieval_world.products.iloc[0]["product_id"] not in set(second["product_id"])


def test_new_model_version_embeds_everything_again(retrieval_world: RetrievalWorld) -> None:
    first, _ = embeddings.embed_catalog(retrieval_world.products, HistogramEmbedder(version=1))
    embedder = HistogramEmbedder(version=2)

    second, stats = embeddings.embed_catalog(retrieval_world.products, embedder, first)

    assert (stats.embedded, stats.reused, embedder.embedded) == (READABLE, 0, READABLE)
    assert set(second["model_version"]) == {2}
    assert "version(s) [1]" in stats.full_rebuild_reason and "now version 2" in stats.full_rebuild_reason


def test_unreadable_image_is_reported_not_dropped_silently(retrieval_world: RetrievalWorld) -> None:
    broken = retrieval_world.products.iloc[0]
    with open(broken["image_path"], "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n not really")

    table, stats = embeddings.embed_catalog(retrieval_world.products, HistogramEmbedder())

    assert len(table) == READABLE - 1
    assert stats.failed[broken["product_id"]].startswith("not a readable image")


def test_table_roundtrips_as_fixed_size_float32_lists(retrieval_world: RetrievalWorld, tmp_path) -> None:
    table, stats = embeddings.embed_catalog(retrieval_world.products, HistogramEmbedder())
    target = tmp_path / "embeddings" / "catalog_embeddings.parquet"

    embeddings.write_embeddings(table, target, 64, failed=stats.failed)

    stored = pq.read_schema(target).field("embedding").type
    assert pa.types.is_fixed_size_list(stored) and stored.list_size == 64 and stored.value_type == pa.float32()
    back = embeddings.read_embeddings(target)
    assert back.attrs["failed"] == stats.failed
    assert back["product_id"].tolist() == table["product_id"].tolist()
    np.testing.assert_array_equal(embeddings.embedding_matrix(back), embeddings.embedding_matrix(table))
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # the temporary file is gone
