"""What `contacts` holds before a load, so that only new and changed rows travel to the server.

A daily load mostly repeats the last one: staging every row again and comparing in the database
costs more than the first load did. Instead the load reads each contact's email and content hash
(about 60 bytes a row, in bulk), compares every prepared row here, and stages only the new and
changed ones; the emails it never met are the contacts the source lost.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from etl_assets.contacts.mapping import EMAIL_FIELD
from etl_assets.contacts.records import HASH_COLUMN, SeenEmails
from etl_assets.contacts.schema import CONTACTS
from etl_assets.contacts.staging import character_data

HASH_WIDTH = 32  # hex characters of records.content_hashes
# Ids per bulk read, so at most as many contacts: with 254-character emails about 9 MB of one result
# value, under the server's default 16 MB max_allowed_packet.
READ_SPAN = 30_000
# Bulk reads at once. Measured on 1M contacts (2 cores): 2.5 s on one connection, 1.8 s on two, 1.4 s on three.
READ_CONNECTIONS = 3


@dataclass(frozen=True)
class Comparison:
    """A chunk's rows against `contacts`: which differ, and the id of the contact each would change."""

    differs: np.ndarray  # bool per row: new, or changed content
    ids: np.ndarray  # int64 per row: the contact's id, 0 for a new email


class KnownContacts:
    """Ids, emails and content hashes of `contacts`; compares the rows of a load with them and
    remembers which known contacts the load met."""

    def __init__(self, ids: np.ndarray, emails: pa.Array, hashes: np.ndarray, keys: np.ndarray | None = None) -> None:
        self.ids = ids  # int64
        self.emails = emails  # Arrow strings: a third of the memory of Python's
        self.hashes = hashes  # dtype S32; all three aligned
        keys = SeenEmails.keys(emails) if keys is None else keys  # the emails' SeenEmails.keys
        self._order = np.argsort(keys, kind="stable")
        self._keys = keys[self._order]
        self.met = np.zeros(len(emails), dtype=bool)

    def __len__(self) -> int:
        return len(self.emails)

    def compare(
        self, emails: pa.Array | pa.ChunkedArray, hashes: pa.Array | pa.ChunkedArray, keys: np.ndarray | None = None
    ) -> Comparison:
        """The rows' comparison with the known contacts; rows of known emails count as met. `keys`:
        the emails' SeenEmails.keys where the caller has them (prepare_chunk does), else computed."""
        differs, ids = np.ones(len(emails), dtype=bool), np.zeros(len(emails), dtype=np.int64)
        if not len(self._keys):
            return Comparison(differs, ids)
        keys = SeenEmails.keys(emails) if keys is None else keys
        # Searched in key order, each search starts near the last one's place in the known keys:
        # 0.11 s instead of 0.43 s for 1M rows against 1M contacts (cache misses, not comparisons).
        by_key = np.argsort(keys)
        slots = np.empty(len(keys), dtype=np.intp)
        slots[by_key] = np.minimum(np.searchsorted(self._keys, keys[by_key]), len(self._keys) - 1)
        candidates = np.flatnonzero(self._keys[slots] == keys)
        positions = self._order[slots[candidates]]
        # The 64-bit key only narrows the search: the email itself decides, so no collision merges two.
        same = pc.equal(self.emails.take(pa.array(positions)), _flat(emails).take(pa.array(candidates)))
        same_email = same.to_numpy(zero_copy_only=False).astype(bool)
        rows, positions = candidates[same_email], positions[same_email]
        self.met[positions] = True
        differs[rows] = self.hashes[positions] != _hash_bytes(hashes)[rows]
        ids[rows] = self.ids[positions]
        return Comparison(differs, ids)

    @property
    def gone_count(self) -> int:
        """How many known contacts no row met so far."""
        return int(self.met.size - np.count_nonzero(self.met))

    def id_slices(self, contacts_each: int) -> list[dict[str, int]]:
        """Ranges of the known ids, `low` to `high` (excluded), of `contacts_each` contacts each
        (the last fewer), together holding every known id."""
        ids = np.sort(self.ids)
        lows = ids[::contacts_each]
        highs = np.append(lows[1:], ids[-1:] + 1)
        return [{"low": low, "high": high} for low, high in zip(lows.tolist(), highs.tolist())]

    def gone(self) -> pa.Table:
        """Ids and emails of the known contacts no row met: those the source lost."""
        unmet = ~self.met
        return pa.table({"id": pa.array(self.ids[unmet]), EMAIL_FIELD: self.emails.filter(pa.array(unmet))})


