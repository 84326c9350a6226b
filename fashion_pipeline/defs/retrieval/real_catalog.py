"""The index's vector layout chosen and scored on a real labelled catalog: retrieval_projection (fit on the train
split, weights chosen on validation) and real_retrieval_evaluation (the report split, and street-to-shop)."""

import os
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from fashion_pipeline.defs.resources import DataPathsResource, MlflowResource
from fashion_pipeline.defs.retrieval import loading
from fashion_pipeline.defs.retrieval.assets import GROUP, knn_index
from fashion_pipeline.lib.common.atomic import write_json
from fashion_pipeline.lib.common.previews import image_md
from fashion_pipeline.lib.retrieval import catalog_metrics as metrics
from fashion_pipeline.lib.retrieval import knn, labelled_catalog, layout_store, projection_fit, real_catalog_eval
from fashion_pipeline.lib.retrieval.layout import (
    BACKBONE,
    DEFAULT_COLOUR_WEIGHT,
    RetrievalEmbedder,
    default_layout,
    legacy_layout,
    project_parts,
)
from fashion_pipeline.lib.training import tracking

REAL_PHOTOS_ENV = "FASHION_REAL_PHOTOS"
DEFAULT_CATALOG = "fashion-product-catalog/catalog.csv"  # under $FASHION_REAL_PHOTOS
REPORT_FILE = "real_retrieval.json"
EXAMPLES_PER_CATEGORY = 2


class LabelledCatalogConfig(dg.Config):
    catalog_csv: str = Field(
        default="",
        description=f"A labelled catalog CSV (images relative to it); empty: ${REAL_PHOTOS_ENV}/{DEFAULT_CATALOG}.",
    )
    id_column: str = "id"
    image_column: str = "image"
    category_column: str = "target5"
    type_column: str = "articleType"
    colour_column: str = "baseColour"
    train_fraction: float = Field(default=0.4, description="Share of products (by id hash) the projections fit on.")
    validation_fraction: float = Field(default=0.3, description="Share on which the layout's weights are chosen.")

    def csv_path(self) -> Path | None:
        """The labelled catalog to use; None when none is configured (no setting and no FASHION_REAL_PHOTOS)."""
        if self.catalog_csv:
            path = Path(os.path.expandvars(self.catalog_csv)).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"catalog_csv={self.catalog_csv!r}: {path} does not exist")
            return path
        root = os.environ.get(REAL_PHOTOS_ENV)
        return (Path(root) / DEFAULT_CATALOG).resolve() if root and (Path(root) / DEFAULT_CATALOG).is_file() else None

    def read(self, data, embedder) -> tuple[pd.DataFrame, dict, np.ndarray, np.ndarray, dict]:
        """(products, features, usable rows, split per product, skipped by reason) of the labelled catalog."""
        columns = labelled_catalog.CatalogColumns(
            self.id_column, self.image_column, self.category_column, self.type_column, self.colour_column
        )
        table, skipped = labelled_catalog.read_labelled_catalog(self.csv_path(), columns)
        features, failed = labelled_catalog.catalog_features(table, embedder, data.labelled_catalog_features)
        usable = ~table["product_id"].isin(failed).to_numpy()
        splits = metrics.split_of(table["product_id"], self.train_fraction, self.validation_fraction)
        return table, features, usable, splits, {**skipped, "unreadable_image": len(failed)}


class ProjectionConfig(LabelledCatalogConfig):
    step: float = Field(default=0.1, description="Weight grid step of the layout search.")
    type_tolerance: float = Field(default=0.0, description="Same-type@10 a layout may lose against the embedding.")
    min_backbone_weight: float = Field(default=0.1, description="The embedding's least share of the cosine.")
    colour_weight_without_catalog: float = Field(
        default=DEFAULT_COLOUR_WEIGHT, description="The colour descriptor's weight when no labelled catalog is set."
    )


def _table_md(scores: dict[str, dict], title: str) -> str:
    lines = [
        f"**{title}**",
        "",
        "| category | queries | same type@10 (random) | same colour@10 (random) |",
        "|---|---|---|---|",
    ]
    for category, s in scores.items():
        t, c = s["same_type"], s["same_colour"]
        lines.append(
            f"| {category} | {s['products']} | {t['value']:.3f} ({t['chance']:.3f}) | {c['value']:.3f} ({c['chance']:.3f}) |"
        )
    return "\n".join(lines)


