"""ETL_SECRETS_BACKEND=gcp: Google Cloud Secret Manager, through google-cloud-secret-manager's REST transport.

Either one secret per key, `projects/{ETL_GCP_PROJECT}/secrets/{ETL_GCP_SECRET_PREFIX}{NAME}`, or one JSON
secret `ETL_GCP_SECRET_ID` holding every key, like the AWS JSON secret. The version read is `latest`,
so `gcloud secrets versions add` (a rotation) is used by the next run, or by a `fresh` read.

What the API and client do, as relied on here (Secret Manager REST reference; google-cloud-secret-manager
2.32 run against a local plain-HTTP server; public issue threads):
- `GET /v1/projects/P/secrets/S/versions/latest:access` answers `payload.data` (base64) and
  `payload.dataCrc32c` (an int64 as a string). The client decodes both and does NOT check the CRC:
  we do. Google stores a checksum for every version added (it computes one when the writer sent
  none); an answer without one is refused (stricter: whether very old versions lack it is unverified).
- `latest` is the newest version even when it is disabled or destroyed: 400 FAILED_PRECONDITION
  "Secret Version [...] is in DESTROYED state." The client raises BadRequest for it (not
  FailedPrecondition), Forbidden for 403 PERMISSION_DENIED, NotFound for 404; the REST transport's
  default retry covers 429 and 503 for up to 60 s; connection failures are requests' own exceptions.
- Credentials are Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC file,
  the metadata server of GCE/GKE/Cloud Run), resolved by the client, never from our config.
  ETL_GCP_SECRETS_ENDPOINT points the client elsewhere: an `http://` endpoint can only be a local
  test server, which gets anonymous credentials (no real credential goes over plain HTTP); an
  `https://` one (a regional endpoint, a proxy) keeps ADC.
"""

from __future__ import annotations

from typing import Any

from etl_assets import settings
from etl_assets.errors import PermanentError, reworded
from etl_assets.resources.secret_backends import Content, parse_bundle

BACKEND = "gcp secrets backend"
TIMEOUT_SECONDS = 30
ACCESS_PERMISSION = "secretmanager.versions.access"


