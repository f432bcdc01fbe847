"""Run logs: one JSON object per line, with secret values redacted, to stderr, a file, CloudWatch and Datadog.

- `redaction`: the values SecretsResource has read, and the filter that replaces them with ***.
- `json_format`: the JSON line layout shared by Dagster's events and our own messages.
- `cloudwatch`: a handler that ships those lines to CloudWatch Logs.
- `datadog`: a handler that ships them to Datadog's HTTP logs intake, in the background.
- `handlers`: the factories dagster.yaml and the job's console logger build their outputs with.
"""
