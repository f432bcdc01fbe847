"""The manifest carries the source file's scan, so one run reads (and hashes) the file once."""

import dataclasses
import json
import logging
import os
import shutil

import pytest
import sqlalchemy as sa

from etl_assets import dataset
from etl_assets.contacts import loader
from etl_assets.contacts.loader import load_contacts
from etl_assets.contacts.mapping import load_column_map
from etl_assets.contacts.source import CsvFormat, scan_file
from etl_assets.contacts.staging import InsertWriter
from etl_assets.retrying import RetrySettings
from etl_assets_tests.conftest import SAMPLE_CSV

pytestmark = pytest.mark.fast  # pure: no service, no subprocess


@pytest.fixture
def described(tmp_path):
    path = tmp_path / "customers.csv"
    shutil.copyfile(SAMPLE_CSV, path)
    source = dataset.describe_csv("owner/slug", "3", path, CsvFormat())
    dataset.write_manifest(tmp_path, source)
    return path, dataset.read_manifest(tmp_path)


def test_the_manifest_keeps_the_scan_the_load_would_make(described):
    path, source = described
    assert source.scan(CsvFormat()) == scan_file(path)
    assert (source.rows, source.bytes) == (1000, path.stat().st_size)


def test_the_scan_is_not_reused_for_another_encoding_or_a_changed_file(described):
    path, source = described
    assert source.scan(CsvFormat("cp1252")) is None
    os.utime(path, ns=(source.mtime_ns + 1_000_000, source.mtime_ns + 1_000_000))  # same size, touched
    assert source.scan(CsvFormat()) is None
    path.unlink()
    assert source.scan(CsvFormat()) is None


def test_a_manifest_of_the_previous_version_loads_with_no_scan(described, tmp_path):
    _path, source = described
    old = {
        key: value
        for key, value in dataclasses.asdict(source).items()
        if key in ("dataset", "version", "file", "path", "sha256", "bytes", "rows")
    }
    (tmp_path / dataset.MANIFEST).write_text(json.dumps(old))
    assert dataset.read_manifest(tmp_path).scan(CsvFormat()) is None


def test_the_load_uses_the_scan_it_is_given_instead_of_reading_the_file_again(described, tmp_path, monkeypatch):
    path, source = described

    def no_second_scan(*_args, **_kwargs):
        raise AssertionError("the file was scanned again")

    monkeypatch.setattr(loader, "scan_file", no_second_scan)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'etl.sqlite'}")
    report = load_contacts(
        engine,
        path,
        load_column_map(None),
        InsertWriter(),
        "run",
        logging.getLogger("test"),
        RetrySettings(attempts=1, max_seconds=1),
        scan=source.scan(CsvFormat()),
    )
    assert (report.rows_read, report.inserted, report.rejected) == (1000, 988, 12)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT source_sha256 FROM etl_loads")).scalar_one() == source.sha256
