from etl_assets.assets.contacts import contacts_table
from etl_assets.assets.hubspot import hubspot_contacts
from etl_assets.assets.kaggle import kaggle_dataset

__all__ = ["kaggle_dataset", "contacts_table", "hubspot_contacts"]
