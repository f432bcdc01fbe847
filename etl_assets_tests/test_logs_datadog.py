"""Run logs shipped to Datadog's HTTP logs intake, through the real datadog-api-client, against
the local intake of etl_assets_tests/servers/datadog_intake.py (its limits and answers)."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from etl_assets.logs.datadog import (
    MAX_BATCH_BYTES,
    MAX_ENTRY_BYTES,
    TRUNCATED_MARK,
    DatadogLogsHandler,
    fit_entry,
    intake_url,
    serialized_size,
)
from etl_assets.logs.handlers import datadog_handler
from etl_assets.logs.json_format import JsonFormatter
from etl_assets_tests.conftest import REPO, run_dagster
from etl_assets_tests.servers.datadog_intake import DatadogIntake
from etl_assets_tests.test_logs import counted, run_logged


@pytest.fixture
def datadog_intake():
    with DatadogIntake(api_key=f"dd-test-{uuid.uuid4().hex}") as intake:
        yield intake


def _handler(url: str, api_key: str, **options) -> DatadogLogsHandler:
    # Short waits so that the retry tests take a second, not the production backoff.
    options = {"backoff_seconds": 0.05, "max_backoff_seconds": 0.2, "close_timeout": 10.0, **options}
    handler = DatadogLogsHandler(api_key, url, **options)
    handler.setFormatter(JsonFormatter())
    return handler


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.Logger(f"datadog-test-{time.time_ns()}")
    logger.addHandler(handler)
    return logger


def _record(message: str, **meta) -> logging.LogRecord:
    return logging.makeLogRecord({"msg": message, "levelno": logging.INFO, "levelname": "INFO", "dagster_meta": meta})


def _warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Datadog" in line and "etl_assets:" in line]


def _wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# where the lines go


def test_the_site_picks_the_intake_and_a_url_overrides_it():
    assert intake_url() == "https://http-intake.logs.datadoghq.com"
    assert intake_url("datadoghq.eu") == "https://http-intake.logs.datadoghq.eu"
    assert intake_url("US5.datadoghq.com ") == "https://http-intake.logs.us5.datadoghq.com"
    # A site newer than the client library still works: we build the URL, not the client.
    assert intake_url("ap9.datadoghq.com") == "https://http-intake.logs.ap9.datadoghq.com"
    assert intake_url("datadoghq.com", "http://127.0.0.1:8282/api/v2/logs") == "http://127.0.0.1:8282"
    assert intake_url(None, "https://relay.internal/datadog/") == "https://relay.internal/datadog"
    for bad in ("https://app.datadoghq.com", "datadog hq"):
        with pytest.raises(ValueError, match="DD_SITE must be a Datadog site"):
            intake_url(bad)


def test_no_key_no_shipping_and_a_bad_setting_is_one_warning(clean_env, monkeypatch, capfd):
    assert isinstance(datadog_handler(), logging.NullHandler)
    monkeypatch.setenv("ETL_DATADOG_API_KEY", "dd-key-with-bad-site-1234")
    monkeypatch.setenv("DD_SITE", "app.datadoghq.com/logs")
    assert isinstance(datadog_handler(), logging.NullHandler)
    assert isinstance(datadog_handler(), logging.NullHandler)
    (warning,) = _warnings(capfd.readouterr().err)
    assert "DD_SITE must be a Datadog site" in warning and "dd-key-with-bad-site" not in warning


def test_the_key_comes_from_the_secrets_backend(clean_env, monkeypatch, tmp_path, datadog_intake):
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "ETL_DATADOG_API_KEY").write_text(datadog_intake.api_key + "\n")  # as `echo` writes it
    monkeypatch.setenv("ETL_SECRETS_BACKEND", "files")
    monkeypatch.setenv("ETL_SECRETS_DIR", str(secrets_dir))
    monkeypatch.setenv("ETL_DATADOG_LOGS_URL", datadog_intake.logs_url)
    handler = datadog_handler()
    assert isinstance(handler, DatadogLogsHandler)
    handler.setFormatter(JsonFormatter())
    _logger(handler).info("hello from the files backend")
    handler.close()
    assert datadog_intake.statuses() == [202]
    (entry,) = datadog_intake.logs()
    assert json.loads(entry["message"])["message"] == "hello from the files backend"
    # Read through SecretsResource, so registered with redaction like every secret.
    stream = io.StringIO()
    logger = _logger(logging.StreamHandler(stream))
    logger.info("key=%s", datadog_intake.api_key)
    assert datadog_intake.api_key not in stream.getvalue()


# what is sent


def test_entries_carry_service_source_hostname_and_the_runs_tags(datadog_intake):
    handler = _handler(datadog_intake.url, datadog_intake.api_key, hostname="etl-host-1")
    run_id = str(uuid.uuid4())
    handler.handle(_record("syncing", run_id=run_id, job_name="daily_etl", step_key="hubspot_contacts"))
    handler.handle(_record("outside a run"))
    handler.close()
    inside, outside = datadog_intake.logs()
    assert inside["service"] == "etl_assets" and inside["ddsource"] == "python" and inside["hostname"] == "etl-host-1"
    assert inside["ddtags"] == f"run_id:{run_id},job:daily_etl,step:hubspot_contacts,asset:hubspot_contacts"
    line = json.loads(inside["message"])  # the JSON line the file and CloudWatch get
    assert (line["run_id"], line["job"], line["asset"], line["message"]) == (
        run_id,
        "daily_etl",
        "hubspot_contacts",
        "syncing",
    )
    assert "ddtags" not in outside and json.loads(outside["message"])["run_id"] is None
    assert all(
        request.encoding == "gzip" and request.raw_bytes < len(request.body) for request in datadog_intake.requests
    )


def test_2500_lines_are_three_requests_of_at_most_1000(datadog_intake):
    handler = _handler(datadog_intake.url, datadog_intake.api_key, flush_seconds=60)
    logger = _logger(handler)
    for number in range(2500):
        logger.info("line %d", number)
    handler.close()
    assert datadog_intake.statuses() == [202, 202, 202]
    assert [len(request.entries) for request in datadog_intake.requests] == [1000, 1000, 500]
    messages = [json.loads(entry["message"])["message"] for entry in datadog_intake.logs()]
    assert messages == [f"line {n}" for n in range(2500)]  # in order, none lost


def test_full_batches_leave_at_once_the_rest_at_the_flush_interval(datadog_intake):
    handler = _handler(datadog_intake.url, datadog_intake.api_key, flush_seconds=1.0)
    logger = _logger(handler)
    for number in range(1003):
        logger.info("line %d", number)
    deadline = time.monotonic() + 10
    while len(datadog_intake.logs()) < 1003 and time.monotonic() < deadline:  # no close: the thread sends
        time.sleep(0.05)
    assert [len(request.entries) for request in datadog_intake.requests] == [1000, 3]
    handler.close()


def test_a_batch_is_split_by_its_uncompressed_size(datadog_intake):
    handler = _handler(datadog_intake.url, datadog_intake.api_key, flush_seconds=60)
    logger = _logger(handler)
    for number in range(12):  # ~10.8 MB in all: more than two requests' worth
        logger.info("%02d %s", number, "b" * 900_000)
    handler.close()
    statuses = datadog_intake.statuses()
    assert set(statuses) == {202} and len(statuses) == 3  # 5 + 5 + 2 lines of ~0.9 MB
    assert all(len(request.body) <= MAX_BATCH_BYTES for request in datadog_intake.requests)
    assert [json.loads(e["message"])["message"][:2] for e in datadog_intake.logs()] == [f"{n:02d}" for n in range(12)]


def test_a_2mb_line_is_truncated_by_us_and_accepted(datadog_intake):
    handler = _handler(datadog_intake.url, datadog_intake.api_key)
    logger = _logger(handler)
    logger.info("big %s", "q" * 2_000_000)
    logger.info("small after it")
    handler.close()
    (request,) = datadog_intake.accepted()
    assert request.truncated == []  # we cut it, so the intake did not have to
    big, small = request.entries
    assert big["message"].startswith('{"timestamp"') and big["message"].endswith(TRUNCATED_MARK)
    assert serialized_size(big) <= MAX_ENTRY_BYTES
    assert json.loads(small["message"])["message"] == "small after it"


@pytest.mark.parametrize("text", ["é" * 700_000, "\U0001f600" * 300_000, '"\\' * 400_000])
def test_truncation_counts_escaped_bytes_and_keeps_whole_characters(text):
    entry = fit_entry({"message": text, "service": "etl_assets"})
    assert MAX_ENTRY_BYTES - 12 <= serialized_size(entry) <= MAX_ENTRY_BYTES  # as much kept as fits
    kept = entry["message"][: -len(TRUNCATED_MARK)]
    assert text.startswith(kept)
    json.dumps(entry).encode("utf-8")  # no lone surrogate: encodable


# answers


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_retryable_answers_are_retried_then_shipped(datadog_intake, status, capfd):
    datadog_intake.fail_next(status, count=2)
    handler = _handler(datadog_intake.url, datadog_intake.api_key)
    _logger(handler).info("retried")
    handler.close()
    assert datadog_intake.statuses() == [status, status, 202]
    assert len(datadog_intake.logs()) == 1
    assert not _warnings(capfd.readouterr().err)


def test_429_then_503_then_success_honours_the_rate_limit_reset(datadog_intake, capfd):
    datadog_intake.fail_next(429, headers={"X-Ratelimit-Reset": "1"})
    datadog_intake.fail_next(503)
    handler = _handler(datadog_intake.url, datadog_intake.api_key, max_backoff_seconds=2.0)
    _logger(handler).info("after a rate limit")
    started = time.monotonic()
    handler.close()
    assert datadog_intake.statuses() == [429, 503, 202]
    assert time.monotonic() - started >= 1.0  # waited as told
    assert not _warnings(capfd.readouterr().err)


def test_retries_are_bounded_and_an_outage_is_one_warning(datadog_intake, capfd):
    datadog_intake.fail_next(503, count=4)
    handler = _handler(datadog_intake.url, datadog_intake.api_key, max_attempts=3)
    logger = _logger(handler)
    logger.info("lost 1")
    handler.flush()
    assert datadog_intake.statuses() == [503, 503, 503]  # 3 attempts, then the batch is dropped
    logger.info("lost 2")
    handler.flush()
    assert datadog_intake.statuses()[3:] == [503]  # still failing: one attempt per batch, no retries
    (warning,) = _warnings(capfd.readouterr().err)
    assert "could not ship 1 log lines to Datadog" in warning and "503" in warning
    # The intake recovers: shipping resumes; a later outage is retried and reported again.
    logger.info("shipped")
    handler.flush()
    assert datadog_intake.statuses()[4:] == [202]
    assert [json.loads(e["message"])["message"] for e in datadog_intake.logs()] == ["shipped"]
    assert not _warnings(capfd.readouterr().err)
    datadog_intake.fail_next(503, count=3)
    logger.info("lost 3")
    handler.close()
    assert datadog_intake.statuses()[5:] == [503, 503, 503]
    assert len(_warnings(capfd.readouterr().err)) == 1


def test_dagsters_logging_reconfiguration_mid_send_neither_hangs_nor_loses_lines(datadog_intake, capfd):
    """Dagster runs logging.config.dictConfig for every log manager it builds: that closes our
    handler while holding logging's module lock, perhaps while the sender thread is retrying."""
    datadog_intake.fail_next(503, count=2)
    handler = _handler(
        datadog_intake.url, datadog_intake.api_key, flush_seconds=0.05, backoff_seconds=0.3, max_backoff_seconds=1.0
    )
    logger = _logger(handler)
    logger.info("in flight")
    _wait_for(lambda: datadog_intake.statuses())  # the thread got its first 503 and waits to retry
    logger.info("still queued")
    started = time.monotonic()
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    assert time.monotonic() - started < 5
    logger.info("after the re-configuration")  # the closed handler still takes lines, as Dagster uses it
    handler.close()
    messages = sorted(json.loads(entry["message"])["message"] for entry in datadog_intake.logs())
    assert messages == ["after the re-configuration", "in flight", "still queued"]
    assert datadog_intake.statuses()[:2] == [503, 503] and not _warnings(capfd.readouterr().err)


