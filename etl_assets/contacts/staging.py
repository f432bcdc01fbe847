"""Writing prepared chunks into the staging tables, by the fastest path the server allows.

MySQL/MariaDB with `local_infile` on: `LOAD DATA LOCAL INFILE` from a temporary TSV file,
the server's own bulk path. Anywhere else: multi-row INSERTs. Both use INSERT IGNORE
semantics on the staging key, so a chunk retried after a dropped connection (which may or
may not have committed) is written exactly once.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Protocol

import pandas as pd
import sqlalchemy as sa

from etl_assets.contacts.records import join_columns

_TSV_ESCAPES = [("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"), ("\0", "\\0")]
_NEEDS_ESCAPE = r"[\\\t\n\r\x00]"


class StagingWriter(Protocol):
    name: str

    def write(self, conn: sa.Connection, table: str, frame: pd.DataFrame) -> None: ...


def to_load_data_tsv(frame: pd.DataFrame) -> str:
    """Rows in LOAD DATA's default text format: tab-separated, backslash escapes, \\N for NULL."""
    if frame.empty:
        return ""
    escaped = pd.DataFrame(index=frame.index)
    for name in frame.columns:
        values = frame[name].astype("string")
        if values.str.contains(_NEEDS_ESCAPE, regex=True).any():  # rare: escape only then
            for raw, replacement in _TSV_ESCAPES:
                values = values.str.replace(raw, replacement, regex=False)
        escaped[name] = values
    return "\n".join(join_columns(escaped, list(escaped.columns), "\t", "\\N")) + "\n"


class LoadDataWriter:
    name = "LOAD DATA LOCAL INFILE"

    def write(self, conn: sa.Connection, table: str, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        column_list = ", ".join(f"`{name}`" for name in frame.columns)
        fd, path = tempfile.mkstemp(prefix="etl_stage_", suffix=".tsv")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(to_load_data_tsv(frame))
            conn.exec_driver_sql(
                f"LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE `{table}` CHARACTER SET utf8mb4 "
                f"FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({column_list})",
                (path,),
            )
        finally:
            os.unlink(path)


class InsertWriter:
    name = "multi-row INSERT"

    def write(self, conn: sa.Connection, table: str, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        prefix = "INSERT OR IGNORE" if conn.dialect.name == "sqlite" else "INSERT IGNORE"
        quote = conn.dialect.identifier_preparer.quote
        columns = ", ".join(quote(name) for name in frame.columns)
        marks = ", ".join(["%s" if conn.dialect.paramstyle in ("format", "pyformat") else "?"] * len(frame.columns))
        rows = list(frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None))
        conn.exec_driver_sql(f"{prefix} INTO {quote(table)} ({columns}) VALUES ({marks})", rows)


def choose_writer(engine: sa.Engine, log: logging.Logger) -> StagingWriter:
    if engine.dialect.name != "mysql":
        return InsertWriter()
    with engine.connect() as conn:
        enabled = conn.exec_driver_sql("SELECT @@GLOBAL.local_infile").scalar()
    if str(enabled) in ("1", "ON"):
        return LoadDataWriter()
    log.warning("MySQL has local_infile off: loading with multi-row INSERTs, the slower path "
                "(SET GLOBAL local_infile=1 enables the bulk path)")
    return InsertWriter()
