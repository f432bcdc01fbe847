"""KaggleServer driven by the real ``kaggle`` / ``kagglesdk`` clients (and raw ``requests`` for HTTP details).

The client is pointed at the server the way the product does it: ``KAGGLE_API_ENVIRONMENT=TEST``
(``http://localhost:7777``). ``KaggleApi`` itself only honours ``LOCALHOST``, so the tests use a
subclass whose ``build_kaggle_client`` takes the environment from kagglesdk's ``get_env()``.
"""

from __future__ import annotations

import functools
import io
import random
import re
import socket
import time
import zipfile
from datetime import datetime
from http import HTTPStatus

import pytest
import requests

from etl_assets_tests.conftest import start_kaggle_server
from etl_assets_tests.servers.kaggle_server import KaggleServer

OWNER, SLUG = "datablist", "customers"
DATASET = f"{OWNER}/{SLUG}"
CSV = b"Index,Customer Id,First Name,Email\n1,DD37Cf93aecA6Dc,Sheryl,zunigavanessa@smith.info\n"
GET_DATASET = "datasets.DatasetApiService/GetDataset"
CLIENT_CHUNK = 1024 * 1024  # KaggleApi.download_file's chunk_size: a partial chunk is never written


@functools.cache
def _test_api_class():
    """Imported lazily: ``import kaggle`` authenticates at import time, so it must see the test env."""
    from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk import KaggleClient
    from kagglesdk.kaggle_env import get_env

    class TestEnvKaggleApi(KaggleApi):
        def build_kaggle_client(self):
            # Same arguments as KaggleApi.build_kaggle_client, but the env comes from
            # KAGGLE_API_ENVIRONMENT (TEST -> localhost:7777) and request logging stays off.
            return KaggleClient(
                env=get_env(),
                verbose=False,
                username=self.config_values.get(self.CONFIG_NAME_USER),
                password=self.config_values.get(self.CONFIG_NAME_KEY),
                api_token=self.config_values.get(self.CONFIG_NAME_TOKEN),
                response_processor=self.get_response_processor(),
            )

    return TestEnvKaggleApi


@pytest.fixture
def kaggle_env(monkeypatch, tmp_path):
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(name, raising=False)
    # A developer's ~/.kaggle (kaggle.json, access_token) must not leak in as credentials.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    _test_api_class()  # the import-time authentication runs now, with no credentials: it prints help and gives up
    return monkeypatch


@pytest.fixture
def server():
    srv = start_kaggle_server()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def key_auth(kaggle_env, server):
    kaggle_env.setenv("KAGGLE_USERNAME", server.username)
    kaggle_env.setenv("KAGGLE_KEY", server.key)


@pytest.fixture
def api(key_auth):
    return _authenticated_api()


@pytest.fixture
def no_backoff(monkeypatch):
    """Skip KaggleApi.download_file's 2-3 s retry backoff; returns the list of requested sleeps."""
    from kaggle.api import kaggle_api_extended

    sleeps: list[float] = []

    class InstantClock:
        on_sleep = None

        def sleep(self, seconds):
            sleeps.append(seconds)
            if self.on_sleep:
                self.on_sleep()

        def __getattr__(self, name):
            return getattr(time, name)

    clock = InstantClock()
    monkeypatch.setattr(kaggle_api_extended, "time", clock)
    clock.sleeps = sleeps
    return clock


def _authenticated_api():
    api = _test_api_class()()
    api.authenticate()
    return api


def _get_dataset(api, owner=OWNER, slug=SLUG):
    from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetRequest

    request = ApiGetDatasetRequest()
    request.owner_slug, request.dataset_slug = owner, slug
    with api.build_kaggle_client() as client:
        return client.datasets.dataset_api_client.get_dataset(request)


def _signed_gets(server):
    return [r for r in server.request_log if r.method == "GET" and r.path.startswith("/signed/")]


def _rpc(srv, method, **body):
    return requests.post(
        f"{srv.url}/api/v1/datasets.DatasetApiService/{method}",
        json={"ownerSlug": OWNER, "datasetSlug": SLUG, **body},
        auth=(srv.username, srv.key),
        allow_redirects=False,
    )


