"""Reading source files as they come from the wild: each gives its documented outcome.

Every file here is read by the path the product picks for it (Arrow for quote-free UTF-8, the
strict csv reader otherwise); where both could read a file, both are checked to agree.
"""

import hashlib
import json
import random
import re

import pyarrow as pa
import pytest

from etl_assets.contacts import source
from etl_assets.contacts.mapping import load_column_map
from etl_assets.contacts.source import CsvFormat, read_chunks, read_header, scan_file
from etl_assets.errors import PermanentError
from etl_assets_tests.conftest import SAMPLE_CSV

pytestmark = pytest.mark.fast  # pure: no service, no subprocess

COLUMN_MAP = load_column_map(None)
HEADER = SAMPLE_CSV.read_text().splitlines()[0]
ROW = SAMPLE_CSV.read_text().splitlines()[1]  # email radia.liskov.1@example.com, company Stark Industries


def row(email: str = "a", company: str = "Stark Industries", delimiter: str = ",") -> str:
    """A sample row with another email and company (which may hold delimiters or quotes)."""
    fields = ROW.replace("radia.liskov.1", email).split(",")
    fields[4] = company
    return delimiter.join(fields)


# What each refusal's reason starts with, by its code.
REASONS_BY_CODE = {
    "wrong_field_count": "wrong number of fields",
    "row_too_long": "row longer than",
    "field_too_long": "a field longer than",
    "broken_quoting": "broken quoting",
    "unparseable": "unparseable row",
}


def read(path, fmt: CsvFormat | None = None, chunk_rows=300):
    """(good rows as {row number: {source: value}}, refused rows as {row number: reason})."""
    fmt = fmt or CsvFormat()
    good, refused = {}, {}
    for chunk in read_chunks(path, COLUMN_MAP, chunk_rows, fmt):
        for number, values in zip(chunk.rows.tolist(), chunk.table.to_pylist()):
            good[number] = values
        for item in chunk.rejected:
            assert item["reason"].startswith(REASONS_BY_CODE[item["reason_code"]]), item
            refused[item["source_row"]] = item["reason"]
    assert not good.keys() & refused.keys()
    return good, refused


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_scan_gives_the_files_sha256_and_its_data_lines():
    scan = scan_file(SAMPLE_CSV)
    assert scan.sha256 == hashlib.sha256(SAMPLE_CSV.read_bytes()).hexdigest()
    assert scan.data_lines == 1000
    assert not scan.has_quotes


def test_chunks_hold_the_mapped_columns_as_strings_and_every_row_once():
    chunks = list(read_chunks(SAMPLE_CSV, COLUMN_MAP, chunk_rows=300))
    assert sum(chunk.table.num_rows for chunk in chunks) == 1000
    assert all(chunk.table.num_rows >= 300 for chunk in chunks[:-1])
    assert all(chunk.table.column_names == COLUMN_MAP.sources for chunk in chunks)
    assert all(field.type == pa.string() for chunk in chunks for field in chunk.table.schema)
    assert [number for chunk in chunks for number in chunk.rows.tolist()] == list(range(1, 1001))
    assert chunks[0].table.column("Email")[0].as_py() == ROW.split(",")[9]


def test_a_missing_mapped_column_fails_naming_it_the_file_and_the_delimiter(tmp_path):
    broken = write(tmp_path, "no_email.csv", "Index,Customer Id\n1,ABC\n")
    with pytest.raises(
        PermanentError,
        match=r"no_email.csv lacks the mapped column\(s\) \[.*'Email'.*"
        r"delimiter ','; set ETL_SOURCE_DELIMITER",
    ):
        next(read_chunks(broken, COLUMN_MAP, chunk_rows=10))


