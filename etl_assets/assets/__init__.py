from etl_assets.assets.companies import hubspot_companies, hubspot_contact_companies
from etl_assets.assets.contacts import contacts_table
from etl_assets.assets.hubspot import hubspot_contacts
from etl_assets.assets.kaggle import kaggle_dataset
from etl_assets.assets.preflight import preflight_checks

# Every asset, upstream first: the code location's and the daily job's.
PIPELINE = [
    preflight_checks,
    kaggle_dataset,
    contacts_table,
    hubspot_contacts,
    hubspot_companies,
    hubspot_contact_companies,
]

__all__ = [
    "PIPELINE",
    "preflight_checks",
    "kaggle_dataset",
    "contacts_table",
    "hubspot_contacts",
    "hubspot_companies",
    "hubspot_contact_companies",
]