def _signed_url(srv):
    redirect = _rpc(srv, "DownloadDataset")
    assert redirect.status_code == 302
    return redirect.headers["Location"]


# Cloud Storage's answer to an expired signed URL, to the byte (api-facts-2 "Kaggle downloads").
EXPIRED_TOKEN = re.compile(
    r"<Error><Code>ExpiredToken</Code><Message>The provided token has expired\.</Message>"
    r"<Details>Request signature expired at: (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00)</Details></Error>"
)
RULES_NOT_ACCEPTED = {
    "code": 403,
    "message": "You must accept this competition's rules before you'll be able to download files.",
}


# ---------------------------------------------------------------------- authentication


def test_authenticate_with_api_key_sends_basic_auth(api, server):
    server.add_dataset(OWNER, SLUG, {"customers.csv": CSV})

    assert _get_dataset(api).current_version_number == 1
    assert server.count_requests("IntrospectToken") == 0  # the key is used as is, never introspected
    assert server.request_log[-1].headers["Authorization"].startswith("Basic ")


def test_authenticate_with_token_introspects_it_and_sends_bearer(kaggle_env, server):
    kaggle_env.setenv("KAGGLE_API_TOKEN", server.token)
    server.add_dataset(OWNER, SLUG, {"customers.csv": CSV})

    api = _authenticated_api()

    introspect = [r for r in server.request_log if "IntrospectToken" in r.path]
    assert [(r.status, r.body) for r in introspect] == [(200, {"token": server.token})]
    assert api.config_values["username"] == server.username
    assert _get_dataset(api).ref == DATASET
    assert server.request_log[-1].headers["Authorization"] == f"Bearer {server.token}"


def test_unknown_token_is_inactive_so_authentication_gives_up(kaggle_env, server):
    kaggle_env.setenv("KAGGLE_API_TOKEN", "not-a-token")

    with pytest.raises(SystemExit):  # KaggleApi.authenticate prints help and exits when nothing works
        _authenticated_api()

    introspect = [r for r in server.request_log if "IntrospectToken" in r.path]
    assert [r.status for r in introspect] == [200]
    response = requests.post(
        f"{server.url}/api/v1/security.OAuthService/IntrospectToken", json={"token": "not-a-token"}
    )
    assert response.json() == {"active": False}


def test_wrong_key_raises_http_error_401(kaggle_env, server):
    kaggle_env.setenv("KAGGLE_USERNAME", server.username)
    kaggle_env.setenv("KAGGLE_KEY", "wrong-key")
    server.add_dataset(OWNER, SLUG, {"customers.csv": CSV})
    api = _authenticated_api()  # a key is not checked until it is used

    with pytest.raises(requests.HTTPError) as excinfo:
        _get_dataset(api)

    # kagglesdk raises with the JSON body's "message" as the text, not "401 Client Error: ...".
    assert excinfo.value.response.status_code == 401
    assert str(excinfo.value) == "Unauthenticated"
    assert excinfo.value.response.json() == {"code": 401, "message": "Unauthenticated"}


def test_missing_credentials_are_401():
    with KaggleServer(port=0) as srv:
        response = requests.post(f"{srv.url}/api/v1/{GET_DATASET}", json={"ownerSlug": OWNER, "datasetSlug": SLUG})
    assert response.status_code == 401
    assert response.json()["code"] == 401


# ---------------------------------------------------------------------- metadata


def test_get_dataset_reports_current_version_and_files(api, server):
    server.add_dataset(OWNER, SLUG, {"customers.csv": CSV}, title="Customers")

    first = _get_dataset(api)
    assert (first.ref, first.title, first.current_version_number) == (DATASET, "Customers", 1)
    assert first.total_bytes == len(CSV)
    assert [(f.name, f.total_bytes) for f in first.files] == [("customers.csv", len(CSV))]
    assert isinstance(first.last_updated, datetime)

    assert server.bump_version(OWNER, SLUG, {"customers.csv": CSV * 2}) == 2
    second = _get_dataset(api)
    assert second.current_version_number == 2
    assert second.total_bytes == 2 * len(CSV)
    assert second.last_updated > first.last_updated