@pytest.mark.parametrize(
    ("company", "last_row", "reader"),
    [
        ("Stark Inc", "", "arrow"),
        ('"Stark, Inc"', "", "arrow"),  # quoted, but the strict reader finds nothing wrong
        ('"Stark, Inc"', '1,"broken" quote,3', "strict"),  # one broken row: the strict reader reads it all
    ],
)
def test_ragged_rows_are_refused_on_their_own_and_blank_lines_do_not_count(tmp_path, company, last_row, reader):
    path = write(
        tmp_path,
        "ragged.csv",
        f"{HEADER}\n{row('a')}\n1,2,3\n\n{row('b')},extra\n{row('c', company)}\r\n\n{row('d')}\n{last_row}",
    )
    assert source._arrow_reads_alike(path, CsvFormat(), read_header(path), scan_file(path)) == (reader == "arrow")
    good, refused = read(path)
    assert sorted(good) == [1, 4, 5]
    assert {row: reason for row, reason in refused.items() if row < 6} == {
        2: "wrong number of fields: 3 where the header has 12",
        3: "wrong number of fields: 13 where the header has 12",
    }
    assert good[4]["Company"] == company.strip('"')
    assert good[5]["Email"] == "d@example.com"


def test_a_quote_in_the_wrong_place_rejects_that_row_and_never_alters_a_value(tmp_path):
    path = write(
        tmp_path,
        "unescaped.csv",
        "\n".join(
            [
                HEADER,
                row("a", '"He said "clean the file first" yesterday"'),
                row("b", '"say ""hi"""'),
                row("c", 'Acme "Best" Ltd'),
                row("d"),
            ]
        )
        + "\n",
    )
    good, refused = read(path)
    assert refused == {1: "broken quoting: text after a closing quote (a quote inside a value must be doubled)"}
    assert good[2]["Company"] == 'say "hi"'
    assert good[3]["Company"] == 'Acme "Best" Ltd'  # a quote inside an unquoted value is kept as it is
    assert sorted(good) == [2, 3, 4]


def test_an_unclosed_quote_rejects_its_row_and_the_rows_after_it_are_read(tmp_path):
    path = write(tmp_path, "unclosed.csv", "\n".join([HEADER, row("a"), row("b", '"Stark'), row("c"), row("d")]))
    good, refused = read(path)
    assert refused == {2: "broken quoting: a quoted value is never closed"}
    assert [good[n]["Email"] for n in sorted(good)] == ["a@example.com", "c@example.com", "d@example.com"]
    assert sorted(good) == [1, 3, 4]


def test_a_quoted_line_break_stays_in_its_value(tmp_path):
    path = write(
        tmp_path, "multiline.csv", f"{HEADER}\n{row('a', chr(34) + 'Stark' + chr(10) + 'Inc' + chr(34))}\n{row('b')}\n"
    )
    good, refused = read(path)
    assert refused == {} and good[1]["Company"] == "Stark\nInc" and good[2]["Email"] == "b@example.com"


@pytest.mark.parametrize(
    ("encoding", "byte", "offset"), [("cp1252", 0xE9, 129), ("latin-1", 0xE9, 129), ("utf-16", 0xFF, 0)]
)
def test_another_encoding_is_refused_naming_file_offset_and_setting_and_read_when_declared(
    tmp_path, encoding, byte, offset
):
    path = write(tmp_path, f"{encoding}.csv", f"{HEADER}\n{row('rene')}\n".replace("Radia", "René").encode(encoding))
    with pytest.raises(PermanentError) as refused:
        scan_file(path)
    message = str(refused.value)
    assert f"{encoding}.csv is not valid utf-8: byte 0x{byte:02x} at offset {offset}" in message
    assert "set ETL_SOURCE_ENCODING" in message and "Traceback" not in message
    good, rejected = read(path, CsvFormat(encoding=encoding))
    assert rejected == {} and good[1]["First Name"] == "René"


