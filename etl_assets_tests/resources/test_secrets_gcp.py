"""SecretsResource with ETL_SECRETS_BACKEND=gcp, against a local Secret Manager (servers/gcp_secrets_server.py).

The product's real client (google-cloud-secret-manager, REST transport) talks to the server through
ETL_GCP_SECRETS_ENDPOINT, as it talks to Google; a plain-http endpoint gets anonymous credentials.
The fixtures here are imported by the leak test too. The last test runs the whole daily_etl job with
the HubSpot token in Secret Manager, rotated (a new version) between two runs.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from etl_assets.errors import PermanentError, TransientError
from etl_assets.logs.redaction import redact
from etl_assets.resources.secrets import SecretsResource
from etl_assets_tests.resources.test_secrets import assert_names_without_value, tokens_of_two_runs
from etl_assets_tests.servers.gcp_secrets_server import GcpSecretsServer

VALUES = {
    "HUBSPOT_ACCESS_TOKEN": "gcp-token-2a7f",
    "KAGGLE_KEY": "gcp-kaggle-91d0",
    "ETL_DATABASE_PASSWORD": "gcp-dbpass-c4e8",
}


@pytest.fixture
def gcp_secrets_server():
    with GcpSecretsServer() as server:
        yield server


@pytest.fixture
def gcp_env(gcp_secrets_server, monkeypatch) -> GcpSecretsServer:
    """The gcp backend pointed at the local server, a project of its own, nothing from the shell's Google setup."""
    for name in list(os.environ):
        if name.startswith("ETL_GCP_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "gcp")
    monkeypatch.setenv("ETL_GCP_PROJECT", f"etl-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("ETL_GCP_SECRETS_ENDPOINT", gcp_secrets_server.url)
    return gcp_secrets_server


def project() -> str:
    return os.environ["ETL_GCP_PROJECT"]


def one_json_secret(server: GcpSecretsServer, monkeypatch, values: dict[str, str] = VALUES) -> str:
    monkeypatch.setenv("ETL_GCP_SECRET_ID", "etl-assets")
    server.add_version(project(), "etl-assets", json.dumps(values))
    return f"projects/{project()}/secrets/etl-assets"


# reading


def test_one_secret_per_key_with_a_prefix(gcp_env, monkeypatch):
    monkeypatch.setenv("ETL_GCP_SECRET_PREFIX", "etl-")
    gcp_env.add_version(project(), "etl-HUBSPOT_ACCESS_TOKEN", VALUES["HUBSPOT_ACCESS_TOKEN"] + "\n")  # --data-file
    secrets = SecretsResource()
    assert secrets.get("HUBSPOT_ACCESS_TOKEN") == VALUES["HUBSPOT_ACCESS_TOKEN"]
    assert secrets.get("KAGGLE_KEY") is None  # 404: the key is not set
    with pytest.raises(PermanentError) as caught:
        secrets.get("KAGGLE_KEY", required=True)
    assert_names_without_value(
        caught.value,
        "KAGGLE_KEY",
        "gcp secrets backend",
        f"projects/{project()}/secrets/etl-KAGGLE_KEY",
        values=tuple(VALUES.values()),
    )
    assert redact(VALUES["HUBSPOT_ACCESS_TOKEN"]) == "***"
    # The real client, anonymous on plain http: no credential was sent.
    assert [(r.path, r.authorized) for r in gcp_env.requests][0] == (
        f"/v1/projects/{project()}/secrets/etl-HUBSPOT_ACCESS_TOKEN/versions/latest:access",
        False,
    )


def test_one_json_secret_holds_every_key(gcp_env, monkeypatch):
    name = one_json_secret(gcp_env, monkeypatch)
    secrets = SecretsResource()
    assert {key: secrets.get(key) for key in VALUES} == VALUES
    assert secrets.get("KAGGLE_API_TOKEN") is None
    assert len(gcp_env.requests) == 1  # one read for every key
    with pytest.raises(PermanentError) as caught:
        secrets.get("KAGGLE_API_TOKEN", required=True)
    assert_names_without_value(caught.value, "KAGGLE_API_TOKEN", name, values=tuple(VALUES.values()))
    assert redact(" ".join(VALUES.values())) == "*** *** ***"  # every value masked, used or not


def test_a_json_secret_that_is_not_json_fails_without_quoting_it(gcp_env, monkeypatch):
    monkeypatch.setenv("ETL_GCP_SECRET_ID", "etl-assets")
    gcp_env.add_version(project(), "etl-assets", "plain-text-gcp-secret")
    with pytest.raises(PermanentError) as caught:
        SecretsResource().get("KAGGLE_KEY")
    assert_names_without_value(caught.value, "etl-assets", "not a JSON object", values=("plain-text-gcp-secret",))


def test_a_missing_json_secret_fails_even_when_the_key_is_optional(gcp_env, monkeypatch):
    monkeypatch.setenv("ETL_GCP_SECRET_ID", "no-such-secret")
    with pytest.raises(PermanentError) as caught:
        SecretsResource().get("KAGGLE_KEY")
    assert_names_without_value(
        caught.value, f"projects/{project()}/secrets/no-such-secret", "not found", "ETL_GCP_SECRET_ID"
    )


# errors, each naming the secret, never a value


def test_permission_denied_names_the_secret_and_the_permission(gcp_env, monkeypatch):
    name = one_json_secret(gcp_env, monkeypatch)
    gcp_env.deny(project(), "etl-assets")
    with pytest.raises(PermanentError) as caught:
        SecretsResource().get("HUBSPOT_ACCESS_TOKEN")
    assert_names_without_value(
        caught.value,
        name,
        "permission denied",
        "PERMISSION_DENIED",
        "secretmanager.versions.access",
        values=tuple(VALUES.values()),
    )


@pytest.mark.parametrize("state", ["DISABLED", "DESTROYED"])
def test_a_disabled_or_destroyed_latest_version_is_named(gcp_env, monkeypatch, state):
    name = one_json_secret(gcp_env, monkeypatch)
    version = gcp_env.add_version(project(), "etl-assets", json.dumps({"HUBSPOT_ACCESS_TOKEN": "gcp-newer-9999"}))
    gcp_env.set_state(project(), "etl-assets", version, state)
    with pytest.raises(PermanentError) as caught:  # `latest` is the newest version, whatever its state
        SecretsResource().get("HUBSPOT_ACCESS_TOKEN")
    assert_names_without_value(
        caught.value,
        "FAILED_PRECONDITION",
        f"{name}/versions/2",
        f"in {state} state",
        values=(*VALUES.values(), "gcp-newer-9999"),
    )


def test_a_payload_that_does_not_match_its_crc32c_is_refused(gcp_env, monkeypatch):
    name = one_json_secret(gcp_env, monkeypatch)
    gcp_env.corrupt_crc = True
    with pytest.raises(PermanentError) as caught:
        SecretsResource().get("HUBSPOT_ACCESS_TOKEN")
    assert_names_without_value(caught.value, name, "CRC32C", "version 1 not used", values=tuple(VALUES.values()))
    gcp_env.corrupt_crc = False
    assert SecretsResource().get("HUBSPOT_ACCESS_TOKEN") == VALUES["HUBSPOT_ACCESS_TOKEN"]


def test_an_unreachable_endpoint_is_transient(gcp_env, monkeypatch):
    monkeypatch.setenv("ETL_GCP_SECRETS_ENDPOINT", "http://127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("ETL_GCP_SECRET_PREFIX", "etl-")
    with pytest.raises(TransientError, match=r"etl-KAGGLE_KEY.*gcp secrets backend.*unreachable"):
        SecretsResource().get("KAGGLE_KEY")


def test_the_project_is_required_and_the_two_layouts_exclude_each_other(gcp_env, monkeypatch):
    monkeypatch.delenv("ETL_GCP_PROJECT")
    with pytest.raises(PermanentError, match="ETL_GCP_PROJECT is not set"):
        SecretsResource().get("KAGGLE_KEY")
    monkeypatch.setenv("ETL_GCP_PROJECT", "p")
    monkeypatch.setenv("ETL_GCP_SECRET_ID", "etl-assets")
    monkeypatch.setenv("ETL_GCP_SECRET_PREFIX", "etl-")
    with pytest.raises(PermanentError, match="not both"):
        SecretsResource().get("KAGGLE_KEY")


# rotation


def test_a_new_version_reaches_a_fresh_read_and_the_next_run(gcp_env, monkeypatch):
    monkeypatch.setenv("ETL_GCP_SECRET_PREFIX", "etl-")
    gcp_env.add_version(project(), "etl-HUBSPOT_ACCESS_TOKEN", "gcp-run-1")
    assert tokens_of_two_runs(lambda: gcp_env.add_version(project(), "etl-HUBSPOT_ACCESS_TOKEN", "gcp-run-2")) == [
        "gcp-run-1",
        "gcp-run-2",
    ]

    cached = SecretsResource(cache_seconds=3600)
    assert cached.get("HUBSPOT_ACCESS_TOKEN") == "gcp-run-2"
    gcp_env.add_version(project(), "etl-HUBSPOT_ACCESS_TOKEN", "gcp-after-rotation-6d0b")
    assert cached.get("HUBSPOT_ACCESS_TOKEN") == "gcp-run-2"  # within its cache window
    assert cached.get("HUBSPOT_ACCESS_TOKEN", fresh=True) == "gcp-after-rotation-6d0b"
    assert redact("gcp-after-rotation-6d0b") == "***"


# the whole job


def test_daily_etl_takes_the_hubspot_token_from_secret_manager_and_the_rotated_one_next_run(
    hubspot_env, gcp_env, mariadb_url, monkeypatch
):
    from etl_assets_tests.assets.test_assets import materialization, run_daily_etl
    from etl_assets_tests.resources.test_secrets_vault import forget_synced

    hubspot_server = hubspot_env
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN")  # hubspot_env's; the token lives in Secret Manager only
    one_json_secret(gcp_env, monkeypatch, {"HUBSPOT_ACCESS_TOKEN": hubspot_server.token})

    first = run_daily_etl()
    assert first.success
    assert materialization(first, "hubspot_contacts")["mode"] == "live"
    assert hubspot_server.contacts_snapshot() and hubspot_server.count_status(401) == 0

    # "Rotate and expire now" in HubSpot, then `gcloud secrets versions add`: the next run reads the new
    # version (no 401 to recover from: not the fresh re-read).
    hubspot_server.rotate_token("gcp-rotated-token-8c3a")
    gcp_env.add_version(project(), "etl-assets", json.dumps({"HUBSPOT_ACCESS_TOKEN": "gcp-rotated-token-8c3a"}))
    forget_synced(mariadb_url, 3)
    hubspot_server.reset_log()
    second = run_daily_etl()
    assert second.success
    assert materialization(second, "hubspot_contacts")["updated"] == 3
    assert hubspot_server.count_requests() > 0 and hubspot_server.count_status(401) == 0


def test_credentials_are_application_default_credentials_only(gcp_env, monkeypatch, tmp_path):
    """Google's own endpoint (no ETL_GCP_SECRETS_ENDPOINT) and no ADC anywhere: the run fails saying so."""
    monkeypatch.delenv("ETL_GCP_SECRETS_ENDPOINT")
    monkeypatch.setenv("ETL_GCP_SECRET_PREFIX", "etl-")
    monkeypatch.setenv("HOME", str(tmp_path))  # no gcloud ADC file
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    # Not on GCE: google-auth reads NO_GCE_CHECK when first imported, maybe earlier in this process.
    from google.auth.compute_engine import _metadata

    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)
    with pytest.raises(PermanentError, match="no Google Application Default Credentials"):
        SecretsResource().get("KAGGLE_KEY")
    assert not gcp_env.requests