def test_list_dataset_files(api, server):
    server.add_dataset(OWNER, SLUG, {"customers.csv": CSV, "readme.txt": b"hi"})

    response = api.dataset_list_files(DATASET)

    assert [(f.name, f.total_bytes) for f in response.dataset_files] == [("customers.csv", len(CSV)), ("readme.txt", 2)]
    assert response.next_page_token == ""


def test_unknown_dataset_is_404(api, server, tmp_path):
    with pytest.raises(requests.HTTPError) as excinfo:
        _get_dataset(api, "nobody", "nothing")
    assert excinfo.value.response.status_code == 404
    assert str(excinfo.value) == "Not found"

    with pytest.raises(requests.HTTPError) as excinfo:
        api.dataset_download_files("nobody/nothing", path=str(tmp_path))
    assert excinfo.value.response.status_code == 404


# ---------------------------------------------------------------------- downloads


def test_download_dataset_files_serves_the_zip_through_a_signed_redirect(api, server, tmp_path):
    files = {"customers.csv": CSV, "nested/more.csv": CSV * 3}
    server.add_dataset(OWNER, SLUG, files)

    api.dataset_download_files(DATASET, path=str(tmp_path), quiet=True)

    with zipfile.ZipFile(tmp_path / f"{SLUG}.zip") as archive:
        assert {name: archive.read(name) for name in archive.namelist()} == files
    download = [r for r in server.request_log if "DownloadDataset" in r.path]
    assert [(r.status, r.body) for r in download] == [(302, {"ownerSlug": OWNER, "datasetSlug": SLUG})]
    assert server.downloads == 1


def test_download_of_a_pinned_version_and_unzip(api, server, tmp_path):
    server.add_dataset(OWNER, SLUG, {"customers.csv": b"v1"})
    server.bump_version(OWNER, SLUG, {"customers.csv": b"v2"})

    api.dataset_download_files(f"{DATASET}/1", path=str(tmp_path / "old"), unzip=True)
    api.dataset_download_files(DATASET, path=str(tmp_path / "new"), unzip=True)

    assert (tmp_path / "old" / "customers.csv").read_bytes() == b"v1"
    assert (tmp_path / "new" / "customers.csv").read_bytes() == b"v2"
    bodies = [r.body for r in server.request_log if "DownloadDataset" in r.path]
    assert bodies[0]["datasetVersionNumber"] == 1 and "datasetVersionNumber" not in bodies[1]


def test_single_file_download(api, server, tmp_path):
    server.add_dataset(OWNER, SLUG, {"customers.csv": CSV, "readme.txt": b"hi"})

    api.dataset_download_file(DATASET, "customers.csv", path=str(tmp_path))

    assert (tmp_path / "customers.csv").read_bytes() == CSV


def test_truncated_download_resumes_with_range(api, server, tmp_path, no_backoff):
    # Past the client's first 1 MiB chunk, or the partial chunk is discarded and it resumes from 0.
    payload = random.Random(0).randbytes(CLIENT_CHUNK + 400_000)
    server.add_dataset(OWNER, SLUG, {"big.bin": payload})
    server.truncate_next_download(CLIENT_CHUNK + 100_000)

    api.dataset_download_files(DATASET, path=str(tmp_path), quiet=True)

    with zipfile.ZipFile(tmp_path / f"{SLUG}.zip") as archive:
        assert archive.read("big.bin") == payload
    first, resumed = _signed_gets(server)
    assert (first.status, first.fault) == (200, "truncated")
    assert resumed.status == 206
    assert resumed.headers["Range"] == f"bytes={CLIENT_CHUNK}-"
    assert resumed.headers["If-Range"].startswith('"')  # the ETag, not the date
    assert server.downloads == 2 and len(no_backoff.sleeps) == 1


