"""The `contacts_table` step's work in a process of its own, so its peak memory can be read.

    python benchmarks/load_step.py CSV DATABASE_URL [--run-id ID] [--chunk-rows N]
    python -m benchmarks.load_step ...        (from the repository root)

Calls the asset's own `load_source` (etl_assets/assets/contacts.py) without the Dagster context,
with the column map and retry settings from the environment. Prints one line `BENCH_RESULT {json}`
on stdout: the LoadReport, the wall time of the step's work (imports and engine creation excluded), and the
process's peak RSS. Progress and log lines go to stderr.

Peak RSS is `VmHWM` from /proc/self/status, the high-water mark of this process's own address
space. `getrusage().ru_maxrss` is not used on Linux: it survives exec, so a child started from a big
parent (vfork/posix_spawn share the parent's memory until exec) can report the parent's peak.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULT_PREFIX = "BENCH_RESULT "


def _proc_status_bytes(field: str) -> int | None:
    """A `kB` field of /proc/self/status in bytes, or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def peak_rss_bytes() -> int:
    peak = _proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, kB elsewhere


def current_rss_bytes() -> int | None:
    return _proc_status_bytes("VmRSS")


def execute_step(csv_path: Path, database_url: str, run_id: str, chunk_rows: int | None, log: logging.Logger) -> dict:
    """What the asset's body does; returns the report and the wall time of the work."""
    from etl_assets import settings
    from etl_assets.assets.contacts import load_source
    from etl_assets.contacts.loader import DEFAULT_CHUNK_ROWS
    from etl_assets.contacts.mapping import load_column_map
    from etl_assets.resources.database import DatabaseResource
    from etl_assets.resources.secrets import SecretsResource

    # The URL comes only from the environment, as in a deployment (this is a child process of its own).
    os.environ.update(ETL_SECRETS_BACKEND="env", ETL_DATABASE_URL=database_url)
    database = DatabaseResource(secrets=SecretsResource())
    column_map = load_column_map(settings.setting(settings.COLUMN_MAP))
    retry = settings.retry_settings()
    chunk_rows = chunk_rows or DEFAULT_CHUNK_ROWS

    started = time.perf_counter()
    report = load_source(database, csv_path, column_map, retry, run_id, log, chunk_rows)
    seconds = time.perf_counter() - started
    database.engine.dispose()
    return {"report": report.as_dict(), "seconds": seconds, "chunk_rows": chunk_rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path)
    parser.add_argument("database_url")
    parser.add_argument("--run-id", default="benchmark")
    parser.add_argument("--chunk-rows", type=int, default=None, help="default: the loader's own")
    args = parser.parse_args(argv)

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="  [load_step %(asctime)s] %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    log = logging.getLogger("benchmarks.load_step")

    # The same imports a Dagster step process of this code location has (etl_assets imports its
    # definitions, hence dagster), so the baseline below is the step's, not a bare interpreter's.
    import etl_assets.assets.contacts  # noqa: F401
    import etl_assets.resources.database  # noqa: F401

    baseline = current_rss_bytes()
    result = execute_step(args.csv, args.database_url, args.run_id, args.chunk_rows, log)
    result.update(
        peak_rss_bytes=peak_rss_bytes(),
        baseline_rss_bytes=baseline,
        peak_rss_source="VmHWM" if _proc_status_bytes("VmHWM") is not None else "ru_maxrss",
    )
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
