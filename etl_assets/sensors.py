"""One structured alert per failed run: to the logs, and to ETL_ALERT_WEBHOOK_URL when set."""

import json

import dagster as dg
import requests

from etl_assets import settings
from etl_assets.errors import failure_cause
from etl_assets.logs.redaction import redact
from etl_assets.resources.secrets import SecretsResource
from etl_assets.retrying import RetrySettings, call_with_retries


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


# In-step retries of the alert, short: a sensor tick has a minute, and a failed tick is not retried.
ALERT_RETRY = RetrySettings(attempts=3, max_seconds=15.0, initial_delay=0.5, max_delay=2.0)


def post_alert(webhook: str, alert: dict, retry: RetrySettings = ALERT_RETRY) -> None:
    """POSTed with in-step retries of what errors.classify calls transient (drops, 429, 5xx), never logged:
    requests' messages carry the URL."""

    def send() -> None:
        requests.post(webhook, json=alert, timeout=10).raise_for_status()

    try:
        call_with_retries(send, "posting the alert", retry)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise AlertNotDelivered(f"the alert webhook ({settings.ALERT_WEBHOOK_URL}) answered {status}") from None
    except requests.RequestException as exc:
        raise AlertNotDelivered(
            f"the alert webhook ({settings.ALERT_WEBHOOK_URL}) could not be reached: {type(exc).__name__}"
        ) from None


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