class GcpSecrets:
    def __init__(self) -> None:
        self.project = settings.setting(settings.GCP_PROJECT)
        if not self.project:
            raise PermanentError(f"{settings.GCP_PROJECT} is not set ({BACKEND})")
        self.bundle_id = settings.setting(settings.GCP_SECRET_ID)
        self.prefix = settings.setting(settings.GCP_SECRET_PREFIX) or ""
        if self.bundle_id and self.prefix:
            raise PermanentError(
                f"set {settings.GCP_SECRET_ID} (one JSON secret) or {settings.GCP_SECRET_PREFIX} "
                f"(one secret per key), not both ({BACKEND})"
            )
        self.endpoint = settings.setting(settings.GCP_SECRETS_ENDPOINT)
        self._client: Any = None

    def secret_name(self, secret_id: str) -> str:
        return f"projects/{self.project}/secrets/{secret_id}"

    def source(self, name: str) -> str:
        return self.secret_name(self.bundle_id or self.prefix + name)

    def where(self, name: str) -> str:
        if self.bundle_id:
            return f"no key {name} in Google secret {self.source(name)!r}"
        return f"no Google secret {self.source(name)!r}"

    def fetch(self, source: str) -> Content:
        text = self._latest_text(source)
        if self.bundle_id:
            if text is None:  # named explicitly by ETL_GCP_SECRET_ID: its absence is a mistake, not "unset"
                raise PermanentError(f"Google secret {source!r} ({BACKEND}): not found ({settings.GCP_SECRET_ID})")
            return parse_bundle(text, f"Google secret {source!r} ({BACKEND})")
        return None if text is None else text.strip()  # `--data-file` keeps a file's trailing newline

    def client(self):
        if self._client is None:
            from google.api_core.client_options import ClientOptions  # loads only for this backend
            from google.auth.exceptions import DefaultCredentialsError
            from google.cloud import secretmanager

            options, credentials = None, None
            if self.endpoint:
                options = ClientOptions(api_endpoint=self.endpoint)
                if self.endpoint.startswith("http://"):
                    from google.auth.credentials import AnonymousCredentials

                    credentials = AnonymousCredentials()
            try:
                self._client = secretmanager.SecretManagerServiceClient(
                    transport="rest", credentials=credentials, client_options=options
                )
            except DefaultCredentialsError as exc:
                raise PermanentError(f"no Google Application Default Credentials ({BACKEND}): {exc}") from None
        return self._client

    def _latest_text(self, secret: str) -> str | None:
        """The latest version's payload as text, None when the secret does not exist (404)."""
        import requests
        from google.api_core import exceptions as google
        from google.auth import exceptions as google_auth

        version = f"{secret}/versions/latest"
        where = f"Google secret {version!r} ({BACKEND})"
        try:
            response = self.client().access_secret_version(name=version, timeout=TIMEOUT_SECONDS)
        except google.NotFound:
            return None
        # Each error reworded here, its class (transient or permanent) as errors.classify says.
        except google.Forbidden as exc:
            raise reworded(
                exc,
                f"{where}: permission denied: the credentials need {ACCESS_PERMISSION} on it "
                f"(role roles/secretmanager.secretAccessor) ({_said(exc)})",
            ) from None
        except google.BadRequest as exc:
            if _status(exc) == "FAILED_PRECONDITION":  # the latest version disabled or destroyed
                raise reworded(
                    exc, f"{where}: its latest version cannot be read ({_said(exc)}); enable it or add a new version"
                ) from None
            raise reworded(exc, f"{where}: Secret Manager answered {exc.code} ({_said(exc)})") from None
        except google.GoogleAPICallError as exc:  # 429 and 5xx transient, other 4xx permanent
            raise reworded(exc, f"{where}: Secret Manager answered {exc.code} ({_said(exc)})") from None
        except google.RetryError as exc:  # 429/503 until the client's retry deadline: transient
            raise reworded(exc, f"{where}: Secret Manager kept failing ({type(exc.cause).__name__})") from None
        except google_auth.RefreshError as exc:  # e.g. a deleted service account key: permanent
            raise reworded(exc, f"{where}: the Application Default Credentials were refused ({exc})") from None
        except google_auth.TransportError as exc:  # the metadata server or token endpoint unreachable: transient
            raise reworded(
                exc, f"{where}: could not get a token for the Application Default Credentials ({type(exc).__name__})"
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:  # transient
            raise reworded(exc, f"{where}: Secret Manager unreachable ({type(exc).__name__})") from None
        return _checked_text(response, where)


def _checked_text(response: Any, where: str) -> str:
    """The payload, its CRC32C checked (the client does not) and decoded as UTF-8 text."""
    import google_crc32c

    payload = response.payload
    if "data_crc32c" not in payload:
        raise PermanentError(
            f"{where}: the answer carries no CRC32C of the payload, so it cannot be checked; add a new version"
        )
    data = bytes(payload.data)
    if google_crc32c.value(data) != payload.data_crc32c:
        raise PermanentError(
            f"{where}: the payload does not match its CRC32C (corrupted on the way or in "
            f"storage); version {response.name.rsplit('/', 1)[-1]} not used"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PermanentError(f"{where}: the payload is not UTF-8 text") from None


def _status(exc: Any) -> str:
    """Google's error `status` (e.g. FAILED_PRECONDITION) from the REST answer, '' if unreadable."""
    try:
        return str(exc.response.json()["error"]["status"])
    except Exception:  # noqa: BLE001 - not JSON, or not Google's error shape
        return ""


def _said(exc: Any) -> str:
    """Google's message, without the client's "GET <url>: " prefix; it names resources, never a payload."""
    message = str(getattr(exc, "message", "") or exc)
    if message.startswith(("GET ", "POST ")) and ": " in message:
        message = message.split(": ", 1)[1]
    status = _status(exc)
    return f"{status}: {message}" if status else message
