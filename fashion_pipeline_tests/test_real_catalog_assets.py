"""retrieval_projection -> catalog_embeddings -> knn_index -> real_retrieval_evaluation on a small generated
labelled catalog, with a fake champion that sees a garment's shape (its type) and not its colour."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from fashion_pipeline.defs.resources import DataPathsResource, MlflowResource
from fashion_pipeline.defs.retrieval import assets, loading, real_catalog
from fashion_pipeline.lib.common.paths import DataPaths
from fashion_pipeline.lib.retrieval import knn, layout_store
from fashion_pipeline.lib.retrieval.projection import PROJECTION_FILE
from fashion_pipeline_tests.fixtures_retrieval import materialize_retrieval

SHAPES = {"Tshirts": (20, 30, 76, 90), "Shirts": (34, 14, 62, 110), "Jeans": (30, 10, 66, 118)}
COLOURS = {"Red": (200, 30, 40), "Navy Blue": (25, 35, 80), "Green": (45, 150, 65)}


class ShapeEmbedder:
    """Unit rows from the garment's bounding box: it tells the shapes (types) apart and ignores colour."""

    version, embedding_dim = 1, 4

    def embed(self, images):
        rows = []
        for image in images:
            dark = np.asarray(image.convert("L")) < 240
            ys, xs = np.nonzero(dark)
            width, height = np.ptp(xs) + 1, np.ptp(ys) + 1
            rows.append([width / 96, height / 128, width / height, 0.3])
        return knn.normalize_rows(np.asarray(rows, np.float32))


def _write_catalog(folder: Path, per_kind: int = 6) -> pd.DataFrame:
    rows, rng = [], np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    for article_type, box in SHAPES.items():
        for colour_name, fill in COLOURS.items():
            for i in range(per_kind):
                product_id = f"{article_type}-{colour_name}-{i}".replace(" ", "")
                image = Image.new("RGB", (96, 128), (252, 252, 252))
                jitter = rng.integers(-3, 4, size=4)
                ImageDraw.Draw(image).rectangle(tuple(int(v) for v in np.add(box, jitter)), fill=fill)
                image.save(folder / "images" / f"{product_id}.png")
                category = "short" if article_type == "Jeans" else "shirt"
                rows.append((product_id, f"images/{product_id}.png", article_type, colour_name, category))
    table = pd.DataFrame(rows, columns=["id", "image", "articleType", "baseColour", "target5"])
    table.to_csv(folder / "catalog.csv", index=False)
    return table


@pytest.fixture
def labelled_world(tmp_path: Path, monkeypatch) -> tuple[DataPaths, Path, pd.DataFrame]:
    paths = DataPaths(root=tmp_path / "data")
    table = _write_catalog(tmp_path / "shop")
    paths.classifier_dir.mkdir(parents=True)
    (paths.classifier_dir / "metadata.json").write_text(json.dumps({"registered_version": 1, "embedding_dim": 4}))
    products = pd.DataFrame(
        {
            "product_id": "real_products:" + table["id"],
            "site": "real_products",  # the configured site of real product photos
            "name": table["articleType"],
            "url": "http://127.0.0.1/" + table["id"],
            "image_url": None,
            "image_path": [str(tmp_path / "shop" / p) for p in table["image"]],
            "price": 10.0,
            "currency": "USD",
            "price_usd": 10.0,
            "category": table["target5"],
            "colour": table["baseColour"],
        }
    )
    paths.products.parent.mkdir(parents=True)
    products.to_parquet(paths.products)
    monkeypatch.setattr(loading, "load_embedder", lambda model_dir: ShapeEmbedder())
    monkeypatch.delenv(real_catalog.REAL_PHOTOS_ENV, raising=False)
    return paths, tmp_path / "shop" / "catalog.csv", table


def _run(paths: DataPaths, selection, tmp_path: Path, config: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        selection,
        resources={
            "paths": DataPathsResource(data_dir=str(paths.root), df2_root=""),
            "mlflow": MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}"),
        },
        run_config={"ops": config or {}},
        raise_on_error=True,
    )


def test_layout_chosen_on_validation_travels_with_the_index_and_is_scored(labelled_world, tmp_path: Path) -> None:
    paths, csv, _ = labelled_world
    settings = {"catalog_csv": str(csv), "train_fraction": 0.4, "validation_fraction": 0.3, "step": 0.5}

    _run(paths, [real_catalog.retrieval_projection], tmp_path, {"retrieval_projection": {"config": settings}})
    stored = layout_store.read_layout_dir(paths.projection_dir)
    # The shape embedding cannot tell colours: the validation split asks for colour parts besides it.
    assert stored.layout.weight("backbone") == 0.5 and stored.layout.weight("backbone") < 1
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("fashion-pipeline").experiment_id])
    assert run.data.params["layout_id"] == stored.layout.layout_id
    assert float(run.data.params["weight_backbone"]) == 0.5

    materialize_retrieval([assets.catalog_embeddings, assets.knn_index], paths.root, sites=["real_products"])
    indexes = knn.load_indexes(paths.index_dir)
    assert {index.layout.layout_id for index in indexes.values()} == {stored.layout.layout_id}
    assert indexes["shirt"].manifest.dimension == stored.layout.dimension
    assert (paths.index_dir / PROJECTION_FILE).is_file() == stored.layout.uses_projection

    evaluation_settings = {k: settings[k] for k in ("catalog_csv", "train_fraction", "validation_fraction")}
    result = _run(
        paths,
        [real_catalog.real_retrieval_evaluation],
        tmp_path,
        {"real_retrieval_evaluation": {"config": evaluation_settings}},
    )
    report = json.loads((paths.evaluation_dir / real_catalog.REPORT_FILE).read_text())
    layout_scores = report["report.layout"]["categories"]
    embedding_scores = report["report.embedding"]["categories"]
    assert layout_scores["shirt"]["same_colour"]["value"] > embedding_scores["shirt"]["same_colour"]["value"] + 0.3
    assert set(report["report_held_out.layout"]["categories"]) == {"shirt", "short"}
    assert "street_to_shop" not in report  # no labelled street photos in this world
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "respects_colour_and_type"
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert "examples" in metadata and "![" in metadata["examples"].value


def test_without_a_labelled_catalog_the_index_gets_the_default_layout(labelled_world, tmp_path: Path) -> None:
    paths, _, _ = labelled_world
    result = _run(paths, [real_catalog.retrieval_projection, real_catalog.real_retrieval_evaluation], tmp_path)

    stored = layout_store.read_layout_dir(paths.projection_dir)
    assert stored.layout == layout_store.default_layout(4)
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and "no labelled catalog" in check.description
