"""Writing prepared chunks into the staging tables, by the fastest path the server allows.

MySQL/MariaDB with `local_infile` on: `LOAD DATA LOCAL INFILE`, the server's own bulk path, fed
straight from memory on a StagingConnection, which sends the server those rows and no file. All
the parts one `write` gets travel as one statement, so one transaction: on a MariaDB that builds
an empty table by sorting (`sorted_bulk_build`), the table and every index of it are then built
once, at the commit. Anywhere else: multi-row INSERTs, in one transaction too.

Each writer splits its work in two: `encode` (CPU only, so the loader can run it for the next
chunk while the server ingests this one) and `write` (the database round trip).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import selectors
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from pymysql.connections import MySQLResult
from pymysql.constants import CR
from pymysql.err import InternalError, MySQLError, OperationalError
from pymysql.protocol import LoadLocalPacketWrapper

from etl_assets.errors import PermanentError
from etl_assets.tls_context import SharedTlsConnection

# Bytes of rows a LOAD DATA LOCAL packet carries (PyMySQL sends files in 16 KiB packets).
_PACKET_BYTES = 1 << 16

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
    streams: bool  # whether `write` holds its connection until the last part is sent

    def encode(self, rows: pa.Table) -> EncodedRows: ...

    def write(self, conn: sa.Connection, table: str, parts: Iterable[EncodedRows]) -> None:
        """All `parts` (rows of the same columns) into `table`, in one statement where the path allows."""
        ...

    def indexes_while_loading(self, dialect: sa.Dialect) -> bool:
        """Whether a table this writer fills from empty is best indexed before it is filled."""
        ...


def sorted_bulk_build(dialect: sa.Dialect) -> bool:
    """Whether the server builds a table one transaction fills from empty by sorting, each index
    at once, when that statement runs without unique and foreign key checks: MariaDB's bulk insert
    (MDEV-24621), whose LOAD DATA abort (MDEV-34703) is fixed from 10.11.11, 11.4.5 and 11.7.2.
    A duplicate key still fails, at the commit. MySQL has no such path: there, `unique_checks=0` lets
    the change buffer skip the check, so it is never turned off."""
    if dialect.name != "mysql" or not getattr(dialect, "is_mariadb", False):
        return False
    version = tuple(dialect.server_version_info or ())
    return version >= (11, 7, 2) or (11, 4, 5) <= version < (11, 5) or (10, 11, 11) <= version < (10, 12)


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


class StagingConnection(SharedTlsConnection):
    """A PyMySQL connection with LOAD DATA LOCAL on that sends the server only the rows
    LoadDataWriter streams, under the name it gave them.

    PyMySQL alone sends whatever file a server's LOCAL INFILE request names: a rogue or
    intercepting server could ask for any file the run can read. This one reads no file at all.
    """

    local_stream: tuple[str, Iterable[bytes]] | None = None  # set by LoadDataWriter while its statement runs
    _watch: selectors.BaseSelector | None = None  # this socket, while rows stream on it

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs, local_infile=True)

    def _write_bytes(self, data) -> None:
        if self._watch is None:
            return super()._write_bytes(data)
        # While rows stream the server says nothing unless it has given up on them (the session
        # killed, the server shutting down). It then stops reading without closing the socket at
        # once: a plain sendall blocked for 108 s here after a KILL. So send only what the socket
        # takes, and stop as soon as the server has spoken.
        view = memoryview(data)
        while view:
            if any(events & selectors.EVENT_READ for _, events in self._watch.select()):
                self._stopped_by_the_server()
            try:
                view = view[self._sock.send(view) :]
            except OSError as exc:
                self._force_close()
                raise OperationalError(CR.CR_SERVER_GONE_ERROR, f"MySQL server has gone away ({exc!r})") from exc

    def _stopped_by_the_server(self) -> NoReturn:
        """Raise what the server said mid-stream (its error, else a lost connection); the
        connection is closed, for its statement cannot be finished."""
        try:
            self._read_packet()  # an error packet raises the server's error
        except InternalError as exc:  # its reply is numbered from where it stopped reading
            raise OperationalError(CR.CR_SERVER_LOST, "Lost connection to MySQL server during query") from exc
        finally:
            self._force_close()
        raise OperationalError(CR.CR_COMMANDS_OUT_OF_SYNC, "the server answered before the rows ended")

    def rows_named(self, requested: bytes) -> Iterable[bytes]:
        """The rows streamed under the name the server asked for; refused for any other name."""
        if self.local_stream is None or requested != self.local_stream[0].encode(self.encoding):
            name = requested.decode(errors="replace")
            raise PermanentError(
                f"the database server asked for the local file {name!r}, which the loader "
                "did not name; refused (a rogue or intercepting server?)"
            )
        return self.local_stream[1]

    def _read_query_result(self, unbuffered: bool = False) -> int:
        # PyMySQL's own (1.1), with a result that streams the named rows: PyMySQL has no hook for it.
        self._result = None
        result = _StreamedRowsResult(self)
        if unbuffered:
            result.init_unbuffered_query()
        else:
            result.read()
        self._result = result
        if result.server_status is not None:
            self.server_status = result.server_status
        return result.affected_rows


class _StreamedRowsResult(MySQLResult):
    connection: StagingConnection

    def _read_load_local_packet(self, first_packet) -> None:
        conn = self.connection
        try:
            with _watching(conn):
                for piece in conn.rows_named(LoadLocalPacketWrapper(first_packet).filename):
                    view = memoryview(piece)
                    for start in range(0, len(view), _PACKET_BYTES):
                        conn.write_packet(view[start : start + _PACKET_BYTES])
                conn.write_packet(b"")
        except BaseException:
            # End the file, as PyMySQL does for a file it cannot open, so the session stays in
            # step with the server; the caller's transaction then rolls back whatever the server
            # took. A lost connection is already closed (PyMySQL drops its socket): nothing to end.
            if conn.open:
                with contextlib.suppress(MySQLError, OSError):
                    conn.write_packet(b"")
                    conn._read_packet()
            raise
        ok_packet = conn._read_packet()
        if not ok_packet.is_ok_packet():
            raise OperationalError(CR.CR_COMMANDS_OUT_OF_SYNC, "Commands Out of Sync")
        self._read_ok_packet(ok_packet)


@contextlib.contextmanager
def _watching(conn: StagingConnection) -> Iterator[None]:
    with selectors.DefaultSelector() as watch:
        watch.register(conn._sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        conn._watch = watch
        try:
            yield
        finally:
            conn._watch = None


@contextlib.contextmanager
def _streaming(conn: sa.Connection, name: str, pieces: Iterable[bytes]) -> Iterator[None]:
    """Let a StagingConnection send `pieces` to the server, as the file `name`, while the block runs."""
    dbapi: Any = conn.connection.dbapi_connection  # a StagingConnection (see DatabaseResource.staging_engine)
    dbapi.local_stream = (name, pieces)
    try:
        yield
    finally:
        dbapi.local_stream = None


class LoadDataWriter:
    name = "LOAD DATA LOCAL INFILE"
    streams = True

    def encode(self, rows: pa.Table) -> EncodedRows:
        return EncodedRows(rows.column_names, rows.num_rows, [to_load_data_tsv(rows)])

    def write(self, conn: sa.Connection, table: str, parts: Iterable[EncodedRows]) -> None:
        parts = iter(parts)
        first = next(parts, None)
        if first is None:
            return
        column_list = ", ".join(f"`{name}`" for name in first.columns)
        # No unique checks for the statement where the server then sorts instead (see sorted_bulk_build).
        bulk = "SET STATEMENT unique_checks=0, foreign_key_checks=0 FOR " if sorted_bulk_build(conn.dialect) else ""
        name = f"etl-rows-{uuid.uuid4().hex}.tsv"  # only a name: no such file is read or written
        pieces = (piece for part in itertools.chain([first], parts) for piece in part.payload)
        with _streaming(conn, name, pieces):
            conn.exec_driver_sql(
                f"{bulk}LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` CHARACTER SET utf8mb4 "
                f"FIELDS TERMINATED BY '\\t' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '\\\\' "
                f"LINES TERMINATED BY '\\n' ({column_list})",
                (name,),
            )

    def indexes_while_loading(self, dialect: sa.Dialect) -> bool:
        return sorted_bulk_build(dialect)


class InsertWriter:
    name = "multi-row INSERT"
    streams = False

    def encode(self, rows: pa.Table) -> EncodedRows:
        return EncodedRows(
            rows.column_names, rows.num_rows, list(zip(*(column.to_pylist() for column in rows.columns)))
        )

    def write(self, conn: sa.Connection, table: str, parts: Iterable[EncodedRows]) -> None:
        quote = conn.dialect.identifier_preparer.quote
        mark = "%s" if conn.dialect.paramstyle in ("format", "pyformat") else "?"
        for rows in parts:
            if rows.count:
                columns = ", ".join(quote(name) for name in rows.columns)
                marks = ", ".join([mark] * len(rows.columns))
                conn.exec_driver_sql(f"INSERT INTO {quote(table)} ({columns}) VALUES ({marks})", rows.payload)

    def indexes_while_loading(self, dialect: sa.Dialect) -> bool:
        return False  # row by row, an index grows faster from a sorted build afterwards


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
