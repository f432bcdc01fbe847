"""`daily_etl`: the preflight, then every asset and their checks, in dependency order;
`preflight`: the checks alone, moving no data."""

import dagster as dg

from etl_assets.assets import PIPELINE, preflight_checks

# Run-level tag the deployment's run coordinator limits to one run at a time.
HUBSPOT_SYNC_TAG = "etl_assets/hubspot_sync"

# Dagster builds only the loggers a run's config names, else its coloured text logger; naming
# `console` selects the JSON stderr logger of etl_assets.logs (see definitions.py).
_LOGGERS: dict[str, dict] = {"console": {}}

daily_etl = dg.define_asset_job(
    name="daily_etl",
    # The company assets always run; with HUBSPOT_COMPANIES off (read when the run starts) they send nothing.
    selection=dg.AssetSelection.assets(*PIPELINE),
    tags={HUBSPOT_SYNC_TAG: "true"},
    description="Preflight (quick) → Kaggle → contacts table → HubSpot contacts (and, if enabled, companies and "
    "their associations), once.",
    # kaggle_dataset depends on preflight_checks (assets/kaggle.py), so a failed preflight stops the run
    # before any data moves; quick: see etl_assets.preflight.
    config={"loggers": _LOGGERS, "ops": {"preflight_checks": {"config": {"quick": True}}}},
)

preflight_job = dg.define_asset_job(
    name="preflight",
    selection=dg.AssetSelection.assets(preflight_checks),
    description="Checks secrets, Kaggle, the database and HubSpot without moving data; fails naming every "
    "check that would fail a run.",
    config={"loggers": _LOGGERS},
)
