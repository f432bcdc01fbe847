"""Comparing a load's rows with what `contacts` holds (contacts/known.py)."""

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from etl_assets.contacts import known as known_module
from etl_assets.contacts.known import KnownContacts, read_known
from etl_assets.contacts.loader import ensure_tables
from etl_assets.contacts.mapping import load_column_map
from etl_assets.contacts.records import SeenEmails


def known(pairs: list[tuple[str, str]]) -> KnownContacts:
    """Contacts with ids 10, 20, 30... in the order given."""
    return KnownContacts(
        np.arange(10, 10 * (len(pairs) + 1), 10, dtype=np.int64),
        pa.array([email for email, _ in pairs], pa.string()),
        np.array([h for _, h in pairs], dtype="S32"),
    )


def hashes(*values: str) -> pa.Array:
    return pa.array(list(values), pa.string())


def gone(contacts: KnownContacts) -> list[tuple[int, str]]:
    table = contacts.gone()
    return list(zip(table.column("id").to_pylist(), table.column("email").to_pylist()))


H1, H2, H3 = "1" * 32, "2" * 32, "3" * 32


@pytest.mark.fast
def test_new_and_changed_rows_differ_identical_ones_do_not_and_the_unmet_are_gone():
    contacts = known([("a@x.org", H1), ("b@x.org", H2), ("c@x.org", H3)])
    first = contacts.compare(pa.array(["b@x.org", "new@x.org"]), hashes(H2, H1))
    second = contacts.compare(pa.chunked_array([["a@x.org"]]), pa.chunked_array([[H3]]))  # a changed
    assert first.differs.tolist() == [False, True] and first.ids.tolist() == [20, 0]
    assert second.differs.tolist() == [True] and second.ids.tolist() == [10]
    assert gone(contacts) == [(30, "c@x.org")]


@pytest.mark.fast
def test_many_rows_in_any_order_each_find_their_own_contact():
    """The rows are looked up in key order, not theirs: each answer must still land on its row."""
    emails = [f"person{i}@x.org" for i in range(2_000)]
    contacts = known([(email, f"{i:032x}") for i, email in enumerate(emails)])
    rows = np.random.default_rng(5).permutation(2_500)  # 500 of them new emails
    row_emails = [f"person{i}@x.org" for i in rows]
    row_hashes = [f"{i:032x}" if i % 7 else H1 for i in rows]  # one in seven changed
    comparison = contacts.compare(pa.array(row_emails), hashes(*row_hashes))
    assert comparison.ids.tolist() == [10 * (i + 1) if i < 2_000 else 0 for i in rows]
    assert comparison.differs.tolist() == [bool(i >= 2_000 or i % 7 == 0) for i in rows]
    assert gone(contacts) == []


@pytest.mark.fast
def test_an_email_differing_only_in_case_is_another_contact():
    contacts = known([("a@x.org", H1)])
    comparison = contacts.compare(pa.array(["A@x.org"]), hashes(H1))
    assert comparison.differs.tolist() == [True] and comparison.ids.tolist() == [0]
    assert gone(contacts) == [(10, "a@x.org")]


@pytest.mark.fast
def test_with_nothing_known_every_row_is_new_and_nothing_is_gone():
    contacts = known([])
    comparison = contacts.compare(pa.array(["a@x.org", "b@x.org"]), hashes(H1, H2))
    assert comparison.differs.tolist() == [True, True] and comparison.ids.tolist() == [0, 0]
    assert gone(contacts) == []


@pytest.mark.fast
def test_an_empty_chunk_changes_nothing():
    contacts = known([("a@x.org", H1)])
    assert contacts.compare(pa.array([], pa.string()), hashes()).differs.tolist() == []
    assert gone(contacts) == [(10, "a@x.org")]


@pytest.mark.fast
def test_a_hash_of_another_width_differs_without_shifting_the_others():
    contacts = known([("a@x.org", H1), ("b@x.org", H2)])
    comparison = contacts.compare(pa.array(["a@x.org", "b@x.org"]), hashes("abc", H2))
    assert comparison.differs.tolist() == [True, False] and comparison.ids.tolist() == [10, 20]


