import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest

from etl_assets.contacts.mapping import load_column_map
from etl_assets.contacts.records import SeenEmails, content_hashes, prepare_chunk

pytestmark = pytest.mark.fast  # pure: no service, no subprocess

COLUMN_MAP = load_column_map(None)
COLUMNS = [
    "Index",
    "Customer Id",
    "First Name",
    "Last Name",
    "Company",
    "City",
    "Country",
    "Phone 1",
    "Phone 2",
    "Email",
    "Subscription Date",
    "Website",
]


def prepared(table: pa.Table, first_row: int, seen: SeenEmails | None = None):
    return prepare_chunk(table, COLUMN_MAP, np.arange(first_row, first_row + len(table)), seen or SeenEmails())


def rows(*overrides: dict) -> pa.Table:
    base = dict(
        zip(
            COLUMNS,
            [
                "1",
                "ABC",
                "Ada",
                "Lovelace",
                "Acme",
                "Berlin",
                "Germany",
                "+1",
                "",
                "ada@example.com",
                "2021-01-02",
                "https://acme.example.com",
            ],
        )
    )
    return pa.Table.from_pylist([{**base, **override} for override in overrides])


def test_values_are_trimmed_emails_lowercased_and_blanks_become_null():
    chunk = prepared(rows({"Email": "  Ada@Example.COM ", "First Name": " Ada  "}), 1)
    [record] = chunk.valid.to_pylist()
    assert record["email"] == "ada@example.com"
    assert record["first_name"] == "Ada"
    assert record["phone_2"] is None
    assert record["source_row"] == 1


@pytest.mark.parametrize(
    ("override", "code", "reason"),
    [
        ({"Email": "ada at example.com"}, "invalid_email", "invalid email: ada at example.com"),
        ({"Email": "ada@example"}, "invalid_email", "invalid email: ada@example"),
        ({"Email": "ada..x@example.com"}, "invalid_email", "invalid email"),
        ({"Email": "   "}, "missing_required", "missing required 'Email'"),
        ({"Subscription Date": "02/01/2021"}, "invalid_date", "invalid date in 'Subscription Date': 02/01/2021"),
        ({"Subscription Date": "2021-02-30"}, "invalid_date", "invalid date in 'Subscription Date': 2021-02-30"),
        ({"Subscription Date": "2021-1-2"}, "invalid_date", "invalid date in 'Subscription Date': 2021-1-2"),
        ({"Company": "x" * 256}, "too_long", "'Company' longer than 255 characters"),
        ({"Company": "é" * 256}, "too_long", "'Company' longer than 255 characters"),
    ],
)
def test_invalid_rows_are_rejected_with_code_reason_and_raw_values(override, code, reason):
    chunk = prepared(rows({}, override), 10)
    assert len(chunk.valid) == 1
    [rejected] = chunk.rejected
    assert rejected["source_row"] == 11
    assert rejected["reason_code"] == code
    assert rejected["reason"].startswith(reason)
    raw = json.loads(rejected["raw_values"])
    assert raw[next(iter(override))] == next(iter(override.values()))


def test_a_value_of_many_bytes_but_few_enough_characters_is_not_too_long():
    """Length limits count characters: 255 two-byte characters (510 bytes) fit 255."""
    chunk = prepared(rows({"Company": "é" * 255}, {"Company": "x" * 255 + "€"}), 1)
    assert chunk.valid.column("company").to_pylist() == ["é" * 255]
    assert [item["reason_code"] for item in chunk.rejected] == ["too_long"]


def test_duplicates_keep_the_first_valid_row_within_and_across_chunks():
    seen = SeenEmails()
    first = prepared(
        rows(
            {"Email": "a@example.com"},
            {"Email": "b@example.com", "Subscription Date": "bad"},
            {"Email": "A@EXAMPLE.com"},
        ),
        1,
        seen,
    )
    assert first.valid.column("email").to_pylist() == ["a@example.com"]
    reasons = {item["source_row"]: (item["reason_code"], item["reason"]) for item in first.rejected}
    assert reasons[3] == ("duplicate", "duplicate email, first seen at source row 1")
    second = prepared(rows({"Email": "b@example.com"}, {"Email": "a@example.com"}), 4, seen)
    # b@ at row 2 was invalid, so row 4 is its first valid occurrence.
    assert second.valid.column("email").to_pylist() == ["b@example.com"]
    assert second.rejected[0]["reason"] == "duplicate email, first seen at source row 1"


def test_the_email_keys_of_a_chunk_are_those_of_its_valid_rows_in_order():
    """What the comparison with the known contacts takes instead of hashing the emails again."""
    chunk = prepared(
        rows(
            {"Email": "c@example.com"},
            {"Email": "b@example.com", "Subscription Date": "bad"},
            {"Email": "C@example.com"},
            {"Email": "a@example.com"},
        ),
        1,
    )
    assert chunk.valid.column("email").to_pylist() == ["c@example.com", "a@example.com"]
    assert chunk.email_keys.tolist() == SeenEmails.keys(chunk.valid.column("email")).tolist()


@pytest.mark.parametrize("spread", [1, -(1 << 22)], ids=["small-keys", "negative-keys-sharing-filter-bits"])
def test_seen_emails_find_the_first_row_across_many_runs(spread):
    """Chunks of keys with repeats within and across chunks, against a plain dict; a tiny run cap
    so that runs are merged, capped and searched side by side. Spread out, the 300 keys fall on
    four of the filter's bits: the runs, not the filter, must decide."""
    seen, reference = SeenEmails(), {}
    seen.RUN_CAP = 40
    generator = np.random.default_rng(3)
    first_row = 1
    for size in [7, 1, 13, 30, 30, 2, 50, 9, 25, 64, 3, 17] * 3:
        keys = generator.integers(0, 300, size) * spread
        rows = np.arange(first_row, first_row + size)
        expected = []
        for key, row in zip(keys.tolist(), rows.tolist()):
            expected.append(reference.setdefault(key, row))
        assert seen.claim(keys, rows).tolist() == expected
        first_row += size
    sizes = [len(run_keys) for run_keys, _ in seen._runs]
    assert sum(sizes) == len(reference) and max(sizes) <= 40 and len(sizes) > 3


def test_content_hash_is_stable_and_sensitive():
    frame = pa.table({"email": ["a@x.com", "a@x.com", "a@x.com"], "name": ["Ann", None, ""]})
    hashes = content_hashes(frame, ["email", "name"]).to_pylist()
    # The documented recipe, pinned: a change here resyncs every contact to HubSpot.
    assert hashes[0] == hashlib.blake2b(b"email\x1ename\x1ea@x.com\x1fAnn", digest_size=16).hexdigest()
    assert hashes[0] == "d18510b94662029c92bfb7ee06379e01"
    assert len(set(hashes)) == 3  # NULL and "" differ
    assert content_hashes(frame, ["email", "name"]).to_pylist() == hashes
    assert content_hashes(frame.rename_columns(["email", "first"]), ["email", "first"])[0].as_py() != hashes[0]


def test_hash_does_not_depend_on_row_position_or_chunking():
    data = rows({"Email": "a@example.com"}, {"Email": "b@example.com"})
    whole = prepared(data, 1).valid.to_pandas().set_index("email")["content_hash"]
    later = prepared(data.slice(1), 99).valid
    assert later.column("content_hash")[0].as_py() == whole["b@example.com"]
