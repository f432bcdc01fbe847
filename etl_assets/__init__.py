"""etl_assets: Kaggle → MySQL → HubSpot contacts as Dagster software-defined assets."""

from etl_assets.definitions import defs

__all__ = ["defs"]