@dg.asset(
    group_name=GROUP,
    pool="retrieval",
    kinds={"scikitlearn", "mlflow"},
    deps=[dg.AssetKey("garment_classifier")],
    automation_condition=dg.AutomationCondition.eager(),
)
def retrieval_projection(
    config: ProjectionConfig, paths: DataPathsResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """The index's vector layout: projections fitted on a labelled catalog's train split, weights chosen on validation."""
    data = paths.get()
    embedder = loading.load_embedder(data.classifier_dir)
    version = int(embedder.version)
    if config.csv_path() is None:
        layout = default_layout(int(embedder.embedding_dim), config.colour_weight_without_catalog)
        note = f"no labelled catalog (set {REAL_PHOTOS_ENV} or catalog_csv): embedding + colour descriptor"
        layout_store.write_layout_dir(data.projection_dir, layout, None, version, note)
        return dg.MaterializeResult(metadata={"layout": layout.describe(), "chosen_by": note})
    table, features, usable, splits, skipped = config.read(data, embedder)
    settings = projection_fit.SelectionSettings(
        step=config.step, type_tolerance=config.type_tolerance, min_backbone_weight=config.min_backbone_weight
    )
    fitted = projection_fit.fit_layout(table, features, usable, splits, settings)
    chosen, baseline = fitted.selection.chosen, fitted.selection.baseline
    note = f"chosen on the validation split of {config.csv_path()}"
    selection = {
        "chosen": chosen.to_json(),
        "embedding_alone": baseline.to_json(),
        "candidates": [c.to_json() for c in fitted.selection.candidates],
        "rule": projection_fit.__doc__.split("\n\n")[1] if projection_fit.__doc__ else "",
    }
    layout_store.write_layout_dir(data.projection_dir, fitted.layout, fitted.projection, version, note, selection)
    params = {
        "catalog": str(config.csv_path()),
        "model_version": version,
        "train_fraction": config.train_fraction,
        "validation_fraction": config.validation_fraction,
        "weight_step": config.step,
        "type_tolerance": config.type_tolerance,
        "min_backbone_weight": config.min_backbone_weight,
        "layout_id": fitted.layout.layout_id,
        "layout": fitted.layout.describe()[:250],
        **{f"weight_{part}": chosen.weights.get(part, 0.0) for part in ("backbone", "type", "colour_class", "colour")},
    }
    target = tracking.TrackingTarget(mlflow.tracking_uri, mlflow.experiment_name)
    with tracking.training_run(target, run_name="retrieval-projection", tags={"stage": "retrieval"}) as run:
        import mlflow as mlflow_lib

        mlflow_lib.log_params(params)
        for name, candidate in (("chosen", chosen), ("embedding", baseline)):
            mlflow_lib.log_metrics({f"validation.{name}.same_type.{c}": v for c, v in candidate.same_type.items()})
            mlflow_lib.log_metrics({f"validation.{name}.same_colour.{c}": v for c, v in candidate.same_colour.items()})
            mlflow_lib.log_metrics({f"validation.{name}.colour_macro": candidate.colour_macro})
        mlflow_lib.log_dict(selection, "selection.json")
        run_url = target.run_url(run.info.experiment_id, run.info.run_id)
    rows = "\n".join(
        f"| {c} | {baseline.same_type[c]:.3f} / {chosen.same_type[c]:.3f} | {baseline.same_colour[c]:.3f} / {chosen.same_colour[c]:.3f} |"
        for c in chosen.same_type
    )
    return dg.MaterializeResult(
        metadata={
            "layout": f"{fitted.layout.layout_id}: {fitted.layout.describe()}",
            "weights": dg.MetadataValue.json(chosen.weights),
            "validation": dg.MetadataValue.md(
                "| category | same type@10 embedding / layout | same colour@10 embedding / layout |\n|---|---|---|\n"
                + rows
            ),
            "products": int(usable.sum()),
            "skipped": dg.MetadataValue.json({k: int(v) for k, v in skipped.items()}),
            "mlflow_run": dg.MetadataValue.url(run_url),
            "path": dg.MetadataValue.path(str(data.projection_dir)),
        }
    )


class RealEvaluationConfig(LabelledCatalogConfig):
    min_colour_macro: float = Field(default=0.55, description="Warn below this same-colour@10 macro (report split).")
    min_same_type: float = Field(default=0.80, description="Warn below this same-type@10 in shirt and short.")
    detection_conf: float = Field(default=0.25, description="Detector score threshold for the filtered street search.")


def _street_rows(data) -> pd.DataFrame:
    if not data.labelled_photos.is_file():
        return pd.DataFrame()
    photos = pd.read_parquet(data.labelled_photos)
    return photos[(photos["split"] == "test") & (photos["task"] == "detector")]


@dg.asset(
    group_name=GROUP,
    pool="retrieval",
    kinds={"mlflow"},
    deps=[knn_index, retrieval_projection, dg.AssetKey("labelled_photos"), dg.AssetKey("garment_detector")],
    check_specs=[
        dg.AssetCheckSpec(
            "respects_colour_and_type",
            asset="real_retrieval_evaluation",
            description=(
                "Warns when, on the labelled catalog's report split, same-colour@10 (macro over shirt, short, "
                "outwear) or same-type@10 (shirt, short) is below the config's thresholds, or when no labelled "
                "catalog is set. The app still serves: rematerialize retrieval_projection (more labelled products) "
                "before lowering a threshold."
            ),
        )
    ],
)
def real_retrieval_evaluation(
    config: RealEvaluationConfig, paths: DataPathsResource, mlflow: MlflowResource
) -> dg.MaterializeResult:
    """The index's layout scored on a real labelled catalog's report split, and street-to-shop category precision."""
    data = paths.get()
    if config.csv_path() is None:
        why = f"no labelled catalog: set {REAL_PHOTOS_ENV} or catalog_csv"
        return dg.MaterializeResult(
            metadata={"measured": False},
            check_results=[
                dg.AssetCheckResult(
                    check_name="respects_colour_and_type",
                    passed=False,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=why,
                )
            ],
        )
    indexes = knn.load_indexes(data.index_dir)
    embedder = loading.index_embedder(data, indexes)
    layout = embedder.layout
    table, features, usable, splits, skipped = config.read(data, embedder.backbone)
    vectors = layout.vectors(project_parts(features, layout, embedder.projection))  # as RetrievalEmbedder.embed
    type_categories, colour_categories = ("shirt", "short"), ("shirt", "short", "outwear")
    categories = sorted(set(table["category"]))
    report = {"layout": layout.to_json(), "layout_description": layout.describe(), "skipped": skipped}
    for protocol in ("report", "report_held_out"):
        for name, matrix in (("layout", vectors), ("embedding", features[BACKBONE])):
            scores = labelled_catalog.score_vectors(table, matrix, usable, splits, protocol, categories)
            report[f"{protocol}.{name}"] = {
                "categories": labelled_catalog.scores_json(scores),
                "colour_macro": round(metrics.macro(scores, "same_colour", colour_categories), 4),
            }
    detector = loading.load_detector(data.detector_dir) if (data.detector_dir / "metadata.json").is_file() else None
    street_rows = _street_rows(data)
    street = None
    if len(street_rows):
        catalog_categories = table["category"].to_numpy()[usable]
        street = real_catalog_eval.street_to_shop(
            street_rows, embedder, vectors[usable], catalog_categories, detector, config.detection_conf
        )
        report["street_to_shop"] = street.to_json()
        # The same crops with the embedding alone (the index before layouts), over the same catalog.
        alone = RetrievalEmbedder(embedder.backbone, legacy_layout(layout.backbone_dim))
        plain = real_catalog_eval.street_to_shop(street_rows, alone, features[BACKBONE][usable], catalog_categories)
        report["street_to_shop_embedding_alone"] = plain.to_json()
    headline = report["report.layout"]
    colour_macro = headline["colour_macro"]
    low_type = {
        c: headline["categories"][c]["same_type"]["value"] for c in type_categories if c in headline["categories"]
    }
    problems = (
        [f"same-colour@10 macro {colour_macro:.3f} < {config.min_colour_macro}"]
        if colour_macro < config.min_colour_macro
        else []
    )
    problems += [
        f"{c} same-type@10 {v:.3f} < {config.min_same_type}" for c, v in low_type.items() if v < config.min_same_type
    ]
    write_json(report, data.evaluation_dir / REPORT_FILE)
    grid = _examples(table, vectors, usable, splits)
    run_url = _log(mlflow, report, grid, layout, config, embedder)
    metadata = {
        "report": dg.MetadataValue.md(
            _table_md(headline["categories"], "report split, whole catalog searched (the app)")
        ),
        "report_held_out": dg.MetadataValue.md(
            _table_md(
                report["report_held_out.layout"]["categories"],
                "report split, gallery without the projection's train products",
            )
        ),
        "embedding_alone": dg.MetadataValue.md(
            _table_md(report["report.embedding"]["categories"], "the embedding alone, report split")
        ),
        "colour_macro": colour_macro,
        "layout": f"{layout.layout_id}: {layout.describe()}",
        "examples": dg.MetadataValue.md(image_md(grid, "report-split queries (first column) and their top 5")),
        "mlflow_run": dg.MetadataValue.url(run_url),
    }
    if street is not None:
        metadata["street_to_shop"] = dg.MetadataValue.json(street.to_json())
        metadata["street_to_shop_embedding_alone"] = dg.MetadataValue.json(report["street_to_shop_embedding_alone"])
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="respects_colour_and_type",
                passed=not problems,
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(problems) or "colour and type at or above the thresholds",
                metadata={"colour_macro": colour_macro, **{f"same_type_{c}": round(v, 4) for c, v in low_type.items()}},
            )
        ],
    )