def test_a_utf8_byte_order_mark_and_spaces_around_header_names_are_dropped(tmp_path):
    padded = ",".join(f" {name} " for name in HEADER.split(","))
    path = write(tmp_path, "bom.csv", f"\ufeff{padded}\r\n{row('a')}\r\n")
    assert read_header(path).names == HEADER.split(",")
    good, _ = read(path)
    assert good[1]["Email"] == "a@example.com"


@pytest.mark.parametrize(("delimiter", "name"), [(";", "semicolon"), ("\t", "tab")])
def test_semicolon_and_tab_files_are_detected_or_named(tmp_path, monkeypatch, delimiter, name):
    path = write(tmp_path, f"{name}.csv", f"{HEADER.replace(',', delimiter)}\n{row('a', 'Stark, Inc', delimiter)}\n")
    good, _ = read(path)
    assert good[1]["Company"] == "Stark, Inc"
    monkeypatch.setenv("ETL_SOURCE_DELIMITER", name)
    assert CsvFormat.from_settings().delimiter == delimiter


def test_rows_in_another_delimiter_than_the_header_are_refused(tmp_path):
    path = write(tmp_path, "mixed.csv", f"{HEADER}\n{row('a')}\n{row('b', delimiter=';')}\n{row('c')}\n")
    good, refused = read(path)
    assert refused == {2: "wrong number of fields: 1 where the header has 12"}
    assert sorted(good) == [1, 3]


def test_mixed_line_endings_give_the_same_rows(tmp_path):
    path = write(tmp_path, "endings.csv", f"{HEADER}\r\n{row('a')}\n{row('b')}\r{row('c')}\r\n")
    good, refused = read(path)
    assert refused == {} and [good[n]["Email"] for n in (1, 2, 3)] == [f"{x}@example.com" for x in "abc"]


def test_a_duplicated_mapped_header_is_an_error_naming_it_and_other_duplicates_are_fine(tmp_path):
    duplicated = write(tmp_path, "dup.csv", f"{HEADER},Email\n{row('a')},b@example.com\n")
    with pytest.raises(PermanentError, match=r"dup.csv has the mapped column\(s\) \['Email'\] more than once"):
        read(duplicated)
    extra = write(tmp_path, "extra.csv", f"{HEADER},Notes,Notes\n{row('a')},x,y\n")
    assert read(extra)[0][1]["Email"] == "a@example.com"


def test_a_header_name_with_a_quoted_line_break_is_read_by_the_same_parser_as_the_rows(tmp_path):
    path = write(tmp_path, "header.csv", HEADER.replace("Company", '"Com\npany"') + f"\n{row('a')}\n")
    assert read_header(path).names[4] == "Com\npany"
    with pytest.raises(PermanentError, match=r"lacks the mapped column\(s\) \['Company'\]"):
        read(path)


def test_fields_up_to_the_cap_are_read_and_longer_ones_refuse_only_their_row(tmp_path):
    big, huge = "x" * (source.MAX_FIELD_CHARS - 10), "y" * (2 * source.MAX_FIELD_CHARS)
    path = write(tmp_path, "big.csv", "\n".join([HEADER, row("a", big), row("b", huge), row("c")]) + "\n")
    good, refused = read(path)
    assert len(good[1]["Company"]) == len(big)
    assert refused == {2: "a field longer than the 1 MiB cap"}
    assert good[3]["Email"] == "c@example.com"


def test_a_row_over_the_row_cap_is_refused_without_being_held_whole(tmp_path):
    fields = ROW.split(",")
    fields[4] = '"' + "z" * (source.MAX_ROW_CHARS + 10)  # unclosed: runs on past the row cap
    path = write(tmp_path, "long.csv", "\n".join([HEADER, ",".join(fields), row("b")]) + "\n")
    good, refused = read(path)
    assert refused == {1: "row longer than the 4 MiB cap"}
    assert good[2]["Email"] == "b@example.com"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty.csv is empty: no header row"),
        (b"\xef\xbb\xbf\r\n", "empty.csv is empty: no header row"),
    ],
)
def test_an_empty_file_is_a_clear_error(tmp_path, content, message):
    with pytest.raises(PermanentError, match=message):
        read(write(tmp_path, "empty.csv", content))