def test_closing_under_loggings_lock_does_not_wait_for_the_thread_that_needs_it(datadog_intake):
    """dictConfig closes handlers while holding logging's module lock; the sender thread finishing
    its request needs that lock when urllib3 logs the answer after a cache reset. Waiting for the
    thread there would stall every re-configuration; its batch is sent once the lock is free."""
    handler = _handler(datadog_intake.url, datadog_intake.api_key, flush_seconds=0.05)
    logger = _logger(handler)
    datadog_intake.hold_answers()
    logger.info("in flight")
    _wait_for(lambda: datadog_intake.waiting == 1)
    logger.info("still queued")
    with logging._lock:  # what dictConfig holds while it closes the handlers (private, no public handle)
        logging.getLogger("urllib3").setLevel(logging.NOTSET)  # clears the level caches, as dictConfig can
        datadog_intake.release_answers()  # the thread gets its 202, then needs the lock to log it
        started = time.monotonic()
        handler.close()
        closing = time.monotonic() - started
    assert closing < 2
    _wait_for(lambda: len(datadog_intake.logs()) == 2)
    assert sorted(json.loads(entry["message"])["message"] for entry in datadog_intake.logs()) == [
        "in flight",
        "still queued",
    ]


def test_a_process_exits_only_after_the_batch_a_closed_handler_left_in_flight(datadog_intake):
    script = f"""
import logging
from etl_assets.logs.datadog import DatadogLogsHandler
handler = DatadogLogsHandler({datadog_intake.api_key!r}, {datadog_intake.url!r}, flush_seconds=0.05)
logger = logging.Logger("exiting")
logger.addHandler(handler)
logger.info("in flight at exit")
while not handler._thread or handler._pending:  # the sender thread has taken the line
    pass
handler.close()  # returns at once; the exit hook waits for the thread
"""
    datadog_intake.hold_answers()
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        _wait_for(lambda: datadog_intake.waiting == 1)
        time.sleep(1)
        assert child.poll() is None  # waiting for its answer, not gone with the line
        datadog_intake.release_answers()
        assert child.wait(timeout=20) == 0
    finally:
        child.kill()
    assert [entry["message"] for entry in datadog_intake.logs()] == ["in flight at exit"]