def _examples(table: pd.DataFrame, vectors: np.ndarray, usable: np.ndarray, splits: np.ndarray):
    queries = []
    for category in ("shirt", "short", "outwear"):
        rows = np.flatnonzero(usable & (splits == metrics.REPORT) & (table["category"].to_numpy() == category))
        queries += rows[:: max(1, len(rows) // EXAMPLES_PER_CATEGORY)][:EXAMPLES_PER_CATEGORY].tolist()
    return real_catalog_eval.example_grid(table, vectors, queries, usable)


def _log(mlflow: MlflowResource, report: dict, grid, layout, config: RealEvaluationConfig, embedder) -> str:
    import mlflow as mlflow_lib

    target = tracking.TrackingTarget(mlflow.tracking_uri, mlflow.experiment_name)
    with tracking.training_run(target, run_name="real-retrieval-evaluation", tags={"stage": "retrieval"}) as run:
        mlflow_lib.log_params(
            {
                "catalog": str(config.csv_path()),
                "model_version": int(embedder.version),
                "layout_id": layout.layout_id,
                "layout": layout.describe()[:250],
                "train_fraction": config.train_fraction,
                "validation_fraction": config.validation_fraction,
                "k": metrics.K,
            }
        )
        flat = {}
        for key, value in report.items():
            if isinstance(value, dict) and "categories" in value:
                flat[f"{key}.colour_macro"] = value["colour_macro"]
                for category, scores in value["categories"].items():
                    for metric in ("same_type", "same_colour"):
                        flat[f"{key}.{category}.{metric}"] = scores[metric]["value"]
                        flat[f"{key}.{category}.{metric}_random"] = scores[metric]["chance"]
        for key, prefix in (("street_to_shop", "street"), ("street_to_shop_embedding_alone", "street_embedding")):
            street = report.get(key) or {}
            for name in ("whole_catalog", "detected_category"):
                if street.get(name):
                    flat[f"{prefix}.{name}.macro"] = street[name]["macro"]
                    flat[f"{prefix}.{name}.prior"] = street[name]["macro_prior"]
        mlflow_lib.log_metrics({k: float(v) for k, v in flat.items() if v == v})
        mlflow_lib.log_dict(report, REPORT_FILE)
        mlflow_lib.log_image(grid, artifact_file="examples/report_queries_top5.png")
        return target.run_url(run.info.experiment_id, run.info.run_id)
