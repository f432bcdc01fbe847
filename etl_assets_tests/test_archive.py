"""The dataset zip: which member is chosen, and every way a hostile or broken zip is refused."""

import os
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from etl_assets.archive import MAX_RATIO, extract_csv, pick_csv
from etl_assets.errors import PermanentError

CSV = b"id,email\n1,a@example.com\n"
BOMB = b"0" * 60_000_000  # deflates about 1000-fold


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return path


def patch_headers(path: Path, local_offset: int, central_offset: int, fmt: str, value) -> None:
    """Overwrite one field of the (only) member's local and central headers."""
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, data.index(b"PK\x03\x04") + local_offset, value)
    struct.pack_into(fmt, data, data.index(b"PK\x01\x02") + central_offset, value)
    path.write_bytes(bytes(data))


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def refusal(archive: Path, destination: Path, wanted: str | None = None) -> str:
    with pytest.raises(PermanentError) as caught:
        extract_csv(archive, wanted, destination)
    message = str(caught.value)
    assert "Traceback" not in message
    assert not list(destination.parent.glob(".extract-*"))
    return message


@pytest.fixture
def out(tmp_path) -> Path:
    """The parent of the extraction folders, holding a previously extracted version."""
    previous = tmp_path / "out" / "v1"
    previous.mkdir(parents=True)
    (previous / "customers.csv").write_bytes(CSV)
    return tmp_path / "out"


def test_the_largest_plain_csv_is_extracted_atomically(tmp_path, out):
    archive = make_zip(tmp_path / "a.zip", {"notes.txt": b"x" * 100, "small.csv": CSV, "data/customers.csv": CSV * 10})
    path = extract_csv(archive, None, out / "v2")
    assert path == out / "v2" / "customers.csv"
    assert path.read_bytes() == CSV * 10
    assert listing(out) == ["v1", "v1/customers.csv", "v2", "v2/customers.csv"]


def test_a_zip_bomb_by_size_is_refused_naming_the_sizes_and_the_setting(tmp_path, out, monkeypatch):
    monkeypatch.setenv("ETL_MAX_SOURCE_BYTES", "1000000")
    archive = make_zip(tmp_path / "a.zip", {"customers.csv": os.urandom(2_000_000)})
    message = refusal(archive, out / "v2")
    assert "'customers.csv' in the downloaded archive is 2,000,000 bytes uncompressed" in message
    assert "over the cap of 1,000,000 bytes; raise ETL_MAX_SOURCE_BYTES" in message
    assert listing(out) == ["v1", "v1/customers.csv"]


def test_a_zip_bomb_by_ratio_is_refused(tmp_path, out):
    archive = make_zip(tmp_path / "a.zip", {"customers.csv": BOMB})
    message = refusal(archive, out / "v1")  # re-extracting a version: the previous copy stays
    assert "'customers.csv' in the downloaded archive is 60,000,000 bytes uncompressed from" in message
    assert f"a compression ratio over the cap of {MAX_RATIO}: it looks like a zip bomb" in message
    assert (out / "v1" / "customers.csv").read_bytes() == CSV
    assert listing(out) == ["v1", "v1/customers.csv"]


def test_a_header_that_understates_the_size_does_not_get_more_out(tmp_path, out):
    # The directory says 1,000 bytes; zipfile stops there and the CRC then fails. The byte count
    # while copying is a second guard that this CPython zipfile never lets a lie reach.
    archive = make_zip(tmp_path / "a.zip", {"customers.csv": BOMB})
    patch_headers(archive, 22, 24, "<I", 1000)
    assert zipfile.ZipFile(archive).getinfo("customers.csv").file_size == 1000
    message = refusal(archive, out / "v2")
    assert "the downloaded archive is corrupt ('customers.csv': Bad CRC-32" in message
    assert listing(out) == ["v1", "v1/customers.csv"]


def test_corrupt_compressed_data_is_refused_without_leftovers(tmp_path, out):
    archive = make_zip(tmp_path / "a.zip", {"customers.csv": os.urandom(100_000)})
    data = bytearray(archive.read_bytes())
    start = data.index(b"PK\x03\x04") + 30 + len("customers.csv")
    data[start : start + 2000] = b"\xff" * 2000
    archive.write_bytes(bytes(data))
    assert "the downloaded archive is corrupt ('customers.csv'" in refusal(archive, out / "v2")
    assert listing(out) == ["v1", "v1/customers.csv"]


def encrypted_by_flag(tmp_path: Path) -> Path:
    archive = make_zip(tmp_path / "a.zip", {"customers.csv": CSV})
    patch_headers(archive, 6, 8, "<H", 0x1)
    return archive


def encrypted_by_zip_command(tmp_path: Path) -> Path:
    if shutil.which("zip") is None:  # make test installs it (test-tools); never a silent skip
        pytest.fail("the zip command is not installed (apt-get install zip)")
    (tmp_path / "customers.csv").write_bytes(CSV)
    subprocess.run(["zip", "-q", "-P", "secret", "a.zip", "customers.csv"], cwd=tmp_path, check=True)
    return tmp_path / "a.zip"


@pytest.mark.parametrize("make", [encrypted_by_flag, encrypted_by_zip_command])
def test_an_encrypted_member_is_refused_naming_it(tmp_path, out, make):
    message = refusal(make(tmp_path), out / "v2")
    assert message == (
        "'customers.csv' in the downloaded archive is encrypted; Kaggle datasets are not: "
        "re-download or pick another file with KAGGLE_FILE"
    )


@pytest.mark.parametrize("name", ["x/..", "../evil.csv", "/abs.csv", "a\\evil.csv"])
def test_an_unsafe_member_name_is_never_extracted(tmp_path, out, name):
    archive = make_zip(tmp_path / "a.zip", {name: CSV})
    assert refusal(archive, out / "v2").startswith("the dataset has no CSV file; its files: ")
    assert refusal(archive, out / "v2", wanted=name).startswith(
        f"KAGGLE_FILE={name!r} names the member {name!r}, which is not a plain file name"
    )
    assert listing(tmp_path) == ["a.zip", "out", "out/v1", "out/v1/customers.csv"]


def test_a_safe_csv_is_chosen_over_a_larger_unsafe_one(tmp_path, out):
    archive = make_zip(tmp_path / "a.zip", {"../evil.csv": CSV * 100, "customers.csv": CSV})
    assert extract_csv(archive, None, out / "v2").read_bytes() == CSV
    assert "names the member '../evil.csv'" in refusal(archive, out / "v3", wanted="evil.csv")


@pytest.mark.parametrize(
    "name", ["", ".", "..", "x/", "x/.", "x/..", "/abs.csv", "../a.csv", "a/../b.csv", "a\\b.csv", "a\0.csv"]
)
def test_pick_csv_skips_unsafe_names_and_refuses_them_by_name(name):
    with pytest.raises(PermanentError, match="has no CSV file"):
        pick_csv([name], None)
    assert pick_csv([name, "dir/good.csv"], None) == "dir/good.csv"
    if name:  # an empty KAGGLE_FILE means unset
        with pytest.raises(PermanentError, match="not a plain file name"):
            pick_csv([name, "good.csv"], name)
