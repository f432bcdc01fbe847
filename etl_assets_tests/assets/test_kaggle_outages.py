"""Kaggle as it fails in production: outages that last longer than the in-step retries, signed
download URLs that expire mid-download, and 403 for rules not accepted or a private dataset."""

import contextlib
import io
import random
import threading
import time

import dagster as dg
import pytest

from etl_assets_tests.assets.test_assets import count, failure_message, materialization, run_daily_etl
from etl_assets_tests.conftest import SAMPLE_CSV, SHORT_RETRIES, run_dagster

CLIENT_CHUNK = 1024 * 1024  # KaggleApi.download_file writes whole 1 MiB chunks: a resume starts at one
SIGNED = "/signed/"


def when_first_fails(server, path: str, action) -> threading.Thread:
    """Call `action` as soon as the server has failed a request on `path` (before any retry of it)."""

    def watch() -> None:
        while not any(path in r.path and r.fault == "injected" for r in server.request_log):
            time.sleep(0.01)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.e2e
@pytest.mark.parametrize(("status", "retry_after"), [(503, None), (429, 1)])
def test_an_outage_longer_than_the_in_step_retries_is_ridden_out_by_step_retries(
    pipeline_env, mariadb_url, kaggle_server, monkeypatch, status, retry_after
):
    # The step RetryPolicy is built when the definitions load, so the run loads them in a
    # `dagster job execute` process that sees these settings (as a run worker would).
    for name, value in SHORT_RETRIES.items():
        monkeypatch.setenv(name, value)
    # The outage starts with the run's first call (the CLI takes seconds to start) and lasts 4 s:
    # longer than the in-step retries (~1 s), shorter than the step retries' delays (8-14 s in all).
    kaggle_server.fail_next(
        status, path_contains="GetDataset", headers={"Retry-After": str(retry_after)} if retry_after else None
    )
    watcher = when_first_fails(
        kaggle_server,
        "GetDataset",
        lambda: kaggle_server.outage(4, status, path_contains="GetDataset", retry_after=retry_after),
    )

    result = run_dagster("job", "execute", "-m", "etl_assets", "-j", "daily_etl", env=pipeline_env)
    watcher.join(timeout=5)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs()
        retries = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert len(retries) >= 1 and {event.step_key for event in retries} == {"kaggle_dataset"}
    failed = [r for r in kaggle_server.request_log if "GetDataset" in r.path and r.status == status]
    assert len(failed) >= 2  # the first call and its in-step retry, at least
    assert count(mariadb_url, "SELECT COUNT(*) FROM contacts") == 988


@pytest.fixture
def instant_client_backoff(monkeypatch):
    """KaggleApi.download_file sleeps 2-32 s between its retries of one URL; the tests need not."""
    with contextlib.redirect_stdout(io.StringIO()):  # `import kaggle` authenticates and prints
        from kaggle.api import kaggle_api_extended

    class InstantClock:
        def sleep(self, seconds: float) -> None:
            pass

        def __getattr__(self, name):
            return getattr(time, name)

    monkeypatch.setattr(kaggle_api_extended, "time", InstantClock())


def test_a_url_expiring_mid_download_is_refreshed_and_the_download_resumed(
    pipeline_env, mariadb_url, kaggle_server, instant_client_backoff, tmp_path
):
    # Over one client chunk, so the part before the cut is kept; the padding is not a CSV, never extracted.
    padding = random.Random(7).randbytes(CLIENT_CHUNK + 400_000)
    files = {"customers-1000.csv": SAMPLE_CSV.read_bytes(), "padding.bin": padding}
    kaggle_server.add_dataset("datablist", "customers", files)
    kaggle_server.expire_next_download(CLIENT_CHUNK + 100_000)

    result = run_daily_etl()

    assert result.success
    gets = [r for r in kaggle_server.request_log if r.method == "GET" and r.path.startswith(SIGNED)]
    # The client resumes on the expired URL 5 times (400 ExpiredToken) and gives up; asked again, Kaggle
    # redirects to a new URL (the client opens it, 200) on which the client resumes the partial (206).
    assert [(r.status, r.fault) for r in gets] == [(200, "expired")] + [(400, None)] * 5 + [(200, None), (206, None)]
    assert gets[-1].headers["Range"] == f"bytes={CLIENT_CHUNK}-"
    assert gets[-1].path.split("?")[0] != gets[0].path.split("?")[0]
    assert kaggle_server.count_requests("DownloadDataset") == 2 and kaggle_server.downloads == 8
    assert materialization(result, "kaggle_dataset")["downloaded"] is True  # extracted: the zip's CRCs held
    assert count(mariadb_url, "SELECT COUNT(*) FROM contacts") == 988
    assert not list((tmp_path / "etl_data").rglob(".download-*"))


@pytest.mark.parametrize("access", [{"rules_accepted": False}, {"private": True}])
def test_a_403_names_the_dataset_and_what_to_do_and_is_not_retried(pipeline_env, kaggle_server, access):
    kaggle_server.set_access("datablist", "customers", **access)

    result = run_daily_etl()

    assert not result.success
    assert (
        "Kaggle refused access (403) to dataset datablist/customers: accept the dataset's rules on kaggle.com "
        "with the account of KAGGLE_USERNAME/KAGGLE_API_TOKEN (rules cannot be accepted through the API), "
        "or check that the account can see a private dataset"
    ) in failure_message(result)
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert kaggle_server.count_requests("DownloadDataset") == (1 if "rules_accepted" in access else 0)
    assert kaggle_server.downloads == 0