def test_raw_text_of_a_refused_row_is_kept_cut_to_a_bound(tmp_path):
    path = write(tmp_path, "ragged.csv", f"{HEADER}\n{'q' * 50_000},1\n")
    [chunk] = read_chunks(path, COLUMN_MAP, 10)
    [refused] = chunk.rejected
    assert len(json.loads(refused["raw_values"])) <= 1000


def test_a_line_break_in_an_unquoted_value_rejects_both_halves(tmp_path):
    fields = row("a").split(",")
    broken = ",".join(fields[:5]) + "\nCorp," + ",".join(fields[5:])
    path = write(tmp_path, "split.csv", f"{HEADER}\n{broken}\n{row('b')}\n")
    good, refused = read(path)
    assert refused == {
        1: "wrong number of fields: 5 where the header has 12",
        2: "wrong number of fields: 8 where the header has 12",
    }
    assert good[3]["Email"] == "b@example.com"


def test_a_decoding_error_is_placed_exactly_even_across_read_blocks(tmp_path):
    head = f"{HEADER}\n" + f"{row('a')}\n" * 8000  # over 1 MiB: the bad byte is in the second block
    assert len(head) > 1 << 20
    path = write(tmp_path, "late.csv", head.encode() + "Ren\u00e9,x\n".encode("cp1252"))
    with pytest.raises(
        PermanentError,
        match=rf"late.csv is not valid utf-8: byte 0xe9 at offset {len(head) + 3:,} "
        rf"\(line 8,002\)",
    ):
        scan_file(path)
    cut = write(tmp_path, "cut.csv", f"{HEADER}\n{row('a')}\n".encode() + "é".encode()[:1])
    with pytest.raises(PermanentError, match="the end of the file"):
        scan_file(cut)


