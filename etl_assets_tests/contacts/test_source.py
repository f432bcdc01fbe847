import hashlib

import pyarrow as pa
import pytest

from etl_assets.contacts.mapping import load_column_map
from etl_assets.contacts.source import read_chunks, scan_file
from etl_assets.errors import PermanentError
from etl_assets_tests.conftest import SAMPLE_CSV

COLUMN_MAP = load_column_map(None)


def test_scan_gives_the_files_sha256_and_its_data_rows():
    sha, rows = scan_file(SAMPLE_CSV)
    assert sha == hashlib.sha256(SAMPLE_CSV.read_bytes()).hexdigest()
    assert rows == 1000


def test_chunks_hold_the_mapped_columns_as_strings_and_every_row_once():
    chunks = list(read_chunks(SAMPLE_CSV, COLUMN_MAP, chunk_rows=300))
    assert sum(chunk.num_rows for chunk in chunks) == 1000
    assert all(chunk.num_rows >= 300 for chunk in chunks[:-1])
    assert all(chunk.column_names == COLUMN_MAP.sources for chunk in chunks)
    assert all(field.type == pa.string() for chunk in chunks for field in chunk.schema)
    assert chunks[0].column("Email")[0].as_py() == SAMPLE_CSV.read_text().splitlines()[1].split(",")[9]


def test_a_missing_mapped_column_fails_before_any_row_is_read(tmp_path):
    broken = tmp_path / "no_email.csv"
    broken.write_text("Index,Customer Id\n1,ABC\n")
    with pytest.raises(PermanentError, match=r"lacks the mapped column\(s\) \[.*'Email'"):
        next(read_chunks(broken, COLUMN_MAP, chunk_rows=10))