def test_resume_after_the_object_changed_restarts_from_scratch(api, server, tmp_path, no_backoff):
    size = CLIENT_CHUNK + 200_000
    server.add_dataset(OWNER, SLUG, zip_bytes=b"A" * size)
    server.truncate_next_download(CLIENT_CHUNK + 100_000)
    # While the client backs off, the same version is republished with other bytes: its If-Range
    # (old ETag) no longer matches, so the server must send the whole new object with 200.
    no_backoff.on_sleep = lambda: server.add_dataset(OWNER, SLUG, zip_bytes=b"B" * size)

    api.dataset_download_files(DATASET, path=str(tmp_path), quiet=True)

    assert (tmp_path / f"{SLUG}.zip").read_bytes() == b"B" * size
    resumed = _signed_gets(server)[-1]
    assert (resumed.status, resumed.headers["Range"]) == (200, f"bytes={CLIENT_CHUNK}-")


def test_an_expired_url_mid_download_the_client_gives_up_keeping_the_partial_and_a_new_call_resumes(
    api, server, tmp_path, no_backoff
):
    payload = random.Random(1).randbytes(CLIENT_CHUNK + 400_000)
    server.add_dataset(OWNER, SLUG, {"big.bin": payload})
    server.expire_next_download(CLIENT_CHUNK + 100_000)
    archive = tmp_path / f"{SLUG}.zip"

    # kaggle 2.2.5 resumes against the same signed URL, 5 times, then raises the 400.
    with pytest.raises(requests.HTTPError) as excinfo:
        api.dataset_download_files(DATASET, path=str(tmp_path), quiet=True)
    assert excinfo.value.response.status_code == 400
    assert [(r.status, r.fault) for r in _signed_gets(server)] == [(200, "expired")] + [(400, None)] * 5
    assert archive.stat().st_size == CLIENT_CHUNK and (tmp_path / f"{SLUG}.zip.kaggle-partial").exists()

    # Called again (not forced) it asks Kaggle for a new URL and resumes the partial.
    api.dataset_download_files(DATASET, path=str(tmp_path), quiet=True)
    with zipfile.ZipFile(archive) as bundle:
        assert bundle.read("big.bin") == payload
    resumed = _signed_gets(server)[-1]
    assert (resumed.status, resumed.headers["Range"]) == (206, f"bytes={CLIENT_CHUNK}-")
    assert server.count_requests("DownloadDataset") == 2


def test_rules_not_accepted_reach_the_client_as_kaggles_403_message(api, server, tmp_path):
    server.add_dataset(OWNER, SLUG, {"customers.csv": CSV})
    server.set_access(OWNER, SLUG, rules_accepted=False)

    assert _get_dataset(api).current_version_number == 1
    with pytest.raises(requests.HTTPError) as excinfo:
        api.dataset_download_files(DATASET, path=str(tmp_path))
    assert (excinfo.value.response.status_code, str(excinfo.value)) == (403, RULES_NOT_ACCEPTED["message"])


def test_corrupt_zip_bytes_are_served_as_given(api, server, tmp_path):
    corrupt = b"PK\x03\x04 this is not really a zip archive"
    server.add_dataset(OWNER, SLUG, zip_bytes=corrupt)

    api.dataset_download_files(DATASET, path=str(tmp_path))
    assert (tmp_path / f"{SLUG}.zip").read_bytes() == corrupt

    assert not zipfile.is_zipfile(tmp_path / f"{SLUG}.zip")
    # With unzip=True KaggleApi turns zipfile.BadZipFile into a ValueError.
    with pytest.raises(ValueError, match="not a valid zip file"):
        api.dataset_download_files(DATASET, path=str(tmp_path / "unzipped"), unzip=True)


# ---------------------------------------------------------------------- faults


def test_fail_next_503_twice_then_success(api, server):
    server.add_dataset(OWNER, SLUG, {"customers.csv": CSV})
    server.fail_next(503, count=2)

    statuses = []
    for _ in range(2):
        with pytest.raises(requests.HTTPError) as excinfo:
            _get_dataset(api)
        statuses.append(excinfo.value.response.status_code)
    assert statuses == [503, 503]
    assert _get_dataset(api).current_version_number == 1
    assert server.count_requests("GetDataset") == 3


