"""Reading the source CSV: its digest, and its rows as Arrow chunks of bounded size."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv

from etl_assets.contacts.mapping import ColumnMap
from etl_assets.contacts.records import check_columns
from etl_assets.streams import gathered


def file_sha256(path: Path) -> str:
    return scan_file(path)[0]


def scan_file(path: Path) -> tuple[str, int]:
    """The file's SHA-256 and its data rows, in one read.

    Rows are newlines minus the header: exact for CSVs without quoted line breaks, used for
    the ETA only.
    """
    digest, newlines = hashlib.sha256(), 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            newlines += block.count(b"\n")
    return digest.hexdigest(), max(newlines - 1, 0)


def csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle), [])


def read_chunks(path: Path, column_map: ColumnMap, chunk_rows: int) -> Iterator[pa.Table]:
    """The CSV in chunks of about `chunk_rows`, every value a string (never NULL).

    Arrow's streaming reader parses in C, in small blocks (large blocks cost hundreds of MB of
    read-ahead for no speed), gathered here into chunks big enough for vectorised work. Memory
    stays bounded whatever the file size. Fails first, naming them, if mapped columns are missing.
    """
    header = csv_header(path)
    check_columns(header, column_map)
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 20, column_names=header, skip_rows=1, use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            include_columns=column_map.sources, strings_can_be_null=False,
            column_types={source: pa.string() for source in column_map.sources}),
    )
    for batches in gathered(reader, chunk_rows, lambda batch: batch.num_rows):
        yield pa.Table.from_batches(batches).combine_chunks()
