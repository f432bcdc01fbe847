"""Writing prepared chunks into the staging tables, by the fastest path the server allows.

MySQL/MariaDB with `local_infile` on: `LOAD DATA LOCAL INFILE` from a temporary TSV file,
the server's own bulk path, on a StagingConnection, which sends the server that file and no
other. Anywhere else: multi-row INSERTs. Both use INSERT IGNORE semantics on the staging
key, so a chunk retried after a dropped connection (which may or may not have committed) is
written exactly once.

Each writer splits its work in two: `encode` (CPU only, so the loader can run it for the next
chunk while the server ingests this one) and `write` (the database round trip).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from pymysql.connections import Connection, MySQLResult
from pymysql.err import MySQLError
from pymysql.protocol import LoadLocalPacketWrapper

from etl_assets.errors import PermanentError

# Backslash escapes LOAD DATA reads back. Arrow's CSV writer refuses tabs and line ends in
# unquoted values, and refuses the double quote unless it quotes every string value: it does
# that (and LOAD DATA, told values may be enclosed in ", undoes it) only for chunks holding one.
_TSV_ESCAPES = [("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"), ("\0", "\\0")]
_QUOTE = b'"'
_TSV = {
    quoting: pacsv.WriteOptions(
        include_header=False, delimiter="\t", quoting_style=quoting, null_string="\\N", eol="\n"
    )
    for quoting in ("none", "needed")
}


@dataclass
class EncodedRows:
    columns: list[str]
    count: int
    payload: list  # TSV pieces for LOAD DATA, row tuples for INSERT

    @classmethod
    def joined(cls, parts: list[EncodedRows]) -> EncodedRows:
        """One statement's worth of rows from several encoded chunks of the same columns."""
        return cls(
            parts[0].columns, sum(part.count for part in parts), [piece for part in parts for piece in part.payload]
        )


class StagingWriter(Protocol):
    name: str

    def encode(self, rows: pa.Table) -> EncodedRows: ...

    def write(self, conn: sa.Connection, table: str, rows: EncodedRows) -> None: ...


