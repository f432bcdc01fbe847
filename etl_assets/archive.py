"""The dataset zip: choose the CSV member, verify it, extract it within bounds.

A Kaggle download is a zip; only one member, the CSV to load, is ever extracted, under its
plain base name. Limits on that member:

- `ETL_MAX_SOURCE_BYTES` (default 4 GiB): its uncompressed size.
- `MAX_RATIO` (200): its uncompressed size over its compressed size, checked once it is larger
  than `RATIO_FREE_BYTES` (16 MiB). Real CSV files compress 3 to 20-fold; a zip bomb, over 1000.

Both are checked on the sizes the zip directory declares before extracting, and again on the
bytes actually written, so a header that lies cannot get past them. Names that could escape the
target folder or are not a file name (absolute, with `..`, a backslash or NUL, ending in `/` or
`.`) are never extracted; encrypted members are refused. Every refusal is a `PermanentError`.

Extraction is atomic (temporary `.extract-*` folder, then rename): a failure leaves neither a
half-written file nor the temporary folder, and never replaces the previously extracted file.
The folders and the file are owner-only (0700, 0600): the CSV holds personal data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

from etl_assets import files, settings
from etl_assets.errors import PermanentError

MAX_RATIO = 200
# Below this size any ratio is harmless (a long run of one character compresses 1000-fold).
RATIO_FREE_BYTES = 16 * 2**20
_CHUNK = 2**20


def _is_safe_name(name: str) -> bool:
    """Whether the member is a file whose path stays inside the folder it is extracted to."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        return False
    parts = name.split("/")
    return ".." not in parts and parts[-1] not in ("", ".")


def pick_csv(names: list[str], wanted: str | None) -> str:
    """The member to load: the one named by KAGGLE_FILE, else the first CSV (callers list the largest first)."""
    if wanted:
        matches = [name for name in names if name == wanted or Path(name).name == wanted]
        if not matches:
            raise PermanentError(f"KAGGLE_FILE={wanted!r} is not in the dataset; its files: {names}")
        unsafe = [name for name in matches if not _is_safe_name(name)]
        if unsafe:
            raise PermanentError(
                f"KAGGLE_FILE={wanted!r} names the member {unsafe[0]!r}, which is not a plain "
                "file name and is never extracted; pick another file with KAGGLE_FILE"
            )
        return matches[0]
    csvs = [name for name in names if name.lower().endswith(".csv") and _is_safe_name(name)]
    if not csvs:
        raise PermanentError(f"the dataset has no CSV file; its files: {names}")
    return csvs[0]


def extract_csv(archive: Path, wanted: str | None, destination: Path) -> Path:
    """Verify the chosen CSV, extract it into `destination` atomically and within bounds, return its path."""
    max_bytes = settings.int_setting(settings.MAX_SOURCE_BYTES)
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = sorted(bundle.infolist(), key=lambda info: info.file_size, reverse=True)
            chosen = pick_csv([info.filename for info in members], wanted)
            info = next(info for info in members if info.filename == chosen)
            if info.flag_bits & 0x1:
                raise PermanentError(
                    f"{chosen!r} in the downloaded archive is encrypted; Kaggle datasets are not: "
                    "re-download or pick another file with KAGGLE_FILE"
                )
            _check_bounds(info, info.file_size, max_bytes)
            files.private_dir(destination.parent)
            staging = files.private_dir(Path(tempfile.mkdtemp(dir=destination.parent, prefix=".extract-")))
            try:
                _copy(bundle, info, staging / Path(chosen).name, max_bytes)
                if destination.exists():
                    shutil.rmtree(destination)
                os.replace(staging, destination)
            finally:
                shutil.rmtree(staging, ignore_errors=True)  # gone after the rename; a leftover only on failure
    except zipfile.BadZipFile as exc:
        raise PermanentError(f"the downloaded archive is not a valid zip ({exc}); it may be truncated") from None
    return destination / Path(chosen).name


def _copy(bundle: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, max_bytes: int) -> None:
    """Copy the member, counting its bytes; zipfile checks its CRC at the end.

    zipfile already stops at the declared size; the count keeps the caps from depending on that.
    """
    written = 0
    try:
        with bundle.open(info) as source, files.open_private(target, "wb") as sink:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                _check_bounds(info, written, max_bytes, so_far=True)
                sink.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise PermanentError(
            f"the downloaded archive is corrupt ({info.filename!r}: {exc}); it may be truncated: re-download it"
        ) from None
    except NotImplementedError:
        raise PermanentError(
            f"{info.filename!r} in the downloaded archive uses a compression method "
            f"({info.compress_type}) that cannot be read; re-pack it as a plain zip"
        ) from None


def _check_bounds(info: zipfile.ZipInfo, size: int, max_bytes: int, so_far: bool = False) -> None:
    """Refuse `size` uncompressed bytes of the member (declared, or written so far) over a cap."""
    amount = f"{'at least ' if so_far else ''}{size:,} bytes uncompressed from {info.compress_size:,} compressed"
    if size > max_bytes:
        raise PermanentError(
            f"{info.filename!r} in the downloaded archive is {amount}, over the cap of "
            f"{max_bytes:,} bytes; raise {settings.MAX_SOURCE_BYTES} if the file is genuine"
        )
    if size > RATIO_FREE_BYTES and size > MAX_RATIO * info.compress_size:
        raise PermanentError(
            f"{info.filename!r} in the downloaded archive is {amount}, a compression ratio over "
            f"the cap of {MAX_RATIO}: it looks like a zip bomb; Kaggle CSV files compress "
            "far less, re-download it or pick another file with KAGGLE_FILE"
        )
