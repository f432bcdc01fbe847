"""Companies and contact-to-company associations through `hubspot-api-client`, on the contacts' client.

Every call goes through `HubSpotApi.call`: the same limiter (so the account's rate window is
shared), retries, token re-read on 401 and error parsing as contact upserts.

Why create + update by id, not upsert: the companies batch upsert takes an `idProperty` whose
values are unique in the account (`hasUniqueValue`), and no standard company property is
(`domain` is not unique by default; HubSpot itself allows two companies with one domain). So new
companies are created (`batch/create`), their ids kept in `hubspot_company_state`, and changed
ones updated by those ids (`batch/update`).

Associations use HubSpot's unlabeled contact-to-company type (HUBSPOT_DEFINED 279, as HubSpot's
association docs give it) through `batch/create`, and `batch/archive` to remove a pair. Archive
removes every association between the pair, labels too (HubSpot: "deleting an unlabeled
association will also delete all labeled associations between those two objects", the same through
`batch/labels/archive`), so the sync archives only pairs it created itself.
"""

from __future__ import annotations

from hubspot.crm.associations.v4 import (
    AssociationSpec,
    BatchInputPublicAssociationMultiArchive,
    BatchInputPublicAssociationMultiPost,
    PublicAssociationMultiArchive,
    PublicAssociationMultiPost,
)
from hubspot.crm.associations.v4 import PublicObjectId as AssociationObjectId
from hubspot.crm.companies import (
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputForCreate,
)

from etl_assets.hubspot.client import HubSpotApi
from etl_assets.hubspot.sync import UpsertAnswer

CONTACT_TO_COMPANY = ("HUBSPOT_DEFINED", 279)  # HubSpot's unlabeled contact -> company association type
COMPANIES_PATH = "/crm/v3/objects/companies"
CREATE_PATH = f"{COMPANIES_PATH}/batch/create"
UPDATE_PATH = f"{COMPANIES_PATH}/batch/update"
ASSOCIATIONS_PATH = "/crm/v4/associations/contacts/companies"
ASSOCIATE_PATH = f"{ASSOCIATIONS_PATH}/batch/create"
ARCHIVE_PATH = f"{ASSOCIATIONS_PATH}/batch/archive"


class CrmObjectsApi:
    def __init__(self, api: HubSpotApi):
        self.api = api

    def create_companies(self, inputs: list[tuple[str, dict[str, str]]]) -> UpsertAnswer:
        """(objectWriteTraceId, properties) each: HubSpot answers a bad input alone, in a 207, by its trace id."""
        body = BatchInputSimplePublicObjectBatchInputForCreate(
            inputs=[
                SimplePublicObjectBatchInputForCreate(
                    object_write_trace_id=trace, properties=properties, associations=[]
                )
                for trace, properties in inputs
            ]
        )
        return self.api.batch(
            f"creating {len(inputs)} companies",
            lambda client, **raw: client.crm.companies.batch_api.create_with_http_info(
                batch_input_simple_public_object_batch_input_for_create=body, _request_timeout=self.api.timeout_s, **raw
            ),
        )

    def update_companies(self, inputs: list[tuple[str, dict[str, str]]]) -> UpsertAnswer:
        """(HubSpot company id, properties) each."""
        body = BatchInputSimplePublicObjectBatchInput(
            inputs=[
                SimplePublicObjectBatchInput(id=company_id, properties=properties) for company_id, properties in inputs
            ]
        )
        return self.api.batch(
            f"updating {len(inputs)} companies",
            lambda client, **raw: client.crm.companies.batch_api.update_with_http_info(
                batch_input_simple_public_object_batch_input=body, _request_timeout=self.api.timeout_s, **raw
            ),
        )

    def associate(self, pairs: list[tuple[str, str]]) -> UpsertAnswer:
        """(contact id, company id) each, with the unlabeled contact -> company type."""
        category, type_id = CONTACT_TO_COMPANY
        body = BatchInputPublicAssociationMultiPost(
            inputs=[
                PublicAssociationMultiPost(
                    types=[AssociationSpec(association_category=category, association_type_id=type_id)],
                    _from=AssociationObjectId(id=contact_id),
                    to=AssociationObjectId(id=company_id),
                )
                for contact_id, company_id in pairs
            ]
        )
        return self.api.batch(
            f"associating {len(pairs)} contacts with companies",
            lambda client, **raw: client.crm.associations.v4.batch_api.create_with_http_info(
                "contacts",
                "companies",
                batch_input_public_association_multi_post=body,
                _request_timeout=self.api.timeout_s,
                **raw,
            ),
        )

    def dissociate(self, pairs: list[tuple[str, str]]) -> None:
        """Remove each (contact id, company id) pair's association (HubSpot answers 204, no body)."""
        body = BatchInputPublicAssociationMultiArchive(
            inputs=[
                PublicAssociationMultiArchive(
                    _from=AssociationObjectId(id=contact_id), to=[AssociationObjectId(id=company_id)]
                )
                for contact_id, company_id in pairs
            ]
        )
        self.api.call(
            f"removing {len(pairs)} contact-company associations",
            lambda client: client.crm.associations.v4.batch_api.archive_with_http_info(
                "contacts",
                "companies",
                batch_input_public_association_multi_archive=body,
                _request_timeout=self.api.timeout_s,
            ),
        )