def test_a_bad_key_is_one_warning_and_shipping_stops(datadog_intake, capfd):
    bad_key = f"dd-BAD-KEY-{uuid.uuid4().hex[:8]}"
    handler = _handler(datadog_intake.url, bad_key)
    logger = _logger(handler)
    for number in range(5):
        logger.info("line %d", number)
        handler.flush()
    handler.close()
    again = _handler(datadog_intake.url, bad_key)  # Dagster rebuilds its handlers: still off, silent
    _logger(again).info("more")
    again.close()
    assert datadog_intake.statuses() == [403]
    (warning,) = _warnings(capfd.readouterr().err)
    assert "403" in warning and "ETL_DATADOG_API_KEY" in warning and bad_key not in warning


def test_an_unreachable_intake_is_one_warning(capfd):
    url = f"http://127.0.0.1:{_free_port()}"
    handler = _handler(url, "dd-unreachable-key-0000", max_attempts=3)
    logger = _logger(handler)
    for number in range(3):
        logger.info("line %d", number)
        handler.flush()
    handler.close()
    (warning,) = _warnings(capfd.readouterr().err)
    assert f"could not ship 1 log lines to Datadog ({url})" in warning
    assert "dd-unreachable-key" not in warning


def test_a_full_buffer_drops_the_oldest_lines(capfd):
    url = f"http://127.0.0.1:{_free_port()}"
    handler = _handler(url, "dd-buffer-key-0000", max_buffer_lines=10, flush_seconds=60, max_attempts=1)
    logger = _logger(handler)
    for number in range(25):
        logger.info("line %d", number)
    handler.close()
    (warning,) = _warnings(capfd.readouterr().err)
    assert "could not ship 25 log lines" in warning  # 15 dropped from the buffer, 10 refused


