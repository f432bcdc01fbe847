"""Where credentials come from: environment, secret files, AWS Secrets Manager, Vault/OpenBao, Google Secret Manager.

`ETL_SECRETS_BACKEND` picks the backend when a run starts. Values are fetched on use and
cached for a short time, so a rotated secret reaches the next run without a restart. Every
value read is registered with the log redaction filter, and no error message carries one.
The remote stores' reading lives in `secret_backends/` (one small module each); caching,
redaction and "secret X is missing" are done here, alike for all of them.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from etl_assets import settings
from etl_assets.errors import PermanentError
from etl_assets.logs.redaction import register_secret
from etl_assets.resources.secret_backends import SecretReader
from etl_assets.retrying import call_with_retries

BACKEND_VARIABLE = settings.SECRETS_BACKEND
BACKENDS = ("env", "files", "aws", "vault", "gcp")


def _reader(backend: str) -> SecretReader:
    # Each SDK loads only when its backend is chosen.
    if backend == "aws":
        from etl_assets.resources.secret_backends.aws import AwsSecrets

        return AwsSecrets()
    if backend == "vault":
        from etl_assets.resources.secret_backends.vault import VaultSecrets

        return VaultSecrets()
    from etl_assets.resources.secret_backends.gcp import GcpSecrets

    return GcpSecrets()


class SecretsResource(dg.ConfigurableResource):
    """Reads named secrets (e.g. HUBSPOT_ACCESS_TOKEN) from the configured backend."""

    # Where secrets come from is the deployment's choice alone (ETL_SECRETS_BACKEND, ETL_SECRETS_DIR,
    # ETL_AWS_*, VAULT_* and ETL_VAULT_*, ETL_GCP_*): no field, so run config cannot redirect it.
    cache_seconds: float = 60.0

    # (backend, source) -> (value, fetched at); private, so never in repr, config or the UI
    _cache: dict = PrivateAttr(default_factory=dict)
    # backend -> its reader (settings read and client made once per resource, i.e. per run)
    _readers: dict = PrivateAttr(default_factory=dict)

    def resolved_backend(self) -> str:
        backend = settings.value(BACKEND_VARIABLE).lower()
        if backend not in BACKENDS:
            raise PermanentError(f"{BACKEND_VARIABLE}={backend!r} is not one of {BACKENDS}")
        return backend

    def get(self, name: str, required: bool = False, fresh: bool = False) -> str | None:
        """The secret's value, or None when absent and not `required`.

        `fresh` skips the cache (and refills it): for a value just rejected, e.g. a rotated token.
        """
        backend = self.resolved_backend()
        if backend == "env":
            value = self._cached(("env", name), lambda: dg.EnvVar(name).get_value(), fresh)
        elif backend == "files":
            value = self._cached(("files", name), lambda: self._read_file(name), fresh)
        else:
            reader = self._remote(backend)
            source = reader.source(name)
            # A transient store error (unreachable, sealed, 429, 5xx) is retried in-step (errors.classify).
            value = self._cached(
                (backend, source),
                lambda: call_with_retries(
                    lambda: reader.fetch(source),
                    f"reading a secret from the {backend} secrets backend",
                    settings.retry_settings(),
                    dg.get_dagster_logger(),
                ),
                fresh,
            )
            if isinstance(value, dict):  # one secret holding every key
                value = value.get(name)
                value = None if value is None else str(value)
        value = value or None  # an empty secret counts as missing
        if value is None and required:
            raise PermanentError(
                f"secret {name} is missing from the {backend} secrets backend ({self._where(backend, name)})"
            )
        return value

    def _remote(self, backend: str) -> SecretReader:
        if backend not in self._readers:
            self._readers[backend] = _reader(backend)
        return self._readers[backend]

    def _cached(self, key: tuple, fetch: Callable[[], Any], fresh: bool) -> Any:
        hit = self._cache.get(key)
        if hit and not fresh and time.monotonic() - hit[1] < self.cache_seconds:
            return hit[0]
        value = fetch()
        for secret in value.values() if isinstance(value, dict) else [value]:
            if isinstance(secret, str):
                register_secret(secret)
        self._cache[key] = (value, time.monotonic())
        return value

    def _where(self, backend: str, name: str) -> str:
        if backend == "files":
            return f"no file {self._secrets_dir() / name}"
        if backend == "env":
            return f"environment variable {name} is unset or empty"
        return self._remote(backend).where(name)

    # files: one file per secret, the Docker/Compose secrets convention

    def _secrets_dir(self) -> Path:
        return Path(settings.value(settings.SECRETS_DIR))

    def _read_file(self, name: str) -> str | None:
        path = self._secrets_dir() / name
        try:
            return path.read_text(encoding="utf-8").strip()  # editors and `echo` add a trailing newline
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PermanentError(f"secret {name} (files secrets backend): cannot read {path}: {exc.strerror}") from None
