"""Reading the source CSV as it comes from the wild: encoding, delimiter, header, rows.

Python's csv reader in strict mode decides what a file says: a quote in the wrong place is an
error there, where Arrow (and non-strict csv) would quietly drop it and load an altered value.
Arrow's streaming reader, in C and ten times faster, reads the rows whenever it is known to
agree: a UTF-8 file without any double quote (every line one row), or one the strict reader
has just read through without an error, with every row small enough for Arrow's blocks.
Otherwise the strict reader reads the rows itself, refusing the broken ones one by one.

Either way a row with too many or too few fields, broken quoting, or over a size cap is
rejected on its own, with its row and line numbers and a reason, and reading goes on. What
cannot be read at all (an undeclared encoding, an empty file, a header without the mapped
columns) is a PermanentError naming the file and the setting to change. Row numbers count
data rows from 1 (the row after the header), skipping blank lines, as the loader numbers them.
"""

from __future__ import annotations

import codecs
import collections
import csv
import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from etl_assets import settings
from etl_assets.contacts import records
from etl_assets.contacts.mapping import EMAIL_FIELD, ColumnMap
from etl_assets.contacts.records import CODE_COLUMN, RAW_VALUE_CHARS, REASON_COLUMN, ROW_COLUMN
from etl_assets.errors import PermanentError
from etl_assets.streams import gathered
from etl_assets.text import clip

# Caps, documented in the README: a field over MAX_FIELD_CHARS or a row over MAX_ROW_CHARS is
# rejected (and never held in memory whole beyond the cap).
MAX_FIELD_CHARS = 1 << 20
MAX_ROW_CHARS = 4 << 20
# Arrow reads in blocks of this size; a line must fit in one, so longer ones go to the csv reader.
ARROW_BLOCK_BYTES = 1 << 20
SCAN_BLOCK_BYTES = 1 << 20
DELIMITERS = {
    ",": ",",
    ";": ";",
    "\t": "\t",
    "|": "|",
    "comma": ",",
    "semicolon": ";",
    "tab": "\t",
    "\\t": "\t",
    "pipe": "|",
}
_QUOTE_BYTE = b'"'
_DETECTED = (",", ";", "\t")  # in order of preference on a tie


@dataclass(frozen=True)
class CsvFormat:
    """How to decode and split the file; delimiter None means detected from the header line."""

    encoding: str = settings.default_value(settings.SOURCE_ENCODING)
    delimiter: str | None = None

    @classmethod
    def from_settings(cls) -> CsvFormat:
        encoding = settings.value(settings.SOURCE_ENCODING)
        try:
            encoding = codecs.lookup(encoding).name
        except LookupError:
            raise PermanentError(
                f"{settings.SOURCE_ENCODING}={encoding!r} is not an encoding Python knows "
                "(e.g. utf-8, cp1252, latin-1, utf-16)"
            ) from None
        raw = settings.setting(settings.SOURCE_DELIMITER)
        if raw is None:
            return cls(encoding)
        delimiter = DELIMITERS.get(raw.lower(), raw if len(raw) == 1 and raw not in '"\r\n ' else None)
        if delimiter is None:
            raise PermanentError(
                f"{settings.SOURCE_DELIMITER}={raw!r} must be one character other than a quote, "
                "space or line break (or comma, semicolon, tab, pipe)"
            )
        return cls(encoding, delimiter)

    @property
    def is_utf8(self) -> bool:
        return self.encoding == "utf-8"


@dataclass(frozen=True)
class FileScan:
    sha256: str
    data_lines: int  # lines after the header
    has_quotes: bool
    longest_line: int  # bytes
    blank_lines: int = 0  # empty lines after the header, which both readers skip

    @property
    def rows(self) -> int:
        """Data rows as the loader numbers them (blank lines skipped): exact unless quoted values
        hold line breaks. kaggle_dataset reports it, the load's progress counts towards it."""
        return self.data_lines - self.blank_lines


def _decode_error(path: Path, fmt: CsvFormat, offset: int, byte: int | None, line: int) -> PermanentError:
    what = f"byte 0x{byte:02x}" if byte is not None else "the end of the file (a character cut short)"
    return PermanentError(
        f"{path.name} is not valid {fmt.encoding}: {what} at offset {offset:,} (line {line:,}) cannot be "
        f"decoded; set {settings.SOURCE_ENCODING} to the file's encoding (e.g. cp1252, latin-1, utf-16)"
    )


