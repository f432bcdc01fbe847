"""The source file the pipeline loads: where it is, which version it is, what it looks like.

`kaggle_dataset` writes a manifest next to the files it fetched; `contacts_table` reads it.
Extraction is atomic (temporary directory, then rename), so a failed download never
replaces the file the previous run loaded.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import pandas as pd

from etl_assets.contacts.source import file_sha256
from etl_assets.errors import PermanentError

MANIFEST = "source.json"
SAMPLE_DATASET = "embedded/sample-customers"


@dataclass(frozen=True)
class SourceFile:
    dataset: str
    version: str
    file: str
    path: str
    sha256: str
    bytes: int
    rows: int


def sample_csv_path() -> Path:
    return Path(str(resources.files("etl_assets.data").joinpath("sample_customers.csv")))


def describe_csv(dataset: str, version: str, path: Path) -> SourceFile:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = max(sum(1 for _ in csv.reader(handle)) - 1, 0)
    return SourceFile(dataset=dataset, version=version, file=path.name, path=str(path),
                      sha256=file_sha256(path), bytes=path.stat().st_size, rows=rows)


def write_manifest(data_dir: Path, source: SourceFile) -> None:
    temporary = data_dir / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(asdict(source), indent=2))
    os.replace(temporary, data_dir / MANIFEST)


def read_manifest(data_dir: Path) -> SourceFile | None:
    try:
        source = SourceFile(**json.loads((data_dir / MANIFEST).read_text()))
    except FileNotFoundError:
        return None
    return source if Path(source.path).exists() else None


def pick_csv(names: list[str], wanted: str | None) -> str:
    """The member to load: the one named by KAGGLE_FILE, else the only or largest CSV."""
    csvs = [name for name in names if name.lower().endswith(".csv")]
    if wanted:
        matches = [name for name in names if name == wanted or Path(name).name == wanted]
        if not matches:
            raise PermanentError(f"KAGGLE_FILE={wanted!r} is not in the dataset; its files: {names}")
        return matches[0]
    if not csvs:
        raise PermanentError(f"the dataset has no CSV file; its files: {names}")
    return csvs[0]


def extract_csv(archive: Path, wanted: str | None, destination: Path) -> Path:
    """Verify the zip, extract the chosen CSV into `destination` atomically, return its path."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = sorted(bundle.infolist(), key=lambda info: info.file_size, reverse=True)
            chosen = pick_csv([info.filename for info in members], wanted)
            bad = bundle.testzip()
            if bad is not None:
                raise PermanentError(f"the downloaded archive is corrupt (CRC error in {bad})")
            destination.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=".extract-"))
            target = staging / Path(chosen).name
            with bundle.open(chosen) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink)
    except zipfile.BadZipFile as exc:
        raise PermanentError(f"the downloaded archive is not a valid zip ({exc}); it may be truncated") from None
    if destination.exists():
        shutil.rmtree(destination)
    os.replace(staging, destination)
    return destination / Path(chosen).name


def preview_markdown(path: Path, rows: int = 5) -> str:
    frame = pd.read_csv(path, nrows=rows, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    return frame.to_markdown(index=False)