def character_data(strings: pa.Array | pa.ChunkedArray) -> bytes:
    """All of a string array's values back to back: Arrow keeps them so, in one buffer."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    _validity, offset_buffer, data = strings.buffers()
    if data is None:  # Arrow may leave it out when there are no characters at all
        return b""
    offset_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    offsets = np.frombuffer(offset_buffer, dtype=offset_type)[strings.offset : strings.offset + len(strings) + 1]
    return data.to_pybytes()[offsets[0] : offsets[-1]]


def to_load_data_tsv(rows: pa.Table) -> bytes:
    """Rows as LOAD DATA text: tab-separated, backslash escapes, \\N for NULL, and values in
    double quotes only in a chunk where some value holds one."""
    if not rows.num_rows:
        return b""
    columns, quoting = [], "none"
    for column in rows.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            data = character_data(column)
            for raw, replacement in _TSV_ESCAPES:
                if raw.encode() in data:  # rare: a byte search over the whole column decides
                    column = pc.replace_substring(column, raw, replacement)
            if _QUOTE in data:
                quoting = "needed"
        columns.append(column)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(pa.table(columns, names=rows.column_names), sink, _TSV[quoting])
    return sink.getvalue().to_pybytes()


class StagingConnection(Connection):
    """A PyMySQL connection with LOAD DATA LOCAL on that sends only the file LoadDataWriter named.

    PyMySQL alone sends whatever file a server's LOCAL INFILE request names: a rogue or
    intercepting server could ask for any file the run can read.
    """

    local_file: str | None = None  # set by LoadDataWriter while its statement runs

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs, local_infile=True)

    def check_local_file(self, requested: bytes) -> None:
        """Refuse a LOCAL INFILE request for any file but the one named."""
        if self.local_file is None or requested != self.local_file.encode(self.encoding):
            name = requested.decode(errors="replace")
            raise PermanentError(
                f"the database server asked for the local file {name!r}, which the loader "
                "did not name; refused (a rogue or intercepting server?)"
            )

    def _read_query_result(self, unbuffered: bool = False) -> int:
        # PyMySQL's own (1.1), with a result that checks the file name: PyMySQL has no hook for it.
        self._result = None
        result = _OneFileResult(self)
        if unbuffered:
            result.init_unbuffered_query()
        else:
            result.read()
        self._result = result
        if result.server_status is not None:
            self.server_status = result.server_status
        return result.affected_rows


class _OneFileResult(MySQLResult):
    connection: StagingConnection

    def _read_load_local_packet(self, first_packet) -> None:
        conn = self.connection
        try:
            conn.check_local_file(LoadLocalPacketWrapper(first_packet).filename)
        except PermanentError:
            # Answer with an empty file, as PyMySQL does for a file it cannot open, so the
            # session stays in step with the server.
            conn.write_packet(b"")
            with contextlib.suppress(MySQLError):
                conn._read_packet()
            raise
        super()._read_load_local_packet(first_packet)


@contextlib.contextmanager
def _sending(conn: sa.Connection, path: str) -> Iterator[None]:
    """Let a StagingConnection send `path` to the server while the block runs."""
    dbapi: Any = conn.connection.dbapi_connection  # a StagingConnection (see DatabaseResource.staging_engine)
    dbapi.local_file = path
    try:
        yield
    finally:
        dbapi.local_file = None


class LoadDataWriter:
    name = "LOAD DATA LOCAL INFILE"

    def encode(self, rows: pa.Table) -> EncodedRows:
        return EncodedRows(rows.column_names, rows.num_rows, [to_load_data_tsv(rows)])

    def write(self, conn: sa.Connection, table: str, rows: EncodedRows) -> None:
        if not rows.count:
            return
        column_list = ", ".join(f"`{name}`" for name in rows.columns)
        fd, path = tempfile.mkstemp(prefix="etl_stage_", suffix=".tsv")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.writelines(rows.payload)
            with _sending(conn, path):
                conn.exec_driver_sql(
                    f"LOAD DATA LOCAL INFILE %s IGNORE INTO TABLE `{table}` CHARACTER SET utf8mb4 "
                    f"FIELDS TERMINATED BY '\\t' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '\\\\' "
                    f"LINES TERMINATED BY '\\n' ({column_list})",
                    (path,),
                )
        finally:
            os.unlink(path)


class InsertWriter:
    name = "multi-row INSERT"

    def encode(self, rows: pa.Table) -> EncodedRows:
        return EncodedRows(
            rows.column_names, rows.num_rows, list(zip(*(column.to_pylist() for column in rows.columns)))
        )

    def write(self, conn: sa.Connection, table: str, rows: EncodedRows) -> None:
        if not rows.count:
            return
        prefix = "INSERT OR IGNORE" if conn.dialect.name == "sqlite" else "INSERT IGNORE"
        quote = conn.dialect.identifier_preparer.quote
        columns = ", ".join(quote(name) for name in rows.columns)
        marks = ", ".join(["%s" if conn.dialect.paramstyle in ("format", "pyformat") else "?"] * len(rows.columns))
        conn.exec_driver_sql(f"{prefix} INTO {quote(table)} ({columns}) VALUES ({marks})", rows.payload)


def choose_writer(engine: sa.Engine, log: logging.Logger) -> StagingWriter:
    if engine.dialect.name != "mysql":
        return InsertWriter()
    with engine.connect() as conn:
        enabled = conn.exec_driver_sql("SELECT @@GLOBAL.local_infile").scalar()
    if str(enabled) in ("1", "ON"):
        return LoadDataWriter()
    log.warning(
        "MySQL has local_infile off: loading with multi-row INSERTs, the slower path "
        "(SET GLOBAL local_infile=1 enables the bulk path)"
    )
    return InsertWriter()
