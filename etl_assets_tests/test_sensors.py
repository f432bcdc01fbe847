"""The run-failure sensor: one alert per failed run, logged and POSTed to a local webhook."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from etl_assets.definitions import defs
from etl_assets.sensors import run_failure_alert


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def tick(instance: dg.DagsterInstance, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    return run_failure_alert.evaluate_tick(context)


def test_one_alert_per_failed_run_to_log_and_webhook(clean_env, monkeypatch, webhook, tmp_path):
    url, received = webhook
    monkeypatch.setenv("ETL_ALERT_WEBHOOK_URL", url)
    monkeypatch.setenv("ETL_DATABASE_URL", "mysql+pymysql://etl:pw@127.0.0.1:1/etl")
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
        assert alert["failed_steps"] == ["contacts_table"]
        assert "cannot connect to the database" in alert["error"] and ":pw@" not in alert["error"]
        assert alert["text"].startswith(":red_circle: daily_etl run ")
        tick(instance, cursor)
        assert len(received) == 1  # the same failure is not alerted twice
