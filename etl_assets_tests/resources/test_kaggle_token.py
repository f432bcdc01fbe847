"""KaggleResource with KAGGLE_API_TOKEN: the token's user is asked of Kaggle's public OAuth service."""

import pytest

from etl_assets.errors import PermanentError
from etl_assets.resources.kaggle import KaggleResource
from etl_assets.resources.secrets import SecretsResource


@pytest.fixture
def token_env(clean_env, monkeypatch, kaggle_server):
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    return kaggle_server


def test_a_token_is_introspected_then_sent_as_bearer(token_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", token_env.token)
    version = KaggleResource(secrets=SecretsResource()).current_version("datablist/customers")
    assert (version.ref, version.number) == ("datablist/customers", 1)
    introspect = [r for r in token_env.request_log if "IntrospectToken" in r.path]
    assert [(r.status, r.body) for r in introspect] == [(200, {"token": token_env.token})]
    assert token_env.request_log[-1].headers["Authorization"] == f"Bearer {token_env.token}"


def test_an_unknown_token_fails_at_once(token_env, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "not-a-token")
    with pytest.raises(PermanentError, match="Kaggle rejected KAGGLE_API_TOKEN"):
        KaggleResource(secrets=SecretsResource()).current_version("datablist/customers")
    assert [r.path for r in token_env.request_log if "IntrospectToken" in r.path]
    assert not [r for r in token_env.request_log if "GetDataset" in r.path]