# in runs


@pytest.fixture
def datadog_instance(clean_env, monkeypatch, datadog_intake):
    """An instance with the repo's dagster.yaml python_logs, shipping to the local intake."""
    monkeypatch.setenv("ETL_DATADOG_LOGS_URL", datadog_intake.logs_url)
    python_logs = yaml.safe_load((REPO / "dagster.yaml").read_text())["python_logs"]
    with dg.instance_for_test(overrides={"python_logs": python_logs}) as instance:
        yield instance


def test_a_refused_key_is_one_warning_and_the_run_succeeds(datadog_instance, datadog_intake, monkeypatch, capfd):
    monkeypatch.setenv("ETL_DATADOG_API_KEY", f"dd-REFUSED-{uuid.uuid4().hex[:8]}")
    result = run_logged(datadog_instance, counted)
    assert result.success
    _wait_for(lambda: datadog_intake.statuses())  # the sender thread's first batch
    time.sleep(1)
    assert datadog_intake.statuses() == [403]
    (warning,) = _warnings(capfd.readouterr().err)
    assert "403" in warning and "dd-REFUSED" not in warning


def test_an_in_process_runs_lines_arrive_tagged(datadog_instance, datadog_intake, monkeypatch):
    monkeypatch.setenv("ETL_DATADOG_API_KEY", datadog_intake.api_key)
    result = run_logged(datadog_instance, counted)
    assert result.success
    # The last lines leave with the sender thread's next flush (5 s), or at exit.
    _wait_for(lambda: any('"PIPELINE_SUCCESS"' in entry["message"] for entry in datadog_intake.logs()))
    entries = datadog_intake.logs()
    lines = [json.loads(entry["message"]) for entry in entries]
    assert {line["event"] for line in lines} >= {"STEP_START", "ASSET_MATERIALIZATION", "PIPELINE_SUCCESS"}
    assert all(f"run_id:{result.run_id}" in entry["ddtags"].split(",") for entry in entries)
    (ours,) = [entry for entry, line in zip(entries, lines) if line["message"] == "counting contacts"]
    assert {"job:logged", "step:counted", "asset:counted"} <= set(ours["ddtags"].split(","))


