"""The remote secret stores SecretsResource reads from: AWS, Vault/OpenBao, Google Secret Manager.

Each backend module holds one small reader class with the same three methods, so the resource
treats them alike (and caches, registers for redaction and reports missing keys in one place):

- `source(name)`: where secret `name` lives, e.g. one JSON secret holding every key, or a secret
  of its own; it is also the cache key, so one bundle is read once for all its keys;
- `fetch(source)`: that source's content, a `dict` of name -> value (a bundle) or a `str`, or None
  when the store says it does not exist; raises PermanentError / TransientError naming the source,
  never quoting a value;
- `where(name)`: for "secret X is missing" messages, what was looked at.

A reader takes its settings from the environment when it is made (once per run: Dagster builds the
resource anew for each run), never from resource or run config, which could redirect it.
"""

from __future__ import annotations

import json
from typing import Protocol

from etl_assets.errors import PermanentError

Content = dict | str | None


class SecretReader(Protocol):
    def source(self, name: str) -> str: ...

    def fetch(self, source: str) -> Content: ...

    def where(self, name: str) -> str: ...


def parse_bundle(text: str, where: str) -> dict:
    """One secret holding every key as a JSON object; the error names the secret, never quotes its text."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        raise PermanentError(f"{where} is not a JSON object of name/value pairs")
    return document
