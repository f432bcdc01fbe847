"""SecretsResource with ETL_SECRETS_BACKEND=vault, against a real OpenBao server (`bao server -dev`).

Secrets, policies and the AppRole are set up with the real `bao` CLI (see openbao.py); the product
reads through hvac as it would from Vault. One server serves the module; each test uses a KV path
of its own under secret/etl/. The last tests run the whole daily_etl job with the HubSpot token in
OpenBao, rotated between two runs.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from etl_assets.errors import PermanentError, TransientError
from etl_assets.logs.redaction import redact
from etl_assets.resources.secrets import SecretsResource
from etl_assets_tests.resources.openbao import (  # noqa: F401 (fixtures)
    DENY_POLICY,
    READ_POLICY,
    approle_credentials,
    openbao,
    start_configured,
    vault_env,
)
from etl_assets_tests.resources.test_secrets import assert_names_without_value, tokens_of_two_runs

VALUES = {
    "HUBSPOT_ACCESS_TOKEN": "vault-token-71ce",
    "KAGGLE_KEY": "vault-kaggle-0b9d",
    "ETL_DATABASE_PASSWORD": "vault-dbpass-44f2",
}


def _stored(server, monkeypatch, values: dict[str, str] = VALUES) -> str:
    """A new KV secret holding `values`, and ETL_VAULT_PATH pointing at it."""
    path = server.unique_path()
    server.put(path, values)
    monkeypatch.setenv("ETL_VAULT_PATH", path)
    return path


def _with_token(server, monkeypatch, *policies: str) -> str:
    token = server.token(*policies)
    monkeypatch.setenv("VAULT_TOKEN", token)
    return token


# authentication


def test_token_reads_every_key_of_one_kv_secret(vault_env, monkeypatch):
    path = _stored(vault_env, monkeypatch)
    token = _with_token(vault_env, monkeypatch, READ_POLICY)
    secrets = SecretsResource()
    assert {name: secrets.get(name) for name in VALUES} == VALUES
    assert secrets.get("KAGGLE_API_TOKEN") is None
    with pytest.raises(PermanentError) as caught:
        secrets.get("KAGGLE_API_TOKEN", required=True)
    assert_names_without_value(
        caught.value,
        "KAGGLE_API_TOKEN",
        "vault secrets backend",
        "'secret'",
        repr(path),
        values=(*VALUES.values(), token),
    )
    # Every value of the KV secret is masked in logs from now on, used or not; the token too.
    assert redact(f"{VALUES['KAGGLE_KEY']} {token}") == "*** ***"


def test_token_from_a_file(vault_env, monkeypatch, tmp_path):
    _stored(vault_env, monkeypatch)
    token_file = tmp_path / "vault-token"
    token_file.write_text(vault_env.token(READ_POLICY) + "\n")  # as Vault Agent's sink or `echo` writes it
    monkeypatch.setenv("VAULT_TOKEN_FILE", str(token_file))
    assert SecretsResource().get("HUBSPOT_ACCESS_TOKEN") == VALUES["HUBSPOT_ACCESS_TOKEN"]


def test_a_token_file_is_read_again_when_its_token_is_refused(vault_env, monkeypatch, tmp_path):
    """Vault Agent renews the token into the file; a 403 for the old token makes the next read take the new one."""
    _stored(vault_env, monkeypatch)
    token_file = tmp_path / "vault-token"
    old_token = vault_env.token(READ_POLICY)
    token_file.write_text(old_token)
    monkeypatch.setenv("VAULT_TOKEN_FILE", str(token_file))
    secrets = SecretsResource()
    assert secrets.get("KAGGLE_KEY") == VALUES["KAGGLE_KEY"]
    vault_env.bao("token", "revoke", old_token)
    token_file.write_text(vault_env.token(READ_POLICY))
    assert secrets.get("KAGGLE_KEY", fresh=True) == VALUES["KAGGLE_KEY"]


def test_approle_with_the_secret_id_from_a_file(vault_env, monkeypatch, tmp_path):
    _stored(vault_env, monkeypatch)
    role_id, secret_id_file = approle_credentials(vault_env, tmp_path)
    monkeypatch.setenv("VAULT_ROLE_ID", role_id)
    monkeypatch.setenv("VAULT_SECRET_ID_FILE", str(secret_id_file))
    assert SecretsResource().get("ETL_DATABASE_PASSWORD", required=True) == VALUES["ETL_DATABASE_PASSWORD"]
    assert redact(secret_id_file.read_text().strip()) == "***"


def test_a_wrong_secret_id_fails_naming_the_approle_login(vault_env, monkeypatch, tmp_path):
    _stored(vault_env, monkeypatch)
    role_id, secret_id_file = approle_credentials(vault_env, tmp_path)
    secret_id_file.write_text("00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("VAULT_ROLE_ID", role_id)
    monkeypatch.setenv("VAULT_SECRET_ID_FILE", str(secret_id_file))
    with pytest.raises(PermanentError) as caught:
        SecretsResource().get("HUBSPOT_ACCESS_TOKEN")
    assert_names_without_value(
        caught.value, "AppRole login", "VAULT_SECRET_ID_FILE", "vault secrets backend", values=tuple(VALUES.values())
    )


@pytest.mark.parametrize(
    ("environment", "complaint"),
    [
        ({}, "none is set"),
        ({"VAULT_TOKEN": "t-1234", "VAULT_ROLE_ID": "r-1234"}, "found VAULT_TOKEN, VAULT_ROLE_ID"),
        ({"VAULT_ROLE_ID": "r-1234"}, "VAULT_SECRET_ID_FILE is not"),
    ],
)
def test_login_must_be_configured_once(vault_env, monkeypatch, environment, complaint):
    monkeypatch.setenv("ETL_VAULT_PATH", "etl/anything")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(PermanentError, match=complaint):
        SecretsResource().get("HUBSPOT_ACCESS_TOKEN")


# errors: each names the mount, the path and the cause, never a value


def test_a_policy_that_denies_the_path(vault_env, monkeypatch):
    path = _stored(vault_env, monkeypatch)
    token = _with_token(vault_env, monkeypatch, READ_POLICY, DENY_POLICY)  # deny wins over read
    with pytest.raises(PermanentError) as caught:
        SecretsResource().get("HUBSPOT_ACCESS_TOKEN")
    assert_names_without_value(
        caught.value,
        "permission denied",
        "mount 'secret'",
        f"path {path!r}",
        f"secret/data/{path}",
        vault_env.address,
        values=(*VALUES.values(), token),
    )


def test_a_missing_path_is_not_found(vault_env, monkeypatch):
    monkeypatch.setenv("ETL_VAULT_PATH", "etl/no-such-secret")
    _with_token(vault_env, monkeypatch, READ_POLICY)
    with pytest.raises(PermanentError) as caught:  # even for a secret that is not required: ETL_VAULT_PATH is wrong
        SecretsResource().get("KAGGLE_KEY")
    assert_names_without_value(caught.value, "not found", "mount 'secret'", "path 'etl/no-such-secret'")


def test_a_deleted_latest_version_is_named(vault_env, monkeypatch):
    path = _stored(vault_env, monkeypatch)
    vault_env.bao("kv", "delete", "-mount=secret", path)
    _with_token(vault_env, monkeypatch, READ_POLICY)
    with pytest.raises(PermanentError) as caught:
        SecretsResource().get("KAGGLE_KEY")
    assert_names_without_value(
        caught.value, "latest version 1 was deleted", f"path {path!r}", values=tuple(VALUES.values())
    )


def test_a_sealed_server_is_transient(vault_env, monkeypatch):
    path = _stored(vault_env, monkeypatch)
    _with_token(vault_env, monkeypatch, READ_POLICY)
    vault_env.seal()
    try:
        with pytest.raises(TransientError) as caught:
            SecretsResource().get("HUBSPOT_ACCESS_TOKEN")
    finally:
        vault_env.unseal()
    assert_names_without_value(caught.value, "sealed", "mount 'secret'", f"path {path!r}")
    assert SecretsResource().get("HUBSPOT_ACCESS_TOKEN") == VALUES["HUBSPOT_ACCESS_TOKEN"]  # once unsealed


def test_an_unreachable_address_is_transient(vault_env, monkeypatch):
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("VAULT_TOKEN", "t-unused")
    monkeypatch.setenv("ETL_VAULT_PATH", "etl/prod")
    with pytest.raises(TransientError, match=r"mount 'secret' path 'etl/prod' at http://127.0.0.1:1.*unreachable"):
        SecretsResource().get("HUBSPOT_ACCESS_TOKEN")


# rotation


def test_a_new_version_reaches_a_fresh_read_an_expired_cache_and_a_new_resource(vault_env, monkeypatch):
    path = _stored(vault_env, monkeypatch, {"HUBSPOT_ACCESS_TOKEN": "vault-before-rotation"})
    _with_token(vault_env, monkeypatch, READ_POLICY)
    cached, expiring = SecretsResource(cache_seconds=3600), SecretsResource(cache_seconds=0.2)
    assert cached.get("HUBSPOT_ACCESS_TOKEN") == expiring.get("HUBSPOT_ACCESS_TOKEN") == "vault-before-rotation"

    assert vault_env.put(path, {"HUBSPOT_ACCESS_TOKEN": "vault-after-rotation-3e1a"}) == 2

    assert cached.get("HUBSPOT_ACCESS_TOKEN") == "vault-before-rotation"  # within its cache window
    assert cached.get("HUBSPOT_ACCESS_TOKEN", fresh=True) == "vault-after-rotation-3e1a"
    assert cached.get("HUBSPOT_ACCESS_TOKEN") == "vault-after-rotation-3e1a"  # the cache holds the new one
    time.sleep(0.3)
    assert expiring.get("HUBSPOT_ACCESS_TOKEN") == "vault-after-rotation-3e1a"
    assert SecretsResource(cache_seconds=3600).get("HUBSPOT_ACCESS_TOKEN") == "vault-after-rotation-3e1a"
    assert redact("vault-after-rotation-3e1a") == "***"


def test_a_new_version_reaches_the_next_run_of_the_same_definitions(vault_env, monkeypatch, tmp_path):
    path = _stored(vault_env, monkeypatch, {"HUBSPOT_ACCESS_TOKEN": "vault-run-1"})
    role_id, secret_id_file = approle_credentials(vault_env, tmp_path)
    monkeypatch.setenv("VAULT_ROLE_ID", role_id)
    monkeypatch.setenv("VAULT_SECRET_ID_FILE", str(secret_id_file))
    assert tokens_of_two_runs(lambda: vault_env.put(path, {"HUBSPOT_ACCESS_TOKEN": "vault-run-2"})) == [
        "vault-run-1",
        "vault-run-2",
    ]


# TLS: verification is on by default


@pytest.fixture(scope="module")
def openbao_tls(tmp_path_factory):
    """A second server, `-dev-tls`: HTTPS with a certificate signed by a CA it generates (not trusted here)."""
    server = start_configured(tmp_path_factory.mktemp("openbao-tls"), tls=True)
    yield server
    server.stop()


def test_tls_is_verified_by_default_and_vault_cacert_trusts_the_ca(openbao_tls, vault_env, monkeypatch):
    monkeypatch.setenv("VAULT_ADDR", openbao_tls.address)
    _stored(openbao_tls, monkeypatch)
    _with_token(openbao_tls, monkeypatch, READ_POLICY)
    with pytest.raises(PermanentError) as caught:
        SecretsResource().get("HUBSPOT_ACCESS_TOKEN")
    assert_names_without_value(caught.value, "TLS verification", openbao_tls.address, "VAULT_CACERT")

    monkeypatch.setenv("VAULT_CACERT", str(openbao_tls.ca_cert))
    assert SecretsResource().get("HUBSPOT_ACCESS_TOKEN") == VALUES["HUBSPOT_ACCESS_TOKEN"]


# the whole job


def forget_synced(mariadb_url: str, contacts: int) -> None:
    """Some contacts as if HubSpot never accepted them, so the next run has something to send."""
    engine = sa.create_engine(mariadb_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM hubspot_sync_state ORDER BY email LIMIT {contacts}")
    engine.dispose()


def test_daily_etl_takes_the_hubspot_token_from_openbao_and_the_rotated_one_next_run(
    hubspot_env, vault_env, mariadb_url, monkeypatch, tmp_path
):
    from etl_assets_tests.assets.test_assets import materialization, run_daily_etl

    hubspot_server = hubspot_env
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN")  # hubspot_env's; the token lives in OpenBao only
    path = _stored(vault_env, monkeypatch, {"HUBSPOT_ACCESS_TOKEN": hubspot_server.token})
    role_id, secret_id_file = approle_credentials(vault_env, tmp_path)
    monkeypatch.setenv("VAULT_ROLE_ID", role_id)
    monkeypatch.setenv("VAULT_SECRET_ID_FILE", str(secret_id_file))

    first = run_daily_etl()
    assert first.success
    assert materialization(first, "hubspot_contacts")["mode"] == "live"
    assert hubspot_server.contacts_snapshot() and hubspot_server.count_status(401) == 0

    # "Rotate and expire now" in HubSpot, the new token written as a new KV version: the old token fails
    # from now on, and the next run reads the new one (no 401 to recover from: not the fresh re-read).
    hubspot_server.rotate_token("vault-rotated-token-5b2e")
    vault_env.put(path, {"HUBSPOT_ACCESS_TOKEN": "vault-rotated-token-5b2e"})
    forget_synced(mariadb_url, 3)
    hubspot_server.reset_log()
    second = run_daily_etl()
    assert second.success
    assert materialization(second, "hubspot_contacts")["updated"] == 3
    assert hubspot_server.count_requests() > 0 and hubspot_server.count_status(401) == 0
