"""ETL_SECRETS_BACKEND=vault: HashiCorp Vault or OpenBao (the same HTTP API), KV version 2, through hvac.

One KV secret (ETL_VAULT_PATH on the mount ETL_VAULT_MOUNT, default `secret`) holds every key, like
the AWS JSON secret: HUBSPOT_ACCESS_TOKEN, KAGGLE_KEY, ETL_DATABASE_PASSWORD, ... Its latest version
is read, so `vault kv put` (a new version) is used by the next run, or by a `fresh` read.

What the API does, as relied on here (OpenBao/Vault API docs, hvac 2.4 source, checked against a
real `bao server -dev` in the tests):
- `GET /v1/<mount>/data/<path>` answers `{"data": {"data": {...}, "metadata": {"version", "deletion_time",
  "destroyed", ...}}}`; errors are `{"errors": [...]}`: 403 "permission denied" (also for a bad or
  expired token), 404 for a missing path (Vault also documents 404 for "no permission"), 503
  "Vault is sealed", 429 from a standby node.
- A deleted latest version answers 404 with `data.data` null and `metadata.deletion_time` set; hvac
  raises InvalidPath for it unless `raise_on_deleted_version=False`, which returns that body. We pass
  False and name the deleted version ourselves. (hvac's default changes in 3.0; passing it pins it.)
- hvac maps 400 InvalidRequest, 401 Unauthorized, 403 Forbidden, 404 InvalidPath, 429 RateLimitExceeded,
  500 InternalServerError, 502 BadGateway, 503 VaultDown; connection failures are requests' own.

Authentication is a token (VAULT_TOKEN, or the file VAULT_TOKEN_FILE, e.g. written by Vault Agent)
or AppRole (VAULT_ROLE_ID, the secret id in the file VAULT_SECRET_ID_FILE, AppRole mounted at
`approle/`): exactly one. hvac would otherwise fall back to ~/.vault-token and VAULT_CAPATH on its
own; everything is passed explicitly so what is used is what the deployment configured.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from etl_assets import settings
from etl_assets.errors import PermanentError, TransientError, reworded
from etl_assets.logs.redaction import register_secret
from etl_assets.resources.secret_backends import Content

BACKEND = "vault secrets backend"
TIMEOUT_SECONDS = 15


def _required(name: str) -> str:
    value = settings.setting(name)
    if not value:
        raise PermanentError(f"{name} is not set ({BACKEND})")
    return value


def _read_credential_file(variable: str, path: str) -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()  # `echo` and editors add a newline
    except OSError as exc:
        raise PermanentError(f"{variable}={path}: cannot read it ({exc.strerror}) ({BACKEND})") from None
    if not value:
        raise PermanentError(f"{variable}={path} is empty ({BACKEND})")
    register_secret(value)
    return value


class VaultSecrets:
    def __init__(self) -> None:
        self.address = _required(settings.VAULT_ADDR).rstrip("/")
        self.mount = settings.value(settings.VAULT_MOUNT).strip("/")
        self.path = _required(settings.VAULT_PATH).strip("/")
        cacert = settings.setting(settings.VAULT_CACERT)
        if cacert and not Path(cacert).exists():
            raise PermanentError(f"{settings.VAULT_CACERT}={cacert}: no such file ({BACKEND})")
        # TLS is always verified: against VAULT_CACERT (a PEM file, or a directory of them), else the system's CAs.
        self.verify: bool | str = cacert or True
        self.role_id = settings.setting(settings.VAULT_ROLE_ID)
        self.token_file = settings.setting(settings.VAULT_TOKEN_FILE)
        self._check_login()  # refuse an ambiguous or missing configuration before any request
        self._client: Any = None

    def source(self, name: str) -> str:
        return f"{self.mount}/{self.path}"  # one secret holds every key: read once for all

    def where(self, name: str) -> str:
        return f"no key {name} in {self._described()}"

    def _described(self) -> str:
        return f"Vault KV v2 mount {self.mount!r} path {self.path!r} at {self.address}"

    def _check_login(self) -> None:
        configured = [
            name
            for name in (settings.VAULT_TOKEN, settings.VAULT_TOKEN_FILE, settings.VAULT_ROLE_ID)
            if settings.setting(name)
        ]
        if len(configured) != 1:
            raise PermanentError(
                f"set exactly one of {settings.VAULT_TOKEN}, {settings.VAULT_TOKEN_FILE} or {settings.VAULT_ROLE_ID} "
                f"(with {settings.VAULT_SECRET_ID_FILE}) to log in to Vault ({BACKEND}); "
                + (f"found {', '.join(configured)}" if configured else "none is set")
            )
        if self.role_id and not settings.setting(settings.VAULT_SECRET_ID_FILE):
            raise PermanentError(
                f"{settings.VAULT_ROLE_ID} is set but {settings.VAULT_SECRET_ID_FILE} is not (AppRole login, {BACKEND})"
            )

    def client(self, login_again: bool = False):
        if self._client is None or login_again:
            import hvac  # loads only for this backend

            token = settings.setting(settings.VAULT_TOKEN)
            if self.token_file:  # read at each login: Vault Agent rewrites it with each new token
                token = _read_credential_file(settings.VAULT_TOKEN_FILE, self.token_file)
            register_secret(token)
            # token="" rather than None: None makes hvac read VAULT_TOKEN / ~/.vault-token by itself.
            client = hvac.Client(url=self.address, token=token or "", verify=self.verify, timeout=TIMEOUT_SECONDS)
            if self.role_id:
                secret_id = _read_credential_file(
                    settings.VAULT_SECRET_ID_FILE, settings.setting(settings.VAULT_SECRET_ID_FILE) or ""
                )
                register_secret(self.role_id)
                with self._errors(
                    f"AppRole login (auth/approle/login with {settings.VAULT_ROLE_ID} and "
                    f"{settings.VAULT_SECRET_ID_FILE}) at {self.address}"
                ):
                    response = client.auth.approle.login(role_id=self.role_id, secret_id=secret_id)
                register_secret(response["auth"]["client_token"])
            self._client = client
        return self._client

    def fetch(self, source: str) -> Content:
        import hvac.exceptions

        with self._errors(self._described()):
            try:
                response = self._read_latest(self.client())
            except hvac.exceptions.Forbidden:
                if not (self.role_id or self.token_file):
                    raise
                # The token may have expired during a long run (403 as well): log in again (AppRole), or
                # take the token Vault Agent has written since, once.
                response = self._read_latest(self.client(login_again=True))
        document = response["data"]["data"]
        metadata = response["data"].get("metadata") or {}
        if document is None:  # the latest version is deleted (raise_on_deleted_version=False returns it)
            raise PermanentError(
                f"{self._described()} ({BACKEND}): its latest version {metadata.get('version')} "
                f"was deleted at {metadata.get('deletion_time')}; undelete it or write a new one"
            )
        if not isinstance(document, dict):
            raise PermanentError(f"{self._described()} ({BACKEND}) is not a map of name/value pairs")
        # `kv put/patch KEY=@file` keeps the file's trailing newline (seen with bao 2.7): stripped, as for files.
        return {key: value.strip() if isinstance(value, str) else value for key, value in document.items()}

    def _read_latest(self, client) -> dict:
        return client.secrets.kv.v2.read_secret_version(
            path=self.path, mount_point=self.mount, raise_on_deleted_version=False
        )

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except (PermanentError, TransientError):
            raise
        except Exception as exc:  # noqa: BLE001 - translated when known, else re-raised as it is
            error = self._translated(exc, f"{what} ({BACKEND})")
            if error is None:
                raise
            raise error from None  # hvac's message and chain carry URLs and bodies, not needed

    def _translated(self, exc: Exception, what: str) -> Exception | None:
        """hvac's and requests' exceptions reworded, naming `what` and the cause; whether each is a
        PermanentError or a TransientError is errors.classify's to say (503, 429, 500, 502 and an
        unreachable server transient; 400, 401, 403, 404, 412, a TLS failure permanent).

        Vault's own error strings ("permission denied", "Vault is sealed") are kept: they name no value.
        """
        import hvac.exceptions as vault
        import requests

        said = _vault_said(getattr(exc, "errors", None) or [])
        if isinstance(exc, vault.Forbidden):
            return reworded(
                exc,
                f"{what}: permission denied{said}; the token's policy needs `read` on "
                f"{self.mount}/data/{self.path}, and the token must be valid",
            )
        if isinstance(exc, vault.InvalidPath):
            body_metadata = ((getattr(exc, "json", None) or {}).get("data") or {}).get("metadata") or {}
            if body_metadata.get("destroyed"):
                return reworded(
                    exc, f"{what}: its latest version {body_metadata.get('version')} was destroyed; write a new version"
                )
            return reworded(exc, f"{what}: not found{said}: no such secret, or no KV v2 engine on that mount")
        if isinstance(exc, vault.VaultDown):  # 503: sealed or not ready; an operator unseals it, then a retry works
            return reworded(exc, f"{what}: Vault is sealed or unavailable (503){said}")
        if isinstance(exc, vault.VaultError):  # 429, 500, 502 transient; 400, 401, 412, 501... permanent
            return reworded(exc, f"{what}: Vault answered {type(exc).__name__}{said}")
        if isinstance(exc, requests.exceptions.SSLError):  # before ConnectionError, its base class
            now = f" (now {self.verify})" if isinstance(self.verify, str) else " (unset: the system's CAs)"
            return reworded(
                exc,
                f"{what}: TLS verification of {self.address} failed; set {settings.VAULT_CACERT} "
                f"to the CA certificate that signed the server's certificate{now}",
            )
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return reworded(exc, f"{what}: Vault unreachable ({type(exc).__name__})")
        return None


def _vault_said(errors: list) -> str:
    """Vault's `errors` as one line: it wraps several as "1 error occurred:\\n\\t* permission denied\\n\\n"."""
    lines = [line.strip().lstrip("* ") for error in errors for line in str(error).splitlines()]
    said = "; ".join(line for line in lines if line and not re.fullmatch(r"\d+ errors? occurred:", line))
    return f" (Vault: {said})" if said else ""