def _line_ends(text: np.ndarray, carriage_returns: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the lines of `text` end (at an LF, the LF of a CRLF, or a lone CR), and which of those
    ends are CRLFs. `text` never ends inside a CRLF; `carriage_returns` is how many CRs it holds."""
    ends = np.flatnonzero(text == 10)
    if not carriage_returns:  # the usual case, a file with LF line ends
        return ends, np.zeros(len(ends), dtype=bool)
    crlf = text[np.maximum(ends - 1, 0)] == 13
    if carriage_returns > np.count_nonzero(crlf):  # lone CRs too (old Mac files): rare, so searched apart
        returns = np.flatnonzero(text == 13)
        after = np.append(text, 0)[returns + 1]
        ends = np.sort(np.concatenate([ends, returns[after != 10]]))
        crlf = (text[ends] == 10) & (text[np.maximum(ends - 1, 0)] == 13)
    return ends, crlf


class _LineCount:
    """Lines as both parsers read them, fed a block at a time: their number, the longest (its bytes
    plus one for its end, a CRLF's CR not counted) and the empty ones. A block's last CR waits
    for the next block, which may start with its LF."""

    def __init__(self, count_blank: bool) -> None:
        self.count_blank = count_blank
        self.lines = self.longest = self.blank = 0
        self.position = 0  # file offset of the next byte to count
        self.last_end = -1  # file offset of the last line end
        self.held = b""

    def feed(self, block: bytes, last: bool = False) -> None:
        text = self.held + block if self.held else block
        self.held = b"\r" if text.endswith(b"\r") and not last else b""
        if self.held:
            text = text[:-1]
        array = np.frombuffer(text, dtype=np.uint8)
        # Counted by numpy, 5x faster than bytes.count; not at all without a CR (`in` is a memchr).
        carriage_returns = int(np.count_nonzero(array == 13)) if b"\r" in text else 0
        ends, crlf = _line_ends(array, carriage_returns)
        if len(ends):
            lengths = np.diff(ends + self.position, prepend=self.last_end) - crlf  # each line's bytes + 1
            self.lines += len(ends)
            self.longest = max(self.longest, int(lengths.max()))
            if self.count_blank:
                self.blank += int(np.count_nonzero(lengths == 1))
            self.last_end = self.position + int(ends[-1])
        self.position += len(text)

    def finish(self) -> None:
        self.feed(b"", last=True)
        if self.last_end != self.position - 1:  # a last line without an end
            self.lines += 1
            self.longest = max(self.longest, self.position - 1 - self.last_end)


def scan_file(path: Path, fmt: CsvFormat = CsvFormat()) -> FileScan:
    """In one read: the SHA-256, the line and blank-line counts, whether any quote or over-long line
    occurs, and proof that the whole file decodes (else an error naming the byte offset and line).

    The digest of each block runs in a second thread (hashlib lets go of the GIL) while this one
    finds the line ends; an ASCII block of a UTF-8 file needs no decoding to prove it valid."""
    digest, decoder = hashlib.sha256(), codecs.getincrementaldecoder(fmt.encoding)()
    # A line end is not one byte in UTF-16 or UTF-32: no blank count there.
    lines = _LineCount(count_blank=not fmt.encoding.startswith(("utf-16", "utf-32")))
    quotes = False
    with path.open("rb") as handle, ThreadPoolExecutor(1) as hasher:
        hashed = hasher.submit(lambda: None)
        for block in iter(lambda: handle.read(SCAN_BLOCK_BYTES), b""):
            hashed.result()
            hashed = hasher.submit(digest.update, block)
            pending = decoder.getstate()[0]  # the start of a character the last block cut
            if not (fmt.is_utf8 and not pending and block.isascii()):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    position = exc.start - len(pending)  # in this block
                    before = lines.position + len(lines.held)  # a held CR is counted as a line end here
                    line = lines.lines + len(lines.held) + block.count(b"\n", 0, max(position, 0)) + 1
                    raise _decode_error(path, fmt, before + position, (pending + block)[exc.start], line) from None
            lines.feed(block)
            quotes = quotes or _QUOTE_BYTE in block
        hashed.result()
    lines.finish()
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise _decode_error(path, fmt, lines.position - len(decoder.getstate()[0]), None, lines.lines) from None
    return FileScan(digest.hexdigest(), max(lines.lines - 1, 0), quotes, lines.longest, lines.blank)


# ----------------------------------------------------------------------------- the header


@dataclass(frozen=True)
class Header:
    file: str
    names: list[str]  # trimmed
    delimiter: str

    def positions(self, column_map: ColumnMap) -> list[int]:
        """Where each mapped source column stands; fails naming missing or repeated ones."""
        missing = [source for source in column_map.sources if source not in self.names]
        if missing:
            raise PermanentError(
                f"{self.file} lacks the mapped column(s) {missing}; columns found: {self.names} "
                f"(delimiter {self.delimiter!r}; set {settings.SOURCE_DELIMITER} if the file uses another; "
                f"mapping: {column_map.origin})"
            )
        repeated = [source for source in column_map.sources if self.names.count(source) > 1]
        if repeated:
            raise PermanentError(
                f"{self.file} has the mapped column(s) {repeated} more than once; columns found: {self.names}"
            )
        return [self.names.index(source) for source in column_map.sources]


def _csv_reader(lines: Iterator[str], delimiter: str):
    csv.field_size_limit(MAX_FIELD_CHARS)  # process-wide; the same cap wherever a CSV is read
    return csv.reader(lines, delimiter=delimiter, strict=True)


def _open_text(path: Path, fmt: CsvFormat):
    # utf-8-sig drops a byte-order mark; Python's utf-16/32 codecs drop theirs themselves.
    return path.open(encoding="utf-8-sig" if fmt.is_utf8 else fmt.encoding, newline="")


def _detect_delimiter(first_line: str) -> str:
    counts = {candidate: first_line.count(candidate) for candidate in _DETECTED}
    return max(_DETECTED, key=lambda candidate: counts[candidate])  # max keeps the first on a tie


def read_header(path: Path, fmt: CsvFormat = CsvFormat()) -> Header:
    """The header row, parsed by the same strict reader as the rows; an empty file is an error."""
    with _open_text(path, fmt) as handle:
        lines = _Lines(handle)
        first = lines.peek_first()
        if not first.strip():
            raise PermanentError(f"{path.name} is empty: no header row")
        delimiter = fmt.delimiter or _detect_delimiter(first)
        try:
            names = next(_csv_reader(lines, delimiter))
        except (csv.Error, _RowTooLong) as exc:
            raise PermanentError(f"{path.name}: the header row cannot be parsed ({_reason(exc)[1]})") from None
    return Header(path.name, [name.strip() for name in names], delimiter)


# ----------------------------------------------------------------------------- rows


@dataclass
class RawChunk:
    """Parsed rows of the mapped columns (strings) with their row numbers, and the rows refused."""

    table: pa.Table
    rows: np.ndarray  # the row number of each row of `table`
    rejected: list[dict] = field(default_factory=list)  # source_row, email, raw_values, reason, reason_code
    records: int = 0  # rows read: len(table) + len(rejected)

    @classmethod
    def joined(cls, parts: list[RawChunk]) -> RawChunk:
        return cls(
            pa.concat_tables([part.table for part in parts]).combine_chunks(),
            np.concatenate([part.rows for part in parts]),
            [item for part in parts for item in part.rejected],
            sum(part.records for part in parts),
        )


def _refused(row: int, text: str, code: str, reason: str) -> dict:
    return {
        ROW_COLUMN: row,
        EMAIL_FIELD: None,
        REASON_COLUMN: reason,
        CODE_COLUMN: code,
        "raw_values": json.dumps(clip(text, RAW_VALUE_CHARS), ensure_ascii=False),
    }


def _field_count_reason(actual: int, expected: int) -> tuple[str, str]:
    return records.WRONG_FIELD_COUNT, f"wrong number of fields: {actual} where the header has {expected}"


class _RowTooLong(Exception):
    pass


def _reason(exc: Exception) -> tuple[str, str]:
    """The code and the reason of a row the strict reader refused."""
    text = str(exc)
    if isinstance(exc, _RowTooLong):
        return records.ROW_TOO_LONG, f"row longer than the {MAX_ROW_CHARS >> 20} MiB cap"
    if "field larger than field limit" in text:
        return records.FIELD_TOO_LONG, f"a field longer than the {MAX_FIELD_CHARS >> 20} MiB cap"
    if "expected after" in text:
        return (
            records.BROKEN_QUOTING,
            "broken quoting: text after a closing quote (a quote inside a value must be doubled)",
        )
    if "unexpected end of data" in text:
        return records.BROKEN_QUOTING, "broken quoting: a quoted value is never closed"
    return records.UNPARSEABLE, f"unparseable row: {text}"


class _Lines:
    """The file's physical lines for csv.reader, keeping the current row's lines so that a row the
    parser refuses can be replayed from its second line (an unclosed quote must not swallow the
    rows after it). Lines are read at most MAX_ROW_CHARS at a time."""

    def __init__(self, handle):
        self._handle = handle
        self._replay: collections.deque[str] = collections.deque()
        self.row_lines: list[str] = []
        self._row_chars = 0

    def peek_first(self) -> str:
        try:
            first = self._next_physical()
        except StopIteration:
            return ""
        self._replay.appendleft(first)
        return first

    def _next_physical(self) -> str:
        text = self._handle.readline(MAX_ROW_CHARS + 1)
        if not text:
            raise StopIteration
        if len(text) > MAX_ROW_CHARS:
            while text and not text.endswith(("\n", "\r")):  # skip the rest without holding it
                text = self._handle.readline(MAX_ROW_CHARS)
            raise _RowTooLong()
        return text

    def __iter__(self):
        return self

    def __next__(self) -> str:
        text = self._replay.popleft() if self._replay else self._next_physical()
        self.row_lines.append(text)
        self._row_chars += len(text)
        if self._row_chars > MAX_ROW_CHARS:
            raise _RowTooLong()
        return text

    def start_row(self) -> None:
        self.row_lines, self._row_chars = [], 0

    def replay_after_first(self) -> None:
        self._replay.extendleft(reversed(self.row_lines[1:]))

    def row_text(self) -> str:
        """The start of the current row as read, for a refused row's raw values."""
        return "".join(self.row_lines[:3]).rstrip("\r\n")


def _strict_rows(
    path: Path, fmt: CsvFormat, header: Header
) -> Iterator[tuple[int, list[str] | None, tuple[str, str] | None, str]]:
    """(row number, fields or None when refused, (code, reason) of a refused row, the row's text) of
    each non-blank row."""
    with _open_text(path, fmt) as handle:
        lines = _Lines(handle)
        reader = _csv_reader(lines, header.delimiter)
        next(reader)  # the header, read by read_header
        row = 0
        while True:
            lines.start_row()
            try:
                fields = next(reader)
            except StopIteration:
                return
            except (csv.Error, _RowTooLong) as exc:
                row += 1
                yield row, None, _reason(exc), lines.row_text()
                lines.replay_after_first()
                continue
            if not fields:  # a blank line
                continue
            row += 1
            if len(fields) == len(header.names):
                yield row, fields, None, ""
            else:
                yield row, None, _field_count_reason(len(fields), len(header.names)), lines.row_text()


def first_rows(path: Path, fmt: CsvFormat, count: int) -> tuple[list[str], list[list[str]]]:
    """The header and the first `count` well-formed rows, for previews."""
    header = read_header(path, fmt)
    rows = []
    for _, fields, _, _ in _strict_rows(path, fmt, header):
        if fields is not None:
            rows.append(fields)
        if len(rows) == count:
            break
    return header.names, rows


def _strict_chunks(
    path: Path, fmt: CsvFormat, header: Header, column_map: ColumnMap, chunk_rows: int
) -> Iterator[RawChunk]:
    positions = header.positions(column_map)
    good: list[list[str]] = []
    numbers: list[int] = []
    rejected: list[dict] = []

    def chunk() -> RawChunk:
        table = pa.table(
            {
                source: pa.array([fields[i] for fields in good], pa.string())
                for source, i in zip(column_map.sources, positions)
            }
        )
        return RawChunk(table, np.array(numbers, dtype=np.int64), rejected, len(good) + len(rejected))

    for row, fields, reason, text in _strict_rows(path, fmt, header):
        if reason is not None:
            rejected.append(_refused(row, text, *reason))
        elif fields is not None:
            good.append(fields)
            numbers.append(row)
        if len(good) + len(rejected) >= chunk_rows:
            yield chunk()
            good, numbers, rejected = [], [], []
    if good or rejected:
        yield chunk()


def _arrow_reads_alike(path: Path, fmt: CsvFormat, header: Header, scan: FileScan) -> bool:
    """Whether Arrow reads this file as the strict reader would: UTF-8, no line or quoted row
    over Arrow's block size, and (with quotes) no row the strict reader refuses."""
    if not fmt.is_utf8 or scan.longest_line > ARROW_BLOCK_BYTES:
        return False
    if not scan.has_quotes:
        return True
    with _open_text(path, fmt) as handle:
        reader = _csv_reader(handle, header.delimiter)
        try:
            next(reader)
            lines = reader.line_num
            for fields in reader:
                # A row over several lines may outgrow a block: count 4 bytes a character, plus quotes.
                if reader.line_num - lines > 1 and 4 * sum(map(len, fields)) + 3 * len(fields) > ARROW_BLOCK_BYTES:
                    return False
                lines = reader.line_num
        except csv.Error:
            return False
    return True


def _arrow_chunks(path: Path, header: Header, column_map: ColumnMap, quoted: bool) -> Iterator[RawChunk]:
    """Arrow's reader, for a file `_arrow_reads_alike` accepted; refused rows via its handler."""
    positions = header.positions(column_map)
    names = [f"c{i}" for i in range(len(header.names))]
    refused: list[dict] = []
    skipped: list[int] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        number = row.number - 1  # Arrow counts the header and skips blank lines, as we do
        skipped.append(number)
        refused.append(_refused(number, row.text, *_field_count_reason(row.actual_columns, row.expected_columns)))
        return "skip"

    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(
            block_size=ARROW_BLOCK_BYTES, column_names=names, skip_rows=1, use_threads=False
        ),
        parse_options=pacsv.ParseOptions(
            delimiter=header.delimiter,
            quote_char='"' if quoted else False,
            newlines_in_values=quoted,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pacsv.ConvertOptions(
            include_columns=[names[i] for i in positions],
            strings_can_be_null=False,
            column_types={names[i]: pa.string() for i in positions},
        ),
    )
    good = 0
    for batch in reader:
        # The j-th good row is row j plus the refused rows before it (refused rows numbered so far
        # all lie in this block or earlier ones).
        ordinals = np.arange(good + 1, good + batch.num_rows + 1, dtype=np.int64)
        gaps = np.asarray(skipped, dtype=np.int64) - np.arange(len(skipped), dtype=np.int64)
        rows = ordinals + np.searchsorted(gaps, ordinals, side="right")
        good += batch.num_rows
        table = pa.Table.from_batches([batch]).rename_columns(column_map.sources)
        yield RawChunk(table, rows, refused[:], batch.num_rows + len(refused))
        refused.clear()
    if refused:
        empty = pa.table({source: pa.array([], pa.string()) for source in column_map.sources})
        yield RawChunk(empty, np.empty(0, dtype=np.int64), refused[:], len(refused))


def read_chunks(
    path: Path, column_map: ColumnMap, chunk_rows: int, fmt: CsvFormat = CsvFormat(), scan: FileScan | None = None
) -> Iterator[RawChunk]:
    """The CSV in chunks of about `chunk_rows` rows read, every value a string (never NULL).

    Memory stays bounded whatever the file size. Fails first, naming them, if mapped columns
    are missing or repeated in the header.
    """
    scan = scan or scan_file(path, fmt)
    header = read_header(path, fmt)
    header.positions(column_map)
    parts = (
        _arrow_chunks(path, header, column_map, scan.has_quotes)
        if _arrow_reads_alike(path, fmt, header, scan)
        else _strict_chunks(path, fmt, header, column_map, chunk_rows)
    )
    for group in gathered(parts, chunk_rows, lambda part: part.records):
        yield group[0] if len(group) == 1 else RawChunk.joined(group)
