"""Ship formatted log lines to CloudWatch Logs, through the `watchtower` library.

watchtower queues the lines and a background thread sends them with put_log_events, in batches
within the API's limits (events and bytes per call, 256 KiB per event: a longer line is cut): every
`batch_size` lines, when the oldest waiting line is `flush_seconds` old, and when logging flushes or
shuts down. What this subclass adds:

- the client: the region from AWS_REGION or AWS_DEFAULT_REGION (settings.aws_region), endpoint
  and credentials from the standard AWS chain, as for the secrets;
- the group and the stream are created on first use only, when a put finds them missing, so a role
  allowed just PutLogEvents works once they exist (watchtower would look the group up, and create
  it, while the handler is built: before any line, in every process that builds it);
- the stream name is taken as it is (watchtower would fill in `{placeholders}`);
- no wait for the sender thread while this thread holds the logging module's lock: Dagster
  re-applies dagster.yaml's handlers with logging.config.dictConfig, which flushes and closes the
  previous ones under that lock, and the sender needs it to log (botocore logs every call): the
  wait would last watchtower's 30 s timeout, twice per handler (and the lines be lost). The lines
  are sent once the lock is free, and the handler is closed, waiting, by logging.shutdown at exit.

Shipping failures never fail the run: watchtower reports them as a WatchtowerWarning on stderr.
"""

from __future__ import annotations

import logging

import watchtower
from botocore.exceptions import ClientError

from etl_assets import settings


class CloudWatchLogsHandler(watchtower.CloudWatchLogHandler):
    def __init__(self, log_group: str, log_stream: str, batch_size: int = 100, flush_seconds: int = 5, client=None):
        if client is None:
            import boto3

            client = boto3.client("logs", region_name=settings.aws_region())
        super().__init__(
            log_group_name=log_group,
            log_stream_name=log_stream.replace("{", "{{").replace("}", "}}"),
            send_interval=flush_seconds,
            max_batch_count=batch_size,
            boto3_client=client,
            create_log_group=False,
        )

    def flush(self) -> None:
        if _holding_the_logging_lock():
            for pending in list(self.queues.values()):
                pending.put(self.FLUSH)  # sent as soon as the lock is free, without waiting here
            return
        super().flush()

    def close(self) -> None:
        if _holding_the_logging_lock():
            self.flush()  # left open: its sender thread keeps it alive until logging.shutdown closes it
            return
        super().close()

    def _idempotent_call(self, method: str, *args, **kwargs) -> None:
        # watchtower creates the stream when a put finds it missing; its group may be missing too.
        if method == "create_log_stream":
            try:
                super()._idempotent_call("create_log_group", logGroupName=self.log_group_name)
            except ClientError:  # e.g. a role not allowed to create groups: the group may exist
                pass
        super()._idempotent_call(method, *args, **kwargs)


def _holding_the_logging_lock() -> bool:
    """Whether this thread holds the logging module's lock (an RLock; dictConfig holds it)."""
    is_owned = getattr(getattr(logging, "_lock", None), "_is_owned", None)
    return bool(is_owned and is_owned())