def test_fail_next_only_hits_matching_paths(api, server, tmp_path):
    server.add_dataset(OWNER, SLUG, {"customers.csv": CSV})
    server.fail_next(429, path_contains="DownloadDataset", headers={"Retry-After": "7"})

    assert _get_dataset(api).current_version_number == 1
    with pytest.raises(requests.HTTPError) as excinfo:
        api.dataset_download_files(DATASET, path=str(tmp_path))
    assert excinfo.value.response.status_code == 429
    assert excinfo.value.response.headers["Retry-After"] == "7"


def test_drop_next_closes_the_connection_without_answer(api, server):
    server.add_dataset(OWNER, SLUG, {"customers.csv": CSV})
    server.drop_next()

    with pytest.raises(requests.ConnectionError):
        _get_dataset(api)

    assert _get_dataset(api).current_version_number == 1
    dropped, answered = server.request_log[-2:]
    assert (dropped.status, dropped.fault) == (None, "dropped")
    assert answered.status == 200


@pytest.mark.parametrize(("status", "retry_after"), [(503, None), (429, 30), (429, None)])
def test_an_outage_answers_every_matching_request_until_its_window_ends(status, retry_after):
    with KaggleServer(port=0) as srv:
        srv.add_dataset(OWNER, SLUG, {"customers.csv": CSV})
        srv.outage(0.5, status, path_contains="GetDataset", retry_after=retry_after)

        during = [_rpc(srv, "GetDataset") for _ in range(6)]  # a window, not a count
        assert {r.status_code for r in during} == {status}
        assert during[0].json() == {"code": status, "message": HTTPStatus(status).phrase}
        assert during[0].headers.get("Retry-After") == (str(retry_after) if retry_after else None)
        assert _rpc(srv, "DownloadDataset").status_code == 302  # other paths answer meanwhile
        time.sleep(0.5)
        assert _rpc(srv, "GetDataset").status_code == 200


def test_an_outage_on_every_path_reaches_the_signed_urls_as_cloud_storage_xml():
    with KaggleServer(port=0) as srv:
        srv.add_dataset(OWNER, SLUG, {"customers.csv": CSV})
        url = _signed_url(srv)
        srv.outage(30, 503)
        assert _rpc(srv, "GetDataset").status_code == 503
        response = requests.get(url)
        assert (response.status_code, response.headers["Content-Type"]) == (503, "application/xml")
        assert response.text.startswith("<Error><Code>")


def test_an_expired_signed_url_gets_cloud_storages_400_expired_token_and_a_new_one_works():
    with KaggleServer(port=0, signed_url_ttl=0) as srv:
        srv.add_dataset(OWNER, SLUG, {"customers.csv": CSV})
        url = _signed_url(srv)
        query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))

        expired = requests.get(url)

        assert (expired.status_code, expired.headers["Content-Type"]) == (400, "application/xml")  # not 403
        [expired_at] = EXPIRED_TOKEN.fullmatch(expired.text).groups()
        issued = datetime.strptime(query["X-Goog-Date"], "%Y%m%dT%H%M%SZ")
        assert expired_at == issued.strftime("%Y-%m-%dT%H:%M:%S+00:00") and query["X-Goog-Expires"] == "0"
        srv.signed_url_ttl = 3600
        assert requests.get(url).status_code == 400  # the old URL stays expired
        assert requests.get(_signed_url(srv)).status_code == 200  # a new DownloadDataset call gives a working URL


def test_expire_next_download_cuts_the_body_then_only_a_new_url_resumes():
    with KaggleServer(port=0) as srv:
        srv.add_dataset(OWNER, SLUG, {"customers.csv": CSV})
        url = _signed_url(srv)
        srv.expire_next_download(10)

        with pytest.raises(requests.exceptions.RequestException):
            _ = requests.get(url).content
        resumed = requests.get(url, headers={"Range": "bytes=10-"})
        assert resumed.status_code == 400 and EXPIRED_TOKEN.fullmatch(resumed.text)
        fresh = requests.get(_signed_url(srv), headers={"Range": "bytes=10-"})
        assert fresh.status_code == 206
        whole = requests.get(_signed_url(srv)).content
        assert fresh.content == whole[10:]
        assert [(r.status, r.fault) for r in _signed_gets(srv)] == [
            (200, "expired"),
            (400, None),
            (206, None),
            (200, None),
        ]


