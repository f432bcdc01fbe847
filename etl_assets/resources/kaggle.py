"""Kaggle through the real `kaggle` client: the dataset's current version, and its download.

`kaggle` authenticates when imported, so it is imported lazily, here, when a run needs it.
The client is built for the environment `KAGGLE_API_ENVIRONMENT` names, as kagglesdk reads it
(`TEST` → http://localhost:7777), with kagglesdk's verbose request dump off.
"""

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import requests

from etl_assets import files, settings
from etl_assets.errors import PermanentError, TransientError
from etl_assets.resources.secrets import SecretsResource

# New signed URLs one download may ask Kaggle for after the one it had expired.
URL_REFRESHES = 3


@dataclass(frozen=True)
class DatasetVersion:
    ref: str
    number: int
    total_bytes: int  # the preflight reports it


def split_ref(ref: str) -> tuple[str, str]:
    parts = ref.strip().split("/")
    if len(parts) != 2 or not all(parts):
        raise PermanentError(f"{settings.KAGGLE_DATASET} must look like owner/slug, got {ref!r}")
    return parts[0], parts[1]


def _kaggle_api_class():
    with contextlib.redirect_stdout(io.StringIO()):  # import-time auth help is noise here
        from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk import KaggleClient
    from kagglesdk.kaggle_env import get_env

    class EnvironmentAwareKaggleApi(KaggleApi):
        """KaggleApi only knows LOCALHOST; kagglesdk knows every KAGGLE_API_ENVIRONMENT."""

        def build_kaggle_client(self):
            return KaggleClient(
                env=get_env(),
                verbose=False,
                username=self.config_values.get(self.CONFIG_NAME_USER),
                password=self.config_values.get(self.CONFIG_NAME_KEY),
                api_token=self.config_values.get(self.CONFIG_NAME_TOKEN),
                response_processor=self.get_response_processor(),
            )

    return EnvironmentAwareKaggleApi


def describe_http_error(exc: requests.exceptions.HTTPError, ref: str) -> str:
    status = exc.response.status_code if exc.response is not None else None
    if status == 401:
        return f"Kaggle rejected the credentials (401) for dataset {ref}: check KAGGLE_API_TOKEN or KAGGLE_USERNAME/KAGGLE_KEY"
    if status == 403:
        return (
            f"Kaggle refused access (403) to dataset {ref}: accept the dataset's rules on kaggle.com with the "
            "account of KAGGLE_USERNAME/KAGGLE_API_TOKEN (rules cannot be accepted through the API), "
            "or check that the account can see a private dataset"
        )
    if status == 404:
        return f"Kaggle has no dataset {ref} (404): check {settings.KAGGLE_DATASET}"
    return f"Kaggle answered {status} for dataset {ref}: {exc}"


def signed_url_expired(exc: requests.exceptions.HTTPError) -> bool:
    """Cloud Storage's answer to an expired signed download URL: 400 (not 403) with an ExpiredToken XML body."""
    response = exc.response
    return response is not None and response.status_code == 400 and b"<Code>ExpiredToken</Code>" in response.content


def _token_user(api, token: str) -> str | None:
    """The user a KAGGLE_API_TOKEN belongs to, None for one Kaggle calls inactive or unknown.

    Through kagglesdk's public OAuth service (the call KaggleApi's private `_introspect_token`
    makes), which the client's download calls need as the user name beside the token.
    """
    from kagglesdk.security.types.oauth_service import IntrospectTokenRequest

    request = IntrospectTokenRequest()
    request.token = token
    with api.build_kaggle_client() as client:
        try:
            response = client.security.oauth_client.introspect_token(request)
        except requests.exceptions.HTTPError as exc:
            if exc.response is not None and exc.response.status_code in (400, 403, 404):
                return None  # as KaggleApi reads these answers: the token is not valid
            raise
    return response.username if response.active and response.username else None


class KaggleResource(dg.ConfigurableResource):
    """Which dataset to fetch, and the authenticated client to fetch it with.

    Credentials come only from the secrets resource (never fields run config could set).
    """

    dataset: str | None = None  # falls back to KAGGLE_DATASET; unset → the embedded sample
    file: str | None = None  # falls back to KAGGLE_FILE; unset → the only/largest CSV
    secrets: dg.ResourceDependency[SecretsResource]

    def dataset_ref(self) -> str | None:
        return self.dataset or settings.setting(settings.KAGGLE_DATASET)

    def file_name(self) -> str | None:
        return self.file or settings.setting(settings.KAGGLE_FILE)

    def _api(self):
        api = _kaggle_api_class()()
        token = self.secrets.get(settings.KAGGLE_API_TOKEN)
        username = settings.setting(settings.KAGGLE_USERNAME)
        key = self.secrets.get(settings.KAGGLE_KEY)
        api.config_values = {}
        if token:
            api.config_values[api.CONFIG_NAME_TOKEN] = token
            user = _token_user(api, token)
            if not user:
                raise PermanentError("Kaggle rejected KAGGLE_API_TOKEN (token inactive or unknown)")
            api.config_values[api.CONFIG_NAME_USER] = user
        elif username and key:
            api.config_values.update({api.CONFIG_NAME_USER: username, api.CONFIG_NAME_KEY: key})
        else:
            try:  # kaggle.json in KAGGLE_CONFIG_DIR or ~/.kaggle
                with contextlib.redirect_stdout(io.StringIO()):
                    api.authenticate()
            except SystemExit:
                raise PermanentError(
                    "no Kaggle credentials: set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, "
                    "or provide kaggle.json"
                ) from None
        return api

    def current_version(self, ref: str) -> DatasetVersion:
        from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetRequest

        owner, slug = split_ref(ref)
        api = self._api()
        request = ApiGetDatasetRequest()
        request.owner_slug, request.dataset_slug = owner, slug
        with api.build_kaggle_client() as client:
            dataset = client.datasets.dataset_api_client.get_dataset(request)
        return DatasetVersion(
            ref=ref, number=int(dataset.current_version_number or 0), total_bytes=int(dataset.total_bytes or 0)
        )

    def download(self, version: DatasetVersion, destination: Path) -> Path:
        """The version's zip archive, downloaded into `destination`, owner-only.

        The client resumes a truncated download against the same signed URL. Once that URL has
        expired it gives up, keeping the partial archive and its `.kaggle-partial` marker; calling
        it again asks Kaggle for a new URL, and, not forced, it resumes the partial with `Range`
        when the marker matches the object (else it starts over). A partial left by an earlier
        attempt of this step is resumed the same way.
        """
        owner, slug = split_ref(version.ref)
        files.private_dir(destination)
        api = self._api()
        for refresh in range(URL_REFRESHES + 1):
            if refresh:
                dg.get_dagster_logger().warning(
                    "Kaggle: the signed download URL of %s expired; asking Kaggle for a new one (%d/%d)",
                    version.ref,
                    refresh,
                    URL_REFRESHES,
                )
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # the client prints the dataset URL
                    api.dataset_download_files(f"{owner}/{slug}/{version.number}", path=str(destination), quiet=True)
                break
            except requests.exceptions.HTTPError as exc:
                if not signed_url_expired(exc):
                    raise
        else:  # a later attempt asks again and resumes what is on disk
            raise TransientError(
                f"Kaggle's signed download URL of {version.ref} expired {URL_REFRESHES + 1} times in a row"
            )
        archive = destination / f"{slug}.zip"
        archive.chmod(0o600)  # the client writes it with the umask's mode; its folder kept it private meanwhile
        return archive