@pytest.mark.fast
def test_id_slices_hold_every_known_id_in_ranges_of_the_size_asked():
    contacts = KnownContacts(
        np.array([40, 3, 7, 1000, 8], dtype=np.int64), pa.array(list("abcde")), np.array([H1] * 5, dtype="S32")
    )
    assert contacts.id_slices(2) == [{"low": 3, "high": 8}, {"low": 8, "high": 1000}, {"low": 1000, "high": 1001}]
    assert contacts.id_slices(5) == [{"low": 3, "high": 1001}]
    assert known([]).id_slices(2) == []


@pytest.mark.fast
def test_gone_count_counts_the_known_contacts_no_row_met():
    contacts = known([("a@x.org", H1), ("b@x.org", H2), ("c@x.org", H3)])
    assert contacts.gone_count == 3
    contacts.compare(pa.array(["b@x.org", "new@x.org"]), hashes(H1, H1))
    assert contacts.gone_count == 2 == len(contacts.gone())


@pytest.mark.parametrize("dialect", ["mariadb", "sqlite"])
def test_read_known_returns_every_contact_across_batches_and_gaps_in_ids(dialect, request, tmp_path):
    url = request.getfixturevalue("mariadb_url") if dialect == "mariadb" else f"sqlite:///{tmp_path / 'k.sqlite'}"
    engine = sa.create_engine(url)
    ensure_tables(engine, load_column_map(None))
    rows = [
        {"id": 1 + 97 * i, "source_row": i, "email": f"p{i}@x.org", "first_name": "P", "last_name": "Q",
         "content_hash": f"{i:032x}", "first_loaded_at": "2026-01-01", "updated_at": "2026-01-01"}
        for i in range(50)
    ]  # fmt: skip
    rows[3]["content_hash"] = "abc"  # edited by hand: its batch is read one hash at a time, still aligned
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO contacts ({', '.join(rows[0])}) VALUES (:{', :'.join(rows[0])})"), rows)
    contacts = read_known(engine, span=50)  # spans of one, none or two contacts, read 3 at a time
    assert contacts.ids.tolist() == [row["id"] for row in rows]
    assert contacts.emails.to_pylist() == [row["email"] for row in rows]
    assert contacts.hashes.tolist() == [row["content_hash"].encode() for row in rows]
    # Each email found again, as its own contact (the keys were made span by span).
    found = contacts.compare(pa.array([row["email"] for row in reversed(rows)]), hashes(*[H1] * len(rows)))
    assert found.ids.tolist() == [row["id"] for row in reversed(rows)] and contacts.gone_count == 0
    engine.dispose()


@pytest.mark.fast
def test_a_span_read_in_any_order_is_put_in_id_order_each_id_with_its_own_email_and_hash():
    """GROUP_CONCAT promises no order: the spans are joined as they come, so each must be sorted."""
    lines = ["30\t" + H3 + "\tc@x.org", "10\t" + H1 + "\ta@x.org", "20\t" + H2 + "\tb@x.org"]
    ids, emails, span_hashes, keys = known_module._parse_span(3, "\n".join(lines))
    assert ids.tolist() == [10, 20, 30] and emails.to_pylist() == ["a@x.org", "b@x.org", "c@x.org"]
    assert span_hashes.tolist() == [H1.encode(), H2.encode(), H3.encode()]
    assert keys.tolist() == SeenEmails.keys(emails).tolist()


def test_an_email_with_a_tab_written_by_hand_fails_the_read_instead_of_shifting_fields(mariadb_url):
    """The loader never stores one (the email pattern admits no whitespace), but a table edited by hand
    may: the bulk read must refuse it rather than pair an id with the wrong email or hash."""
    engine = sa.create_engine(mariadb_url)
    ensure_tables(engine, load_column_map(None))
    row = {"id": 1, "source_row": 1, "email": "a\tb@x.org", "first_name": "P", "last_name": "Q",
           "content_hash": "0" * 32, "first_loaded_at": "2026-01-01", "updated_at": "2026-01-01"}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO contacts ({', '.join(row)}) VALUES (:{', :'.join(row)})"), row)
    with pytest.raises(RuntimeError, match="malformed or missing rows"):
        read_known(engine)
    engine.dispose()
