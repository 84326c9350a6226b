"""What the Dagster UI tells a user: every asset check and sensor has a description that is more than a name."""

from __future__ import annotations

from fashion_pipeline.definitions import defs

# Enough for what a check protects and what to do when it fails; a bare restatement of the name is shorter.
MIN_WORDS = 12


def test_every_asset_check_says_what_it_protects_and_what_to_do():
    graph = defs.resolve_asset_graph()
    checks = [graph.get_check_spec(key) for key in graph.asset_check_keys]
    assert len(checks) >= 15
    thin = [
        f"{c.asset_key.to_user_string()}/{c.name}" for c in checks if len((c.description or "").split()) < MIN_WORDS
    ]
    assert thin == []


def test_every_sensor_says_what_it_does():
    # Dagster adds a `default_automation_condition_sensor` (stopped, undescribed) when an asset with an
    # automation condition is outside catalog_automation's target: such an asset belongs in that target.
    sensors = defs.get_repository_def().sensor_defs
    assert {"catalog_automation", "report_failed_runs"} <= {s.name for s in sensors}
    assert [s.name for s in sensors if len((s.description or "").split()) < MIN_WORDS] == []


def test_catalog_raw_explains_its_garment_items_input_and_the_partitions_that_need_the_network():
    (spec,) = defs.resolve_assets_def("catalog_raw").specs
    description = spec.description
    assert "garment_items" in description and "need the network" in description
    assert "--partition amazon" in description
