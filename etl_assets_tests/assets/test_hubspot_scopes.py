"""A private app without a scope the sync needs: the run names the scope, not a bad token.

The embedded sample dataset (no Kaggle server), MariaDB, and the local HubSpot server answering
HubSpot's real 403 MISSING_SCOPES body for the scopes the app lacks.
"""

import pytest

from etl_assets.hubspot.errors import parse_error
from etl_assets_tests.assets.test_assets import WITHOUT_PREFLIGHT, count, failure_message, run_daily_etl

ALL_SCOPES = {"crm.objects.contacts.write", "crm.schemas.contacts.read", "crm.schemas.contacts.write"}


@pytest.mark.parametrize(
    ("lacking", "refused"),
    [
        ("crm.schemas.contacts.read", "GET /crm/v3/properties/contacts"),  # listing the properties
        ("crm.objects.contacts.write", "POST /crm/v3/objects/contacts/batch/upsert"),  # the first batches
    ],
)
def test_a_missing_scope_is_named_and_nothing_is_marked_synced(hubspot_env, mariadb_url, lacking, refused):
    hubspot_env.scopes = ALL_SCOPES - {lacking}
    result = run_daily_etl(asset_selection=WITHOUT_PREFLIGHT)  # the sync's own message (preflight: test_preflight)
    assert not result.success
    message = failure_message(result)
    assert f"HubSpot's private app lacks the scope(s) ['{lacking}'] (403 MISSING_SCOPES)" in message
    assert "rejected the access token" not in message
    assert count(mariadb_url, "SELECT COUNT(*) FROM hubspot_sync_state WHERE status = 'synced'") == 0
    assert {f"{r.method} {r.path}" for r in hubspot_env.request_log if r.status == 403} == {refused}
    assert not hubspot_env.contacts_snapshot()


def test_all_scopes_granted_syncs(hubspot_env):
    hubspot_env.scopes = set(ALL_SCOPES)
    assert run_daily_etl().success
    assert len(hubspot_env.contacts_snapshot()) == 988


def test_older_missing_scope_bodies_are_read_too():
    body = (
        '{"status":"error","message":"This app hasn\'t been granted all required scopes to make this call.",'
        '"errors":[{"message":"One or more of the following scopes are required.",'
        '"context":{"requiredScopes":["contacts"]}}],"category":"MISSING_SCOPES"}'
    )
    assert parse_error(403, body).missing_scopes == ("contacts",)
    assert parse_error(401, '{"category":"INVALID_AUTHENTICATION","message":"x"}').missing_scopes == ()
