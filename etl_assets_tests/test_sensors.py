"""The run-failure sensor: one alert per failed run, logged and POSTed to a local webhook."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
import sqlalchemy as sa

from etl_assets.definitions import defs
from etl_assets.logs.redaction import register_secret
from etl_assets.resources.secrets import SecretsResource
from etl_assets.sensors import AlertNotDelivered, failure_alert, post_alert, run_failure_alert
from etl_assets_tests.conftest import MARIADB_ADMIN_URL
from etl_assets_tests.test_logs import SECRET_IN_ERROR, flaky, refused, run_logged


def tick(instance: dg.DagsterInstance, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources={"secrets": SecretsResource()}
    )
    return run_failure_alert.evaluate_tick(context)


def test_one_alert_per_failed_run_to_log_and_webhook(clean_env, monkeypatch, webhook, tmp_path):
    url, received = webhook.url, webhook.received
    monkeypatch.setenv("ETL_ALERT_WEBHOOK_URL", url)
    # A refused login: permanent, the run fails without step retries (a server down would be retried).
    monkeypatch.setenv(
        "ETL_DATABASE_URL",
        sa.make_url(MARIADB_ADMIN_URL)
        .set(username="etl_nobody", password="pw", database="etl")
        .render_as_string(hide_password=False),
    )
    monkeypatch.setenv("ETL_RETRY_ATTEMPTS", "1")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        cursor = tick(instance, None).cursor  # the first tick only sets the cursor
        job = defs.resolve_job_def("daily_etl")
        failed = job.execute_in_process(instance=instance, raise_on_error=False)
        assert not failed.success
        cursor = tick(instance, cursor).cursor
        assert len(received) == 1
        alert = received[0]
        assert alert["job"] == "daily_etl" and alert["run_id"] == failed.run_id
        assert alert["failed_steps"] == ["preflight_checks"]  # it stopped the run before contacts_table
        assert (
            alert["error"].startswith("preflight_checks: PermanentError: ")
            and "cannot connect to the database" in alert["error"]
        )
        assert ":pw@" not in alert["error"]
        assert alert["text"].startswith(":red_circle: daily_etl run ")
        tick(instance, cursor)
        assert len(received) == 1  # the same failure is not alerted twice


@pytest.mark.parametrize(
    "asset, cause",
    [
        (flaky, "LookupError: row 7 of customers.csv is unreadable (token ***)"),  # through its RetryPolicy
        (refused, "PermanentError: customers.csv is not UTF-8 at byte 42 (token ***)"),  # failing_fast
    ],
)
def test_the_alert_names_the_root_cause_redacted(clean_env, asset, cause):
    register_secret(SECRET_IN_ERROR)
    with dg.instance_for_test() as instance:
        result = run_logged(instance, asset)
        (failure,) = [event for event in result.all_events if event.event_type == dg.DagsterEventType.RUN_FAILURE]
        context = dg.build_run_status_sensor_context(
            sensor_name=run_failure_alert.name,
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(result.run_id),
        ).for_run_failure()
        alert = failure_alert(context)
    step = asset.key.to_user_string()
    assert alert["error"] == f"{step}: {cause}"
    assert alert["text"].endswith(f"failed in {step}: {step}: {cause}")
    assert "RetryRequestedFromPolicy" not in json.dumps(alert) and SECRET_IN_ERROR not in json.dumps(alert)


@pytest.mark.parametrize("status", [500, None])
def test_an_undelivered_alert_fails_the_tick_without_showing_the_webhook_url(status):
    """The URL is a credential (Slack's carries its token in the path): never in a tick's error."""

    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_port
    if status is None:  # nothing listens any more: unreachable
        server.shutdown()
        server.server_close()
    url = f"http://127.0.0.1:{port}/services/T0/B0/webhook-SECRET-5151"
    try:
        with pytest.raises(AlertNotDelivered) as caught:
            post_alert(url, {"text": "x"})
    finally:
        if status is not None:
            server.shutdown()
    message = str(caught.value)
    assert "ETL_ALERT_WEBHOOK_URL" in message and (
        "answered 500" in message if status else "could not be reached" in message
    )
    assert "webhook-SECRET" not in message and str(port) not in message
    assert caught.value.__cause__ is None and (caught.value.__context__ is None or caught.value.__suppress_context__)
