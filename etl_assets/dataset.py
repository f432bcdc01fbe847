"""The source file the pipeline loads: where it is, which version it is, what it looks like.

`kaggle_dataset` writes a manifest next to the files it fetched; `contacts_table` reads it.
Extraction is atomic (temporary directory, then rename), so a failed download never
replaces the file the previous run loaded. Each new version goes to a folder of its own
(`v<N>`); the newest two are kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from etl_assets import files
from etl_assets.contacts.source import CsvFormat, FileScan, first_rows, read_header, scan_file
from etl_assets.errors import PermanentError
from etl_assets.text import preview_markdown

MANIFEST = "source.json"
SAMPLE_DATASET = "embedded/sample-customers"
KEEP_VERSIONS = 2
_VERSION_FOLDER = re.compile(r"v(\d+)")


@dataclass(frozen=True)
class SourceFile:
    dataset: str
    version: str
    file: str
    path: str
    sha256: str
    bytes: int
    rows: int  # FileScan.rows: the data rows, blank lines skipped, as the load numbers them
    # The rest of the file's scan, so the load reads the file once instead of hashing it again
    # (None in a manifest an earlier version wrote).
    encoding: str | None = None
    has_quotes: bool | None = None
    longest_line: int | None = None
    blank_lines: int | None = None
    mtime_ns: int | None = None

    def scan(self, fmt: CsvFormat) -> FileScan | None:
        """The file's scan as it was described, while it still holds: the same encoding, and the file
        unchanged since (same size and modification time); else None, and the load scans it."""
        if (
            self.has_quotes is None
            or self.longest_line is None
            or self.blank_lines is None
            or self.encoding != fmt.encoding
        ):
            return None
        try:
            stat = Path(self.path).stat()
        except OSError:
            return None
        if (stat.st_size, stat.st_mtime_ns) != (self.bytes, self.mtime_ns):
            return None
        return FileScan(self.sha256, self.rows + self.blank_lines, self.has_quotes, self.longest_line, self.blank_lines)


def sample_csv_path() -> Path:
    return Path(str(resources.files("etl_assets.data").joinpath("sample_customers.csv")))


def describe_csv(dataset: str, version: str, path: Path, fmt: CsvFormat) -> SourceFile:
    """The file's identity and size; refuses, naming the file, one that is empty, header-only
    or not in the declared encoding, before any step relies on it."""
    stat = path.stat()  # before the scan: a file changed during it then fails SourceFile.scan's test
    scan = scan_file(path, fmt)
    read_header(path, fmt)
    if not scan.data_lines:
        raise PermanentError(f"{path.name} has a header but no data rows")
    return SourceFile(
        dataset=dataset,
        version=version,
        file=path.name,
        path=str(path),
        sha256=scan.sha256,
        bytes=stat.st_size,
        rows=scan.rows,
        encoding=fmt.encoding,
        has_quotes=scan.has_quotes,
        longest_line=scan.longest_line,
        blank_lines=scan.blank_lines,
        mtime_ns=stat.st_mtime_ns,
    )


def write_manifest(data_dir: Path, source: SourceFile) -> None:
    temporary = data_dir / f".{MANIFEST}.tmp"
    with files.open_private(temporary) as handle:
        handle.write(json.dumps(asdict(source), indent=2))
    os.replace(temporary, data_dir / MANIFEST)


def read_manifest(data_dir: Path) -> SourceFile | None:
    try:
        source = SourceFile(**json.loads((data_dir / MANIFEST).read_text()))
    except FileNotFoundError:
        return None
    return source if Path(source.path).exists() else None


def prune_versions(current: Path, keep: int = KEEP_VERSIONS) -> list[str]:
    """Delete the `v<N>` folders beside `current` (the version the manifest points at) but the
    newest `keep`; returns the names removed. `current` itself is never removed."""
    numbered = [
        (int(match.group(1)), folder)
        for folder in current.parent.iterdir()
        if folder.is_dir() and (match := _VERSION_FOLDER.fullmatch(folder.name))
    ]
    old = [folder for _, folder in sorted(numbered, reverse=True)[keep:] if folder != current]
    for folder in old:
        shutil.rmtree(folder)
    return [folder.name for folder in old]


def preview_csv(path: Path, fmt: CsvFormat, rows: int = 5) -> str:
    names, values = first_rows(path, fmt, rows)
    return preview_markdown(pd.DataFrame(values, columns=names))
