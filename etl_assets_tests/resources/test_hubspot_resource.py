"""`sync_mode`: live, dry run, or a failure naming the secret, decided without running anything.

The environment is real (monkeypatch on os.environ, read by the env backend and by the check for
HUBSPOT_* settings alike); the files backend reads a real directory.
"""

import os

import pytest

from etl_assets.errors import PermanentError
from etl_assets.resources.hubspot import NOTHING_CONFIGURED, HubSpotResource, SyncMode, sync_mode
from etl_assets.resources.secrets import SecretsResource

pytestmark = pytest.mark.fast  # pure: no service, no subprocess


def mode(secrets: SecretsResource, dry_run: bool = False) -> SyncMode:
    return sync_mode(dry_run, secrets, os.environ)


def files_backend(monkeypatch, directory) -> SecretsResource:
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "files")
    monkeypatch.setenv("ETL_SECRETS_DIR", str(directory))
    return SecretsResource()


def test_nothing_configured_is_a_dry_run(clean_env):
    assert mode(SecretsResource()) == SyncMode("dry run", NOTHING_CONFIGURED)


def test_blank_hubspot_variables_count_as_unset(clean_env, monkeypatch):
    monkeypatch.setenv("HUBSPOT_API_BASE", "  ")
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "")
    assert mode(SecretsResource()) == SyncMode("dry run", NOTHING_CONFIGURED)


def test_hubspot_dry_run_true_wins_and_reads_no_token(clean_env, monkeypatch):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "a-valid-token")
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "vault")
    unreadable = SecretsResource()  # any read, even of the backend, would raise
    assert mode(unreadable, dry_run=True) == SyncMode("dry run", "HUBSPOT_DRY_RUN=true")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HUBSPOT_API_BASE", "https://api.hubapi.com"),
        ("HUBSPOT_ACCES_TOKEN", "pat-typo"),  # a misspelled token variable
        ("HUBSPOT_DRY_RUN", "false"),  # saying "not a dry run" is configuring
    ],
)
def test_any_hubspot_setting_without_a_token_fails_naming_the_secret(clean_env, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(PermanentError) as caught:
        mode(SecretsResource())
    message = str(caught.value)
    assert message.startswith(
        "secret HUBSPOT_ACCESS_TOKEN is missing from the env secrets backend "
        "(environment variable HUBSPOT_ACCESS_TOKEN is unset or empty)"
    )
    assert f"a token is expected because {name} is set" in message
    assert "HUBSPOT_DRY_RUN=true runs dry without one" in message
    assert "pat-typo" not in message  # names, never values


def test_a_chosen_secrets_backend_without_a_token_fails_naming_the_file(clean_env, monkeypatch, tmp_path):
    with pytest.raises(PermanentError) as caught:
        mode(files_backend(monkeypatch, tmp_path))
    message = str(caught.value)
    assert f"files secrets backend (no file {tmp_path / 'HUBSPOT_ACCESS_TOKEN'})" in message
    assert "a token is expected because ETL_SECRETS_BACKEND=files " in message


def test_an_empty_token_file_fails_too(clean_env, monkeypatch, tmp_path):
    (tmp_path / "HUBSPOT_ACCESS_TOKEN").write_text("\n")
    with pytest.raises(PermanentError, match="secret HUBSPOT_ACCESS_TOKEN is missing from the files"):
        mode(files_backend(monkeypatch, tmp_path))


def test_a_token_makes_it_live_and_says_where_it_came_from(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "env-token")
    assert mode(SecretsResource()) == SyncMode("live", "token from the env secrets backend")
    (tmp_path / "HUBSPOT_ACCESS_TOKEN").write_text("files-token\n")
    assert mode(files_backend(monkeypatch, tmp_path)) == SyncMode("live", "token from the files secrets backend")


@pytest.mark.parametrize(("value", "expected"), [("yes", "dry run"), ("0", "live"), ("", "live")])
def test_the_resource_reads_hubspot_dry_run(clean_env, monkeypatch, value, expected):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "env-token")
    monkeypatch.setenv("HUBSPOT_DRY_RUN", value)
    assert HubSpotResource(secrets=SecretsResource()).mode().name == expected


def test_a_bad_hubspot_dry_run_value_is_refused(clean_env, monkeypatch):
    monkeypatch.setenv("HUBSPOT_DRY_RUN", "maybe")
    with pytest.raises(PermanentError, match="HUBSPOT_DRY_RUN must be true or false, got 'maybe'"):
        HubSpotResource(secrets=SecretsResource()).mode()
