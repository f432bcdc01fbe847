"""The local Datadog logs intake answers as the documentation says (raw HTTP, no client)."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
import zlib

import pytest

from etl_assets_tests.servers.datadog_intake import MAX_ENTRY_BYTES, DatadogIntake


@pytest.fixture
def intake():
    with DatadogIntake() as server:
        yield server


def _post(
    intake: DatadogIntake,
    body: bytes,
    key: str | None = "default",
    encoding: str | None = "gzip",
    path: str = "/api/v2/logs",
) -> tuple[int, dict, dict]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["DD-API-KEY"] = intake.api_key if key == "default" else key
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    if encoding:
        headers["Content-Encoding"] = encoding
    request = urllib.request.Request(intake.url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def _logs(*messages: str) -> bytes:
    return json.dumps([{"message": m, "service": "s", "ddsource": "python"} for m in messages]).encode()


def test_accepts_a_gzipped_or_deflated_array_with_202(intake):
    assert _post(intake, _logs("a", "b"))[:2] == (202, {})
    assert _post(intake, _logs("c"), encoding="deflate")[0] == 202
    assert _post(intake, _logs("d"), encoding=None)[0] == 202
    assert [entry["message"] for entry in intake.logs()] == ["a", "b", "c", "d"]
    assert [request.encoding for request in intake.requests] == ["gzip", "deflate", ""]


def test_the_key_is_checked_first_401_missing_403_wrong(intake):
    assert _post(intake, b"not json", key=None)[0] == 401
    status, body, _ = _post(intake, _logs("x"), key="not-the-key")
    assert status == 403 and body["errors"][0]["status"] == "403"
    assert intake.logs() == []


@pytest.mark.parametrize("body", [b"not json", b'{"message": "an object, not an array"}', b'["a string"]'])
def test_a_payload_that_is_not_an_array_of_objects_is_400(intake, body):
    assert _post(intake, body)[0] == 400


def test_an_undecodable_gzip_body_is_400(intake):
    request = urllib.request.Request(
        intake.url + "/api/v2/logs",
        data=b"\x1f\x8bnot gzip",
        method="POST",
        headers={"DD-API-KEY": intake.api_key, "Content-Encoding": "gzip"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400


def test_limits_413_above_5mb_uncompressed_or_1000_entries(intake):
    assert _post(intake, _logs(*["x"] * 1000))[0] == 202
    assert _post(intake, _logs(*["x"] * 1001))[0] == 413
    big = _logs(*["y" * 900_000] * 6)  # ~5.4 MB, gzips to almost nothing: the uncompressed size counts
    status, body, _ = _post(intake, big)
    assert status == 413 and "5MB" in body["errors"][0]["detail"]
    assert len(intake.logs()) == 1000


def test_an_entry_over_1mb_is_accepted_and_truncated(intake):
    assert _post(intake, _logs("small", "z" * 1_500_000))[0] == 202
    (request,) = intake.accepted()
    assert request.truncated == [1]
    small, cut = request.entries
    assert small["message"] == "small"
    assert len(json.dumps(cut, separators=(",", ":")).encode()) <= MAX_ENTRY_BYTES < 1_500_000


def test_scripted_answers_then_normal_service(intake):
    intake.fail_next(429, headers={"X-Ratelimit-Reset": "1"})
    intake.fail_next(503)
    status, _, headers = _post(intake, _logs("a"))
    assert status == 429 and headers["X-Ratelimit-Reset"] == "1"
    assert _post(intake, _logs("a"))[0] == 503
    assert _post(intake, _logs("a"))[0] == 202
    assert intake.statuses() == [429, 503, 202]


def test_other_paths_are_404(intake):
    assert _post(intake, _logs("a"), path="/v1/input")[0] == 404
