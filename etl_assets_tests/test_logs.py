"""Structured logs: the JSON line format, the redaction filter, the level threshold, the
dagster.yaml handlers as Dagster applies them to a run, and shipping to CloudWatch Logs (watchtower,
against moto)."""

import io
import json
import logging
import time
from pathlib import Path

import boto3
import dagster as dg
import pytest
import yaml
from botocore.config import Config
from watchtower import WatchtowerWarning

from etl_assets.errors import PermanentError, failing_fast
from etl_assets.logs.cloudwatch import CloudWatchLogsHandler
from etl_assets.logs.handlers import LevelThreshold, json_console_logger, log_level
from etl_assets.logs.json_format import JsonFormatter
from etl_assets.logs.redaction import RedactSecrets, register_secret
from etl_assets_tests.conftest import REPO, run_dagster
from etl_assets_tests.resources.test_secrets import aws_env, moto_server  # noqa: F401 (fixtures)


def _capture(*filters: logging.Filter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    for item in filters:
        handler.addFilter(item)
    logger = logging.Logger(f"test-{time.time_ns()}")
    logger.addHandler(handler)
    return logger, stream


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_plain_record_becomes_one_json_line_with_the_error_class():
    logger, stream = _capture()
    try:
        raise ValueError("the reason")
    except ValueError:
        logger.exception("loading failed\nsecond line")
    (line,) = _lines(stream.getvalue())
    assert line["level"] == "ERROR"
    assert line["message"] == "loading failed\nsecond line"
    assert line["event"] == "LOG_MESSAGE"
    assert line["error_class"] == "ValueError" and line["error"] == "the reason"
    assert {"timestamp", "run_id", "job", "step", "asset"} <= set(line)


def test_a_records_exception_is_reported_by_its_root_cause():
    logger, stream = _capture()
    try:
        try:
            raise ConnectionRefusedError("[Errno 111] Connection refused")
        except OSError as exc:
            raise RuntimeError("sync stopped") from exc
    except RuntimeError:
        logger.exception("sync failed")
    (line,) = _lines(stream.getvalue())
    assert line["error_class"] == "ConnectionRefusedError" and line["error"] == "[Errno 111] Connection refused"


def test_known_secrets_are_masked_in_messages_arguments_urls_and_tracebacks():
    secret = "p@ss/w:rd-SECRET-9911"
    register_secret(secret)
    # No RedactSecrets on this handler: the record factory already cleaned the record.
    logger, stream = _capture()
    logger.info("token=%s", secret)
    logger.info("url mysql+pymysql://etl:p%40ss%2Fw%3Ard-SECRET-9911@db/etl")
    try:
        raise RuntimeError(f"server said {secret}")
    except RuntimeError:
        logger.exception("failed")
    logger.handlers[0].setFormatter(logging.Formatter("%(message)s"))  # the traceback, as text formatters print it
    try:
        raise RuntimeError(f"server said {secret}")
    except RuntimeError:
        logger.exception("failed")
    output = stream.getvalue()
    assert "SECRET-9911" not in output
    assert "token=***" in output and "etl:***@db" in output and "server said ***" in output


def test_redaction_filter_cleans_dagster_metadata():
    register_secret("meta-SECRET-4242")
    record = logging.makeLogRecord({"msg": "x", "dagster_meta": {"orig_message": "got meta-SECRET-4242"}})
    RedactSecrets().filter(record)
    assert record.dagster_meta["orig_message"] == "got ***"


def test_short_values_are_not_registered():
    register_secret("abc")
    logger, stream = _capture()
    logger.info("abc stays")
    assert _lines(stream.getvalue())[0]["message"] == "abc stays"


def test_threshold_counts_dagster_events_as_info(monkeypatch):
    monkeypatch.setenv("ETL_LOG_LEVEL", "info")
    threshold = LevelThreshold(log_level())
    event = logging.makeLogRecord({"levelno": logging.DEBUG, "dagster_meta": {"dagster_event": object()}})
    debug = logging.makeLogRecord({"levelno": logging.DEBUG})
    assert threshold.filter(event) and not threshold.filter(debug)
    assert not LevelThreshold(log_level("WARNING")).filter(event)
    monkeypatch.setenv("ETL_LOG_LEVEL", "chatty")
    with pytest.raises(ValueError, match="ETL_LOG_LEVEL must be one of"):
        log_level()


@dg.asset
def counted(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    context.log.info("counting contacts")
    context.log.debug("debug detail")
    return dg.MaterializeResult(metadata={"rows_read": 3, "note": "text is not a count"})


@dg.asset(deps=[counted])
def broken(context: dg.AssetExecutionContext) -> None:
    raise dg.Failure(description="HubSpot rejected the access token (401)")


# A secret that reaches an exception's message; the tests register it before their run.
SECRET_IN_ERROR = "row-SECRET-5150"


@dg.asset(retry_policy=dg.RetryPolicy(max_retries=1, delay=0))
def flaky() -> None:
    raise LookupError(f"row 7 of customers.csv is unreadable (token {SECRET_IN_ERROR})")


@dg.asset(retry_policy=dg.RetryPolicy(max_retries=1, delay=0))
def refused() -> None:
    with failing_fast("refused"):
        raise PermanentError(f"customers.csv is not UTF-8 at byte 42 (token {SECRET_IN_ERROR})")


def run_logged(instance: dg.DagsterInstance, *assets: dg.AssetsDefinition) -> dg.ExecuteInProcessResult:
    """`assets` as one job with the project's JSON console logger, as daily_etl configures it."""
    job = dg.define_asset_job("logged", selection=list(assets), config={"loggers": {"console": {}}})
    defs = dg.Definitions(assets=list(assets), jobs=[job], loggers={"console": json_console_logger})
    return defs.resolve_job_def("logged").execute_in_process(instance=instance, raise_on_error=False)


@pytest.fixture
def logged_instance(clean_env, tmp_path, monkeypatch):
    """An instance with the python_logs of the repo's dagster.yaml, and the log file they write."""
    log_file = tmp_path / "logs" / "etl.jsonl"
    monkeypatch.setenv("ETL_LOG_FILE", str(log_file))
    python_logs = yaml.safe_load((REPO / "dagster.yaml").read_text())["python_logs"]
    with dg.instance_for_test(overrides={"python_logs": python_logs}) as instance:
        yield instance, log_file


def test_dagster_yaml_handlers_put_dagsters_events_and_ours_in_one_format(logged_instance, capfd):
    """The python_logs section of the repo's dagster.yaml, applied by Dagster to a real run."""
    instance, log_file = logged_instance
    result = run_logged(instance, counted, broken)
    assert not result.success

    lines = _lines(log_file.read_text())
    assert lines and all(line["run_id"] == result.run_id and line["job"] == "logged" for line in lines)
    events = {line["event"] for line in lines}
    assert {"STEP_START", "ASSET_MATERIALIZATION", "STEP_FAILURE", "PIPELINE_FAILURE", "LOG_MESSAGE"} <= events
    (ours,) = [line for line in lines if line["message"] == "counting contacts"]
    assert ours["asset"] == "counted" and ours["step"] == "counted" and ours["level"] == "INFO"
    assert not [line for line in lines if line["message"] == "debug detail"]  # ETL_LOG_LEVEL defaults to INFO
    (materialized,) = [line for line in lines if line["event"] == "ASSET_MATERIALIZATION"]
    assert materialized["asset"] == "counted" and materialized["counts"] == {"rows_read": 3}
    (failure,) = [line for line in lines if line["event"] == "STEP_FAILURE"]
    assert failure["asset"] == "broken" and failure["level"] == "ERROR"
    assert failure["error_class"] == "Failure" and "HubSpot rejected the access token" in failure["error"]

    # stderr: the same lines from the job's console logger, JSON only. Found wherever they start on
    # a line: stderr is shared with Dagster and other threads, whose unterminated writes (seen once
    # in a full-suite run) can run into the start of one of ours.
    err = capfd.readouterr().err
    stderr_lines = [
        json.loads(line[line.index('{"timestamp"') :]) for line in err.splitlines() if '{"timestamp"' in line
    ]
    assert {line["event"] for line in stderr_lines} == events


def test_a_step_failing_through_its_retry_policy_logs_the_exception_not_the_retry(logged_instance):
    register_secret(SECRET_IN_ERROR)
    instance, log_file = logged_instance
    assert not run_logged(instance, flaky).success

    text = log_file.read_text()
    failing = [line for line in _lines(text) if line["level"] == "ERROR" or "error" in line]
    assert [line["event"] for line in failing] == ["STEP_UP_FOR_RETRY", "STEP_FAILURE", "PIPELINE_FAILURE"]
    for line in failing:
        assert line["error_class"] == "LookupError"
        assert line["error"] == "row 7 of customers.csv is unreadable (token ***)"
    assert "RetryRequestedFromPolicy" not in text and SECRET_IN_ERROR not in text


def test_a_permanent_error_fails_at_once_with_its_cause_in_the_log_and_the_events_metadata(logged_instance):
    register_secret(SECRET_IN_ERROR)
    instance, log_file = logged_instance
    result = run_logged(instance, refused)

    text = log_file.read_text()
    failing = [line for line in _lines(text) if line["level"] == "ERROR" or "error" in line]
    assert [line["event"] for line in failing] == ["STEP_FAILURE", "PIPELINE_FAILURE"]  # no retry
    for line in failing:
        assert line["error_class"] == "PermanentError"
        assert line["error"] == "customers.csv is not UTF-8 at byte 42 (token ***)"
    assert SECRET_IN_ERROR not in text
    # What the UI shows as the STEP_FAILURE's metadata.
    (event,) = [event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE]
    metadata = event.event_specific_data.user_failure_data.metadata
    assert (metadata["error_class"].value, metadata["error"].value) == ("PermanentError", failing[0]["error"])


@pytest.mark.e2e
def test_dagster_job_execute_logs_the_cause_of_a_failed_step(clean_env, monkeypatch, tmp_path):
    missing = tmp_path / "no-such-column-map.yaml"
    monkeypatch.setenv("ETL_COLUMN_MAP", str(missing))
    result = run_dagster("job", "execute", "-m", "etl_assets", "-j", "daily_etl")
    assert result.returncode != 0

    lines = _lines("\n".join(line for line in result.stderr.splitlines() if line.startswith("{")))
    failures = [line for line in lines if line["event"] == "STEP_FAILURE"]
    assert len(failures) == 1, result.stderr[-6000:]  # once seen failing in CI without its output
    (failure,) = failures
    # the preflight names it before any data moves (contacts_table would have, later)
    assert failure["step"] == "preflight_checks" and failure["error_class"] == "PermanentError"
    assert f"[column map] ETL_COLUMN_MAP: cannot read {missing}: No such file or directory" in failure["error"]
    (run_failure,) = [line for line in lines if line["event"] == "PIPELINE_FAILURE"]
    assert (run_failure["error_class"], run_failure["error"]) == (failure["error_class"], failure["error"])


def test_log_file_and_cloudwatch_handlers_are_no_ops_when_unset(clean_env):
    from etl_assets.logs.handlers import cloudwatch_handler, file_handler

    assert isinstance(file_handler(), logging.NullHandler)
    assert isinstance(cloudwatch_handler(), logging.NullHandler)


def test_cloudwatch_handler_is_off_with_one_warning_when_it_cannot_be_built(clean_env, aws_env, monkeypatch, capfd):
    from etl_assets.logs.handlers import cloudwatch_handler

    monkeypatch.delenv("AWS_REGION")  # and no AWS_DEFAULT_REGION, no config file: no region at all
    monkeypatch.setenv("ETL_CLOUDWATCH_LOG_GROUP", "/etl_assets/no-region")
    assert isinstance(cloudwatch_handler(), logging.NullHandler)
    assert isinstance(cloudwatch_handler(), logging.NullHandler)
    err = capfd.readouterr().err
    assert err.count("etl_assets: log shipping to CloudWatch Logs is off: NoRegionError") == 1


def test_cloudwatch_handler_creates_group_and_stream_and_ships_lines(aws_env):
    group, stream = f"/etl_assets/test-{time.time_ns()}", "host-1/{not a placeholder}"
    handler = CloudWatchLogsHandler(group, stream, batch_size=3)
    handler.setFormatter(JsonFormatter())
    logger = logging.Logger("cloudwatch-test")
    logger.addHandler(handler)
    for number in range(4):  # three lines make a batch, close() sends the rest
        logger.info("line %d", number)
    handler.close()

    logs = boto3.client("logs", region_name="eu-west-1")
    assert [g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]] == [group]
    events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
    assert [json.loads(event["message"])["message"] for event in events] == [f"line {n}" for n in range(4)]

    # A second handler finds the group and stream in place.
    again = CloudWatchLogsHandler(group, stream)
    again.setFormatter(JsonFormatter())
    again.handle(
        logging.makeLogRecord({"name": "etl_assets", "msg": "line 4", "levelno": logging.INFO, "levelname": "INFO"})
    )
    again.flush()
    events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
    assert len(events) == 5
    again.close()


def test_dagster_reapplying_the_handlers_does_not_wait_on_the_sender_thread(aws_env):
    """Dagster re-applies dagster.yaml's handlers with dictConfig, which flushes and closes the old ones
    while holding logging's lock, the lock botocore's logging in the sender thread needs."""
    import logging.config

    group = f"/etl_assets/reapplied-{time.time_ns()}"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "cw": {"()": "etl_assets.logs.handlers.cloudwatch_handler", "log_group": group, "log_stream": "s"}
        },
        "loggers": {"etl_assets_reapplied": {"handlers": ["cw"]}},
    }
    logging.config.dictConfig(config)
    logger = logging.getLogger("etl_assets_reapplied")
    (first,) = logger.handlers
    first.setFormatter(JsonFormatter())
    logger.warning("before the re-application")
    started = time.monotonic()
    logging.config.dictConfig(config)  # closes `first` under the lock
    assert time.monotonic() - started < 5  # watchtower alone waits 2 x 30 s here
    (second,) = logger.handlers
    logger.handlers.clear()
    second.close()
    first.close()  # as logging.shutdown does at exit: now it waits for its lines
    logs = boto3.client("logs", region_name="eu-west-1")
    events = logs.get_log_events(logGroupName=group, logStreamName="s", startFromHead=True)["events"]
    assert [json.loads(event["message"])["message"] for event in events] == ["before the re-application"]


def test_cloudwatch_failures_are_reported_not_raised(aws_env):
    client = boto3.client(
        "logs", region_name="eu-west-1", endpoint_url="http://127.0.0.1:1", config=Config(retries={"max_attempts": 1})
    )
    # Built without a request: the group and stream are looked after when a put needs them.
    handler = CloudWatchLogsHandler("/etl_assets/unreachable", "s", client=client)
    handler.setFormatter(JsonFormatter())
    handler.handle(
        logging.makeLogRecord({"name": "etl_assets", "msg": "lost", "levelno": logging.INFO, "levelname": "INFO"})
    )
    # Sent from watchtower's thread; its warnings go to stderr (pytest records them instead).
    with pytest.warns(WatchtowerWarning, match="Failed to deliver logs: Could not connect to the endpoint URL"):
        handler.flush()
    handler.close()


def test_dagster_yaml_keeps_its_other_settings():
    config = yaml.safe_load(Path(REPO / "dagster.yaml").read_text())
    assert config["telemetry"] == {"enabled": False} and "concurrency" in config