def test_old_mac_line_endings_count_as_lines(tmp_path):
    path = write(tmp_path, "mac.csv", f"{HEADER}\r{row('a')}\r{row('b')}\r")
    assert scan_file(path).data_lines == 2
    good, refused = read(path)
    assert refused == {} and sorted(good) == [1, 2]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ETL_SOURCE_ENCODING", "utf8x", "ETL_SOURCE_ENCODING='utf8x' is not an encoding Python knows"),
        ("ETL_SOURCE_DELIMITER", "::", "ETL_SOURCE_DELIMITER='::' must be one character"),
        ("ETL_SOURCE_DELIMITER", '"', "ETL_SOURCE_DELIMITER='\"' must be one character other than a quote"),
    ],
)
def test_a_typo_in_the_format_settings_is_refused_naming_it(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(PermanentError, match=message):
        CsvFormat.from_settings()


def test_declared_encodings_and_delimiters_are_normalised(monkeypatch):
    monkeypatch.setenv("ETL_SOURCE_ENCODING", "Latin1")
    monkeypatch.setenv("ETL_SOURCE_DELIMITER", "|")
    assert CsvFormat.from_settings() == CsvFormat("iso8859-1", "|")


@pytest.mark.parametrize(
    "text",
    [
        "{h}\n\n{a}\n\n\n{b}\n",
        "{h}\r\n\r\n{a}\r\n\r\n{b}\r\n\r\n",
        "{h}\r\r{a}\r{b}",
        "{h}\n\r\n\r{a}\r\n\n{b}",
        "{h}\n  \n{a}\n{b}\n",  # a line of spaces is a row (one field: rejected), not a blank line
    ],
)
def test_the_scan_counts_rows_as_the_readers_do_blank_lines_skipped(tmp_path, text):
    path = write(tmp_path, "blank.csv", text.format(h=HEADER, a=row("a"), b=row("b")))
    scan = scan_file(path)
    assert scan.rows == sum(chunk.records for chunk in read_chunks(path, COLUMN_MAP, 300))
    assert scan.data_lines - scan.blank_lines == scan.rows


@pytest.mark.parametrize("tail", ["\r\n\r\n", "\r\n\n", "\r\r", "\n\n"])
def test_a_line_end_cut_by_a_read_block_counts_once(tmp_path, tail):
    head = f"{HEADER}\r\n"
    company = "x" * ((1 << 20) - 1 - len(head) - len(row("a", company="")))  # the line end starts the last byte
    text = f"{head}{row('a', company=company)}{tail}{row('b')}\r\n"
    assert text[(1 << 20) - 1] == tail[0]
    scan = scan_file(write(tmp_path, "cut.csv", text))
    assert (scan.data_lines, scan.blank_lines, scan.rows) == (3, 1, 2)


@pytest.mark.parametrize("complete", [True, False])
def test_a_character_cut_by_a_read_block_is_decoded_across_it(tmp_path, complete):
    """The ASCII shortcut must not skip a block that completes (or fails to complete) a character
    the previous block cut: here the second block is plain ASCII after the first byte of an é."""
    head = f"{HEADER}\n{row('a', company='x' * 100_000)}\n" * 10
    first = (head.encode() + b"y" * (1 << 20))[: (1 << 20) - 1] + "é".encode()[:1]
    text = first + ("é".encode()[1:] if complete else b"") + f",tail\n{row('b')}\n".encode()
    path = write(tmp_path, "cut.csv", text)
    if complete:
        assert scan_file(path).sha256 == hashlib.sha256(text).hexdigest()
    else:
        with pytest.raises(PermanentError, match=f"byte 0xc3 at offset {(1 << 20) - 1:,}"):
            scan_file(path)


def lines_as_written(data: bytes) -> tuple[int, int, int]:
    """The scan's line figures by the plain definition: data lines (after the first), the longest
    line (its bytes plus one for its end, the CR of a CRLF not counted), the empty lines."""
    parts = re.split(rb"\r\n|\r|\n", data)
    ended, tail = parts[:-1], parts[-1]
    lines = len(ended) + (1 if tail else 0)
    longest = max([len(line) + 1 for line in ended] + [len(tail)])
    return max(lines - 1, 0), longest, sum(1 for line in ended if not line)


@pytest.mark.parametrize("seed", range(40))
def test_the_scan_counts_lines_as_written_wherever_the_read_blocks_cut(tmp_path, monkeypatch, seed):
    """Random runs of text, CR, LF and CRLF (old Mac, Windows and Unix files, and mixes), read in
    blocks of 1 to 64 bytes, so a CRLF or a run of line ends is cut at every place."""
    rng = random.Random(seed)
    pieces = [b"a", b"bc", b'"q"', b"\r", b"\n", b"\r\n", b"\r\n", b"\n\n", b"\r\r"]
    data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 400)))
    path = tmp_path / "lines.csv"
    path.write_bytes(data)
    monkeypatch.setattr(source, "SCAN_BLOCK_BYTES", rng.randrange(1, 65))
    scan = scan_file(path)
    assert (scan.data_lines, scan.longest_line, scan.blank_lines) == lines_as_written(data)
    assert scan.has_quotes == (b'"' in data) and scan.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("block_bytes", [5, 6, 7])
def test_a_decoding_error_after_a_held_carriage_return_is_placed_exactly(tmp_path, monkeypatch, block_bytes):
    """A block ending in CR keeps it for the next block (its LF may start that one): the offset of a
    bad byte there still counts the CR."""
    path = tmp_path / "bad.csv"
    path.write_bytes(b"h\r\nab\r\n\xffz\n")
    monkeypatch.setattr(source, "SCAN_BLOCK_BYTES", block_bytes)
    with pytest.raises(PermanentError, match="byte 0xff at offset 7 "):
        scan_file(path)