def _flat(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _hash_bytes(hashes: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Content hashes as fixed-width bytes: straight from Arrow's character buffer when every one
    has the usual width (no Python object a hash), else one by one."""
    hashes = _flat(hashes)
    lengths = pc.min_max(pc.binary_length(hashes)).as_py()
    if hashes.null_count or lengths != {"min": HASH_WIDTH, "max": HASH_WIDTH}:
        return np.array(hashes.to_pylist(), dtype=f"S{HASH_WIDTH}")
    return np.frombuffer(character_data(hashes), dtype=f"S{HASH_WIDTH}")


def read_known(engine: sa.Engine, span: int = READ_SPAN, connections: int = READ_CONNECTIONS) -> KnownContacts:
    """Every contact's id, email and content hash, in id order.

    On MySQL the ids are read in spans of `span` ids, each span's rows as one long value
    (GROUP_CONCAT: about 8x faster than a row at a time through the driver), on `connections`
    connections at once: the server builds one value while the client takes the last apart.
    Not one snapshot: the caller holds the load lock, and only a load writes `contacts`.
    """
    with engine.connect() as conn:
        if conn.dialect.name != "mysql":
            rows = conn.execute(sa.text(f"SELECT id, {EMAIL_FIELD}, {HASH_COLUMN} FROM {CONTACTS} ORDER BY id")).all()
            return KnownContacts(
                np.array([row[0] for row in rows], dtype=np.int64),
                pa.array([row[1] for row in rows], pa.string()),
                np.array([row[2] for row in rows], dtype=f"S{HASH_WIDTH}"),
            )
        low, high = conn.execute(sa.text(f"SELECT MIN(id), MAX(id) FROM {CONTACTS}")).one()
    if low is None:
        return KnownContacts(*_no_contacts())
    starts = range(int(low), int(high) + 1, span)
    with ThreadPoolExecutor(connections, thread_name_prefix="known") as pool:
        # Taken apart here, as they arrive: Arrow's allocator keeps what a thread freed for that
        # thread, so parsing in the readers held ~40 MB more at the peak.
        spans = [_parse_span(*texts) for texts in pool.map(lambda start: _fetch_span(engine, start, span), starts)]
    # The spans hold ascending ranges of ids, each in id order: joined, they are in id order.
    known = KnownContacts(
        np.concatenate([part.ids for part in spans]),
        pa.concat_arrays([part.emails for part in spans]),
        np.concatenate([part.hashes for part in spans]),
        np.concatenate([part.keys for part in spans]),
    )
    del spans
    pa.default_memory_pool().release_unused()  # else kept for this thread, while the load prepares in another
    return known


class _Span(NamedTuple):
    """Known contacts of a range of ids, in id order; `keys` their emails' SeenEmails.keys."""

    ids: np.ndarray
    emails: pa.Array
    hashes: np.ndarray
    keys: np.ndarray


def _no_contacts() -> _Span:
    empty_ids = np.empty(0, dtype=np.int64)
    return _Span(empty_ids, pa.array([], pa.string()), np.empty(0, dtype=f"S{HASH_WIDTH}"), empty_ids)


def _fetch_span(engine: sa.Engine, start: int, span: int) -> tuple[int, str | None]:
    """How many contacts have ids in [start, start + span), and their lines "id TAB hash TAB email"."""
    with engine.connect() as conn:
        conn.exec_driver_sql("SET SESSION group_concat_max_len = 1073741824")
        count, text = conn.execute(
            sa.text(
                f"SELECT COUNT(*), GROUP_CONCAT(CONCAT_WS('\\t', id, {HASH_COLUMN}, {EMAIL_FIELD}) SEPARATOR '\\n') "
                f"FROM {CONTACTS} WHERE id >= :start AND id < :end"
            ),
            {"start": start, "end": start + span},
        ).one()
    return int(count), text


def _parse_span(count: int, text: str | None) -> _Span:
    """The contacts of a span's lines, in id order. Their email keys are made here too, while the
    server builds the next spans, not all at the end (0.2 s of work for 1M contacts; the read's
    median went from 1.27 s to 1.20 s)."""
    if not count:
        return _no_contacts()
    # "id TAB hash TAB email" a line: emails hold no tab or line break (records.EMAIL_PATTERN
    # admits none), so the splits are exact.
    lines = pc.split_pattern(pa.array([text], pa.large_string()), "\n").flatten()
    fields = pc.split_pattern(lines, "\t")
    if len(fields) != count or pc.min(pc.list_value_length(fields)).as_py() != 3:
        raise RuntimeError(f"read {len(fields)} malformed or missing rows for {count} contacts")
    ids = pc.cast(pc.list_element(fields, 0), pa.int64()).to_numpy()
    order = np.argsort(ids)  # GROUP_CONCAT without ORDER BY promises no order
    emails = pc.cast(pc.list_element(fields, 2), pa.string()).take(pa.array(order))
    return _Span(ids[order], emails, _hash_bytes(pc.list_element(fields, 1))[order], SeenEmails.keys(emails))
