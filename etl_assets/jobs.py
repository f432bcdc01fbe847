"""`daily_etl`: all three assets and their checks, in dependency order."""

import dagster as dg

from etl_assets.assets import contacts_table, hubspot_contacts, kaggle_dataset

# Run-level tag the deployment's run coordinator limits to one run at a time.
HUBSPOT_SYNC_TAG = "etl_assets/hubspot_sync"

daily_etl = dg.define_asset_job(
    name="daily_etl",
    selection=dg.AssetSelection.assets(kaggle_dataset, contacts_table, hubspot_contacts),
    tags={HUBSPOT_SYNC_TAG: "true"},
    description="Kaggle → contacts table → HubSpot, once.",
    # Dagster builds only the loggers a run's config names, else its coloured text logger; naming
    # `console` selects the JSON stderr logger of etl_assets.logs (see definitions.py).
    config={"loggers": {"console": {}}},
)