@pytest.mark.e2e
def test_a_daily_etl_runs_lines_arrive_at_the_intake_with_run_tags(hubspot_env, datadog_intake, monkeypatch):
    """`dagster job execute` with the repo's dagster.yaml: every process of the run ships its lines."""
    monkeypatch.setenv("ETL_DATADOG_API_KEY", datadog_intake.api_key)
    monkeypatch.setenv("ETL_DATADOG_LOGS_URL", datadog_intake.logs_url)
    shutil.copy(REPO / "dagster.yaml", Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml")
    result = run_dagster("job", "execute", "-m", "etl_assets", "-j", "daily_etl")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not _warnings(result.stderr)

    assert set(datadog_intake.statuses()) == {202}
    entries = datadog_intake.logs()
    lines = [json.loads(entry["message"]) for entry in entries]
    (run_id,) = {line["run_id"] for line in lines}
    assert all(
        entry["service"] == "etl_assets"
        and f"run_id:{run_id}" in entry["ddtags"].split(",")
        and "job:daily_etl" in entry["ddtags"].split(",")
        for entry in entries
    )
    materialized = {line["asset"] for line in lines if line["event"] == "ASSET_MATERIALIZATION"}
    assert {"kaggle_dataset", "contacts_table", "hubspot_contacts"} <= materialized
    for entry, line in zip(entries, lines):
        if line["asset"]:
            assert f"asset:{line['asset']}" in entry["ddtags"].split(",")
    assert "PIPELINE_SUCCESS" in {line["event"] for line in lines}

    # Every line stderr shows (the console logger, from every process of the run) arrived, the
    # last ones (sent at each process's exit) included.
    def key(line: dict) -> tuple:
        return line["event"], line["step"], line["message"]  # a record per output: timestamps may differ

    stderr_lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert len(stderr_lines) > 20
    missing = {key(line) for line in stderr_lines} - {key(line) for line in lines}
    assert not missing, sorted(missing)