def test_rules_not_accepted_refuse_the_download_and_a_private_dataset_every_call():
    with KaggleServer(port=0) as srv:
        srv.add_dataset(OWNER, SLUG, {"customers.csv": CSV})
        srv.set_access(OWNER, SLUG, rules_accepted=False)
        assert _rpc(srv, "GetDataset").status_code == 200  # the page is public; the files are not
        refused = _rpc(srv, "DownloadDataset")
        assert (refused.status_code, refused.json()) == (403, RULES_NOT_ACCEPTED)

        srv.set_access(OWNER, SLUG, private=True)
        for method in ("GetDataset", "ListDatasetFiles", "DownloadDataset"):
            response = _rpc(srv, method)
            assert (response.status_code, response.json()["code"]) == (403, 403)

        srv.set_access(OWNER, SLUG)
        assert _rpc(srv, "DownloadDataset").status_code == 302


# ---------------------------------------------------------------------- HTTP details


def test_signed_url_headers_ranges_and_signature():
    with KaggleServer(port=0) as srv:
        srv.add_dataset(OWNER, SLUG, {"customers.csv": CSV})
        redirect = requests.post(
            f"{srv.url}/api/v1/datasets.DatasetApiService/DownloadDataset",
            json={"ownerSlug": OWNER, "datasetSlug": SLUG},
            auth=(srv.username, srv.key),
            allow_redirects=False,
        )
        assert redirect.status_code == 302
        url = redirect.headers["Location"]
        assert f"/{SLUG}.zip?" in url and "X-Goog-Signature=" in url

        full = requests.get(url)  # no credentials: the signature is the authorisation
        assert full.status_code == 200
        assert full.headers["Content-Type"] == "application/zip"
        assert int(full.headers["Content-Length"]) == len(full.content)
        assert full.headers["Accept-Ranges"] == "bytes"
        datetime.strptime(full.headers["Last-Modified"], "%a, %d %b %Y %H:%M:%S %Z")  # KaggleApi's format
        etag = full.headers["ETag"]
        assert zipfile.ZipFile(io.BytesIO(full.content)).read("customers.csv") == CSV

        part = requests.get(url, headers={"Range": "bytes=10-", "If-Range": etag})
        assert part.status_code == 206
        assert part.headers["Content-Range"] == f"bytes 10-{len(full.content) - 1}/{len(full.content)}"
        assert part.content == full.content[10:]

        stale = requests.get(url, headers={"Range": "bytes=10-", "If-Range": '"old-etag"'})
        assert (stale.status_code, stale.content) == (200, full.content)

        beyond = requests.get(url, headers={"Range": f"bytes={len(full.content)}-"})
        assert beyond.status_code == 416

        tampered = requests.get(url.replace("X-Goog-Signature=", "X-Goog-Signature=0"))
        assert tampered.status_code == 403
        assert srv.downloads == 5


def test_localhost_is_served_on_both_loopback_families():
    with KaggleServer(port=0) as srv:
        hosts = ["127.0.0.1"]
        if len(srv._httpds) == 2:  # ::1 exists on this host, so "localhost" may resolve to it
            hosts.append("[::1]")
        for host in hosts:
            response = requests.post(f"http://{host}:{srv.port}/api/v1/{GET_DATASET}", json={})
            assert response.status_code == 401
        families = {info[0] for info in socket.getaddrinfo("localhost", srv.port, type=socket.SOCK_STREAM)}
        assert families <= {socket.AF_INET, socket.AF_INET6}
        assert requests.post(f"{srv.url}/api/v1/{GET_DATASET}", json={}).status_code == 401
