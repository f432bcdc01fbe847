"""Ship formatted log lines to CloudWatch Logs with put_log_events.

Lines are buffered and sent in batches (every `batch_size` lines, when the oldest waiting line
is `flush_seconds` old, and when logging shuts down), so a run does not make one AWS call per
line. Region, endpoint and credentials come from the standard AWS chain, as for the secrets.
Shipping failures are reported on stderr and never fail the run.
"""

from __future__ import annotations

import logging
import os
import sys
import time

# put_log_events limits: 1 MiB per call counting 26 bytes of overhead per event, 256 KiB per event.
_MAX_BATCH_BYTES = 1_048_576
_EVENT_OVERHEAD = 26
_MAX_EVENT_BYTES = 256 * 1024 - _EVENT_OVERHEAD


class CloudWatchLogsHandler(logging.Handler):
    def __init__(self, log_group: str, log_stream: str, batch_size: int = 100, flush_seconds: float = 5.0,
                 client=None):
        super().__init__()
        self.log_group, self.log_stream = log_group, log_stream
        self.batch_size, self.flush_seconds = batch_size, flush_seconds
        self._client = client
        self._pending: list[tuple[int, str]] = []  # (timestamp in ms, message)

    def client(self):
        if self._client is None:
            import boto3  # loads only when shipping is configured

            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            self._client = boto3.client("logs", region_name=region)
        return self._client

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        encoded = message.encode("utf-8")
        if len(encoded) > _MAX_EVENT_BYTES:
            message = encoded[:_MAX_EVENT_BYTES].decode("utf-8", "ignore")
        self._pending.append((int(record.created * 1000), message))
        oldest_age_s = time.time() - self._pending[0][0] / 1000
        if len(self._pending) >= self.batch_size or oldest_age_s >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # also called by logging.shutdown, outside emit
            events, self._pending = sorted(self._pending), []  # CloudWatch wants chronological order
        if not events:
            return
        try:
            for batch in _batches(events):
                try:
                    self._put(batch)
                except self.client().exceptions.ResourceNotFoundException:
                    # Created on first use only, so a role allowed just PutLogEvents works once they exist.
                    self._create_group_and_stream()
                    self._put(batch)
        except Exception as exc:  # never let log shipping fail the run; say so where a person looks
            sys.stderr.write(f"etl_assets: could not ship {len(events)} log lines to CloudWatch Logs "
                             f"{self.log_group}/{self.log_stream}: {type(exc).__name__}: {exc}\n")

    def close(self) -> None:
        # logging.shutdown (process exit) and Dagster's re-configuration close handlers: send the rest.
        self.flush()
        super().close()

    def _put(self, batch: list[tuple[int, str]]) -> None:
        self.client().put_log_events(logGroupName=self.log_group, logStreamName=self.log_stream,
                                     logEvents=[{"timestamp": ts, "message": msg} for ts, msg in batch])

    def _create_group_and_stream(self) -> None:
        client = self.client()
        for create, kwargs in ((client.create_log_group, {"logGroupName": self.log_group}),
                               (client.create_log_stream, {"logGroupName": self.log_group,
                                                           "logStreamName": self.log_stream})):
            try:
                create(**kwargs)
            except client.exceptions.ResourceAlreadyExistsException:
                pass


def _batches(events: list[tuple[int, str]]):
    batch, size = [], 0
    for event in events:
        event_size = len(event[1].encode("utf-8")) + _EVENT_OVERHEAD
        if batch and size + event_size > _MAX_BATCH_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(event)
        size += event_size
    if batch:
        yield batch
