"""One structured alert per failed run: to the logs, and to ETL_ALERT_WEBHOOK_URL when set."""

import json

import dagster as dg
import requests

from etl_assets import settings
from etl_assets.errors import failure_cause
from etl_assets.logs.redaction import redact
from etl_assets.resources.secrets import SecretsResource


def failure_alert(context: dg.RunFailureSensorContext) -> dict:
    """Job, run id, the failing steps and each one's root cause (class: message), as one flat JSON-able dict."""
    run = context.dagster_run
    failed_steps = [event.step_key for event in context.get_step_failure_events() if event.step_key]
    step_errors = [
        f"{event.step_key}: {cause[0]}: {cause[1]}"
        for event in context.get_step_failure_events()
        if (cause := failure_cause(event.event_specific_data))
    ]
    detail = "; ".join(step_errors) or redact(context.failure_event.message or "")
    return {
        "alert": "dagster_run_failed",
        "job": run.job_name,
        "run_id": run.run_id,
        "failed_steps": failed_steps,
        "error": detail[:2000],
        "text": f":red_circle: {run.job_name} run {run.run_id[:8]} failed"
                f"{' in ' + ', '.join(failed_steps) if failed_steps else ''}: {detail[:500]}",
    }


class AlertNotDelivered(Exception):
    """The webhook refused or could not be reached; said without its URL, itself a credential."""


def post_alert(webhook: str, alert: dict) -> None:
    try:
        response = requests.post(webhook, json=alert, timeout=10)
    except requests.RequestException as exc:
        raise AlertNotDelivered(f"the alert webhook ({settings.ALERT_WEBHOOK_URL}) could not be reached: "
                                f"{type(exc).__name__}") from None
    if not response.ok:
        raise AlertNotDelivered(f"the alert webhook ({settings.ALERT_WEBHOOK_URL}) answered {response.status_code}")


@dg.run_failure_sensor(
    name="run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Logs one JSON alert per failed run and POSTs it (Slack-compatible `text`) to the "
                "webhook in the secret ETL_ALERT_WEBHOOK_URL when set.",
)
def run_failure_alert(context: dg.RunFailureSensorContext, secrets: SecretsResource) -> None:
    alert = failure_alert(context)
    context.log.error(json.dumps(alert))
    # A Slack webhook URL is a credential: read like one (and so masked in this process's logs).
    webhook = secrets.get(settings.ALERT_WEBHOOK_URL)
    if webhook:
        post_alert(webhook, alert)
