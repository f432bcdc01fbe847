"""The settings registry: one entry per variable, the README generated from it, values read on demand."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from etl_assets import settings
from etl_assets.errors import PermanentError
from etl_assets.hubspot.ratelimit import RollingWindowLimiter
from etl_assets.retrying import RetrySettings

pytestmark = pytest.mark.fast  # pure: no service, no subprocess

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_tables_are_generated_from_the_registry():
    text = settings.README.read_text(encoding="utf-8")
    assert settings.readme_with_tables(text) == text, (
        "README.md's configuration tables differ from etl_assets/settings.py: "
        "run `.venv/bin/python scripts/config_table.py --write-readme`"
    )


def test_every_setting_has_a_row_and_a_meaning():
    table = settings.markdown_table()
    for name, entry in settings.REGISTRY.items():
        assert entry.meaning and "\n" not in entry.meaning and "|" not in entry.meaning, name
        assert entry.type in (str, int, float, bool), name
        assert re.search(rf"^\| `{name}`( \*\(secret\)\*)? \|", table, re.MULTILINE), name
        assert (entry.default is None) or not entry.secret, f"{name}: a secret has no default"


def test_typed_defaults_parse():
    for name, entry in settings.REGISTRY.items():
        if entry.default is not None:
            assert isinstance(settings.default_value(name), entry.type), name


def test_values_are_read_when_asked_blank_counts_as_unset(monkeypatch):
    monkeypatch.delenv(settings.HUBSPOT_RATE_LIMIT, raising=False)
    assert settings.value(settings.HUBSPOT_RATE_LIMIT) == 100
    monkeypatch.setenv(settings.HUBSPOT_RATE_LIMIT, "  ")
    assert settings.int_setting(settings.HUBSPOT_RATE_LIMIT) == 100
    monkeypatch.setenv(settings.HUBSPOT_RATE_LIMIT, " 190 ")
    assert settings.value(settings.HUBSPOT_RATE_LIMIT) == 190
    monkeypatch.setenv(settings.HUBSPOT_DRY_RUN, "Yes")
    assert settings.value(settings.HUBSPOT_DRY_RUN) is True


@pytest.mark.parametrize(
    "name, raw, message",
    [
        (settings.HUBSPOT_RATE_LIMIT, "100/10s", "HUBSPOT_RATE_LIMIT must be a whole number, got '100/10s'"),
        (settings.RETRY_MAX_SECONDS, "3m", "ETL_RETRY_MAX_SECONDS must be a number, got '3m'"),
        (settings.HUBSPOT_DRY_RUN, "maybe", "HUBSPOT_DRY_RUN must be true or false, got 'maybe'"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable_and_the_value(monkeypatch, name, raw, message):
    monkeypatch.setenv(name, raw)
    with pytest.raises(PermanentError, match=re.escape(message)):
        settings.value(name)


def test_secrets_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="HUBSPOT_ACCESS_TOKEN is a secret: read it through SecretsResource"):
        settings.setting(settings.HUBSPOT_ACCESS_TOKEN)
    with pytest.raises(KeyError, match="ETL_NO_SUCH_SETTING is not in the settings registry"):
        settings.setting("ETL_NO_SUCH_SETTING")


def test_code_defaults_are_the_registrys(monkeypatch):
    monkeypatch.setenv(settings.RETRY_ATTEMPTS, "2")  # a default argument is the documented default, not the env's
    assert RetrySettings().attempts == settings.default_value(settings.RETRY_ATTEMPTS) == 6
    assert RetrySettings().max_seconds == 180.0
    assert RollingWindowLimiter().max_requests == settings.default_value(settings.HUBSPOT_RATE_LIMIT)
    assert settings.retry_settings().attempts == 2


def test_only_the_registry_reads_the_environment():
    """`grep NAME etl_assets` finds one definition: modules read values through the registry."""
    allowed = {
        "etl_assets/settings.py",
        "etl_assets/resources/secrets.py",  # the env secrets backend reads a secret by the name it is given
        "etl_assets/resources/hubspot.py",  # passes os.environ on: any HUBSPOT_* set means a token is expected
    }
    readers = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "etl_assets").rglob("*.py")
        if re.search(r"os\.environ|os\.getenv|EnvVar\(", path.read_text(encoding="utf-8"))
    }
    assert readers <= allowed, f"read the environment through etl_assets.settings: {sorted(readers - allowed)}"
