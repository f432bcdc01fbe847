"""Turning raw CSV chunks into clean contact rows: map, normalise, validate, de-duplicate, hash.

Plain functions on pandas frames, vectorised so a million rows cost seconds, and testable
without any server. Row numbers are 1-based data rows (the first row after the header is 1).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.contacts.mapping import EMAIL_FIELD, ColumnMap
from etl_assets.errors import PermanentError

# The addr-spec subset HubSpot accepts: dot-atom local part, dotted host names, a letter TLD.
# A regex rather than a validator library because it runs vectorised over whole chunks.
EMAIL_PATTERN = (
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
)
MAX_EMAIL_LENGTH = 254
MAX_LOCAL_PART = 64
ROW_COLUMN = "source_row"
HASH_COLUMN = "content_hash"


@dataclass
class PreparedChunk:
    valid: pd.DataFrame  # source_row, the mapped fields, content_hash
    rejected: list[dict] = field(default_factory=list)  # source_row, email, raw_values, reason


def check_columns(found: list[str], column_map: ColumnMap) -> None:
    missing = [source for source in column_map.sources if source not in found]
    if missing:
        raise PermanentError(
            f"the CSV lacks the mapped column(s) {missing}; columns found: {found} "
            f"(mapping: {column_map.origin})"
        )


def _normalise(raw: pd.DataFrame, column_map: ColumnMap) -> pd.DataFrame:
    frame = pd.DataFrame(index=raw.index)
    for spec in column_map.fields:
        values = raw[spec.source].astype("string").str.strip()
        if spec.field == EMAIL_FIELD:
            values = values.str.lower()
        frame[spec.field] = values.mask(values == "")
    return frame


def _reasons(frame: pd.DataFrame, column_map: ColumnMap) -> pd.Series:
    """The first problem found in each row, or <NA> for a good row."""
    reasons = pd.Series(pd.NA, index=frame.index, dtype="string")

    def flag(mask: pd.Series, messages: pd.Series | str) -> None:
        nonlocal reasons
        mask = mask.fillna(False).astype(bool) & reasons.isna()
        if mask.any():
            reasons = reasons.mask(mask, messages)

    for spec in column_map.fields:
        values = frame[spec.field]
        if spec.required:
            flag(values.isna(), f"missing required {spec.source!r}")
        too_long = values.str.len() > spec.max_length
        flag(too_long, f"{spec.source!r} longer than {spec.max_length} characters")
        if spec.type == "date":
            parsed = pd.to_datetime(values, format="%Y-%m-%d", errors="coerce")
            flag(values.notna() & parsed.isna(), "invalid date in " + repr(spec.source) + ": " + values.fillna(""))
    email = frame[EMAIL_FIELD]
    bad_email = email.notna() & (
        ~email.str.fullmatch(EMAIL_PATTERN).fillna(False).astype(bool)
        | (email.str.len() > MAX_EMAIL_LENGTH)
        | (email.str.find("@") > MAX_LOCAL_PART)
    )
    flag(bad_email, "invalid email: " + email.fillna(""))
    return reasons


class SeenEmails:
    """The first valid source row of every email so far, across chunks.

    Kept as sorted 64-bit hashes of the emails (16 bytes a row) rather than a dict of strings,
    so memory stays small at millions of rows. The hash only has to hold within one load.
    """

    def __init__(self) -> None:
        self._keys = np.empty(0, dtype=np.uint64)
        self._rows = np.empty(0, dtype=np.int64)

    @staticmethod
    def keys(emails: pd.Series) -> np.ndarray:
        return pd.util.hash_pandas_object(emails, index=False).to_numpy()

    def first_rows(self, keys: np.ndarray) -> np.ndarray:
        """The earlier row for each key, or -1 where the email was not seen before."""
        if not len(self._keys):
            return np.full(len(keys), -1, dtype=np.int64)
        positions = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return np.where(self._keys[positions] == keys, self._rows[positions], -1)

    def add(self, keys: np.ndarray, rows: np.ndarray) -> None:
        all_keys = np.concatenate([self._keys, keys])
        order = np.argsort(all_keys, kind="stable")
        self._keys, self._rows = all_keys[order], np.concatenate([self._rows, rows])[order]


def join_columns(frame: pd.DataFrame, names: list[str], separator: str, null: str) -> list[str]:
    """Each row's values joined by `separator`, NULL written as `null` (Arrow does it in C)."""
    arrays = [pa.array(frame[name], type=pa.large_string()) for name in names]
    joined = pc.binary_join_element_wise(*arrays, pa.scalar(separator, pa.large_string()),
                                         null_handling="replace", null_replacement=null)
    return joined.to_pylist()


def content_hashes(frame: pd.DataFrame, field_names: list[str]) -> list[str]:
    """A stable digest of each row's mapped values, for change detection.

    Field names are part of the digest so a changed mapping counts as a change. NULL and
    the empty string differ (\\x00 marks NULL); \\x1f separates values.
    """
    prefix = ("\x1e".join(field_names) + "\x1e").encode()
    return [hashlib.blake2b(prefix + text.encode(), digest_size=16).hexdigest()
            for text in join_columns(frame, field_names, "\x1f", "\x00")]


def prepare_chunk(raw: pd.DataFrame, column_map: ColumnMap, first_row: int, seen: SeenEmails) -> PreparedChunk:
    """Normalise and validate one chunk; `seen` carries first occurrences across chunks."""
    frame = _normalise(raw, column_map)
    frame.insert(0, ROW_COLUMN, range(first_row, first_row + len(frame)))
    reasons = _reasons(frame, column_map)

    # The first valid occurrence of an email wins; later ones are rejected as duplicates.
    candidates = frame.loc[reasons.isna()]
    keys = SeenEmails.keys(candidates[EMAIL_FIELD])
    first_in_chunk = candidates.groupby(EMAIL_FIELD)[ROW_COLUMN].transform("first").to_numpy()
    earlier = seen.first_rows(keys)
    first_seen = np.where(earlier >= 0, earlier, first_in_chunk)
    is_duplicate = first_seen != candidates[ROW_COLUMN].to_numpy()
    duplicate_of = pd.Series(first_seen[is_duplicate], index=candidates.index[is_duplicate])
    reasons.loc[duplicate_of.index] = "duplicate email, first seen at source row " + duplicate_of.astype("string")
    seen.add(keys[~is_duplicate], candidates[ROW_COLUMN].to_numpy()[~is_duplicate])

    good = reasons.isna()
    valid = frame.loc[good].copy()
    valid[HASH_COLUMN] = content_hashes(valid, column_map.field_names) if len(valid) else []

    bad = ~good
    rejected = [
        {
            ROW_COLUMN: int(row),
            EMAIL_FIELD: None if pd.isna(email) else email,
            "raw_values": json.dumps(raw_values, ensure_ascii=False),
            "reason": reason,
        }
        for row, email, raw_values, reason in zip(
            frame.loc[bad, ROW_COLUMN], frame.loc[bad, EMAIL_FIELD], raw.loc[bad].to_dict("records"), reasons[bad]
        )
    ]
    return PreparedChunk(valid=valid.reset_index(drop=True), rejected=rejected)
