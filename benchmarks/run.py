"""Benchmark of the contacts pipeline against its targets (issue 4), measured side by side in one run.

    python benchmarks/run.py [--rows N] [--hubspot-contacts M] [--hubspot-rate-limit R] [--out PATH]

One run, one fresh MariaDB database set (dropped at the end), one generated CSV of N rows in the
"customers" shape (scripts/generate_sample_dataset.py, ~0.5% deliberately bad rows):

1. `pandas.read_csv` + `DataFrame.to_sql` into a plain table (default method=None: the driver's
   executemany, which PyMySQL rewrites into multi-row INSERTs of up to ~1 MB);
2. `LOAD DATA LOCAL INFILE` of the raw file into an identical plain table: the ceiling;
3. the `contacts_table` step's work (`choose_writer` + `load_contacts`: validation, de-duplication,
   hashing, staging, then the RENAME swap a first load into an empty table gets) in a child
   process, on the same file, into a fresh database;
4. the same step again on the unchanged file (in this process: only its time matters);
5. the step on the next version of the file (10% changed, 1% new, 1% removed), in a new child;
6. the step on the first N/10 rows and on 2N rows, each in a new child and a fresh database;
7. `hubspot_contacts` materialized against a local HubSpot server limited to R requests per window:
   M new contacts, then again with nothing changed.

It prints a table with the targets and writes the figures as JSON (default
benchmarks/results/latest.json). Exit status 1 when a phase failed (its error is in the JSON), and
with --strict also when a target was missed.

Settings of the pipeline (ETL_*, HUBSPOT_*) are removed from this process's environment first,
so the step runs on its defaults (the packaged column map, default retry bounds) whatever the shell
holds.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import importlib.util
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from benchmarks.hubspot_phase import empty_result as empty_hubspot_result  # noqa: E402
from benchmarks.hubspot_phase import run_hubspot  # noqa: E402
from benchmarks.load_step import RESULT_PREFIX  # noqa: E402

log = logging.getLogger("benchmarks")

DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306"
DEFAULT_OUT = BENCH_DIR / "results" / "latest.json"
TO_SQL_READ_ROWS = 100_000  # rows per read_csv chunk, as the step's own chunks
TO_SQL_CHUNKSIZE = 10_000  # rows per executemany call
MB = 1_000_000
_SCRUBBED_PREFIXES = ("ETL_", "HUBSPOT_")

STEP_KEYS = (
    "rows_read",
    "inserted",
    "updated",
    "unchanged",
    "not_staged",
    "staged",
    "deleted",
    "rejected",
    "contacts_after",
    "writer",
    "skipped_identical_source",
    "apply_seconds",
    "report_seconds",
    "seconds",
    "rows_per_s",
    "chunk_rows",
    "peak_rss_bytes",
    "sampled_peak_rss_bytes",
    "baseline_rss_bytes",
    "peak_rss_source",
)


# ----------------------------------------------------------------------------- helpers


def _load_generator():
    """scripts/generate_sample_dataset.py, which is not a package module."""
    spec = importlib.util.spec_from_file_location(
        "generate_sample_dataset", REPO / "scripts" / "generate_sample_dataset.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _database_url(admin_url: str, name: str | None) -> str:
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, connect_args={"local_infile": True, "charset": "utf8mb4", "connect_timeout": 10})


def _rate(rows: int | None, seconds: float | None) -> float | None:
    return round(rows / seconds, 1) if rows is not None and seconds else None


def _ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def _loadavg() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def machine_info(admin_engine: sa.Engine | None) -> dict[str, Any]:
    cpu_model = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu_model = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu_model
            )
    except OSError:
        pass
    memory = None
    try:
        import psutil

        memory = psutil.virtual_memory().total
    except ImportError:
        try:
            with open("/proc/meminfo", encoding="ascii") as handle:
                memory = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("MemTotal"))
        except (OSError, StopIteration):
            pass
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_bytes": memory,
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "mariadb_version": None,
        "mariadb_settings": {},
        "libraries": {},
        "load_average_start": _loadavg(),
        "load_average_end": None,
    }
    for name in ("pandas", "pyarrow", "sqlalchemy", "pymysql", "dagster"):
        try:
            info["libraries"][name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing library is only not reported
            info["libraries"][name] = None
    if admin_engine is not None:
        try:
            with admin_engine.connect() as conn:
                info["mariadb_version"] = conn.exec_driver_sql("SELECT VERSION()").scalar()
                row = conn.exec_driver_sql(
                    "SELECT @@GLOBAL.local_infile, @@innodb_buffer_pool_size, @@innodb_flush_log_at_trx_commit, "
                    "@@max_allowed_packet"
                ).one()
                info["mariadb_settings"] = dict(
                    zip(
                        [
                            "local_infile",
                            "innodb_buffer_pool_size",
                            "innodb_flush_log_at_trx_commit",
                            "max_allowed_packet",
                        ],
                        [int(value) for value in row],
                    )
                )
        except sa.exc.SQLAlchemyError as exc:
            info["mariadb_version"] = f"unreachable: {exc.__class__.__name__}"
    return info


# ----------------------------------------------------------------------------- plain-table loads


def _plain_columns(csv_path: Path) -> list[str]:
    from etl_assets.contacts.source import read_header

    header = read_header(csv_path).names
    names = [re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_") or f"c{i}" for i, name in enumerate(header)]
    return [name if names.count(name) == 1 else f"{name}_{i}" for i, name in enumerate(names)]


def _create_plain_table(engine: sa.Engine, table: str, columns: list[str]) -> None:
    """No keys, no indexes, every column VARCHAR(255): the cheapest target a server has."""
    spec = ", ".join(f"`{name}` VARCHAR(255)" for name in columns)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{table}`")
        conn.exec_driver_sql(
            f"CREATE TABLE `{table}` ({spec}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        )


def _count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM `{table}`").scalar_one())


def _content_digest(engine: sa.Engine, table: str, columns: list[str]) -> tuple[int, int]:
    """(rows, order-independent checksum of every value): equal tables have equal digests."""
    values = ", ".join(f"IFNULL(`{name}`, '<NULL>')" for name in columns)
    with engine.connect() as conn:
        rows, total = conn.exec_driver_sql(
            f"SELECT COUNT(*), SUM(CRC32(CONCAT_WS(CHAR(31), {values}))) FROM `{table}`"
        ).one()
    return int(rows), int(total or 0)


def bench_to_sql(engine: sa.Engine, csv_path: Path, columns: list[str]) -> dict[str, Any]:
    import pandas as pd

    table = "plain_to_sql"
    _create_plain_table(engine, table, columns)
    started = time.perf_counter()
    for chunk in pd.read_csv(csv_path, dtype=str, keep_default_na=False, chunksize=TO_SQL_READ_ROWS):
        chunk.columns = columns
        chunk.to_sql(table, engine, if_exists="append", index=False, chunksize=TO_SQL_CHUNKSIZE)
    seconds = time.perf_counter() - started
    rows = _count(engine, table)
    return {
        "table": table,
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": _rate(rows, seconds),
        "method": "default (method=None: executemany; PyMySQL rewrites it into multi-row INSERTs)",
        "read_chunk_rows": TO_SQL_READ_ROWS,
        "to_sql_chunksize": TO_SQL_CHUNKSIZE,
        "includes_csv_parsing": True,
    }


def bench_load_data(engine: sa.Engine, csv_path: Path, columns: list[str]) -> dict[str, Any]:
    table = "plain_load_data"
    _create_plain_table(engine, table, columns)
    with csv_path.open("rb") as handle:
        first_line = handle.readline()
    line_end = "\\r\\n" if first_line.endswith(b"\r\n") else "\\n"  # Python's csv module writes \r\n
    statement = (
        f"LOAD DATA LOCAL INFILE %s INTO TABLE `{table}` CHARACTER SET utf8mb4 "
        f"FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '{line_end}' "
        f"IGNORE 1 LINES"
    )
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql(statement, (str(csv_path),))
    seconds = time.perf_counter() - started
    rows = _count(engine, table)
    return {
        "table": table,
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": _rate(rows, seconds),
        "statement": statement.replace("%s", repr(csv_path.name)),
    }


def settle(admin: sa.Engine, limit_s: float = 30.0) -> float | None:
    """Have InnoDB write out what the last phase left dirty, then the seconds that took (at most
    `limit_s`); None where the server does not let us ask. Each phase then starts from the same
    quiet server rather than paying for the one before it: with a 128 MB buffer pool and a 96 MB
    redo log, a 1M-row load leaves seconds of flushing behind.

    MariaDB 10.11 does not flush an idle server by itself (dirty pages and checkpoint age stay put
    for minutes), so the dirty-page limit is set to 0 while we wait, then put back."""
    status = (
        "SELECT variable_name, variable_value FROM information_schema.global_status WHERE variable_name IN "
        "('INNODB_BUFFER_POOL_PAGES_DIRTY', 'INNODB_BUFFER_POOL_PAGES_TOTAL', 'INNODB_CHECKPOINT_AGE')"
    )
    started = time.perf_counter()
    with admin.connect() as conn:
        log_bytes, dirty_limit = conn.exec_driver_sql(
            "SELECT @@innodb_log_file_size, @@innodb_max_dirty_pages_pct"
        ).one()
        try:
            conn.exec_driver_sql("SET GLOBAL innodb_max_dirty_pages_pct = 0")
        except sa.exc.DBAPIError as exc:  # no SUPER: measure without settling, and say so
            log.warning("cannot ask the server to flush before a phase: %s", exc.orig)
            return None
        try:
            while time.perf_counter() - started < limit_s:
                values = {name.upper(): int(value) for name, value in conn.exec_driver_sql(status)}
                dirty, total = values["INNODB_BUFFER_POOL_PAGES_DIRTY"], values["INNODB_BUFFER_POOL_PAGES_TOTAL"]
                if dirty <= 0.01 * total and values["INNODB_CHECKPOINT_AGE"] <= 0.05 * int(log_bytes):
                    break
                time.sleep(0.2)
        finally:
            conn.exec_driver_sql(f"SET GLOBAL innodb_max_dirty_pages_pct = {float(dirty_limit)}")
    return round(time.perf_counter() - started, 1)


# ----------------------------------------------------------------------------- the step in a child


def _rss_of(pid: int) -> int | None:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as handle:
                return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            return None
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess/AccessDenied: the child is gone
        return None


def run_step_child(csv_path: Path, database_url: str, run_id: str, chunk_rows: int | None) -> dict[str, Any]:
    """`load_step.py` in a fresh interpreter; its result, plus the RSS peak sampled from outside."""
    command = [sys.executable, str(BENCH_DIR / "load_step.py"), str(csv_path), database_url, "--run-id", run_id]
    if chunk_rows:
        command += ["--chunk-rows", str(chunk_rows)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tail: collections.deque[str] = collections.deque(maxlen=30)
    sampled = [0]

    def forward_stderr() -> None:
        for line in process.stderr:  # type: ignore[union-attr]
            tail.append(line.rstrip("\n"))
            sys.stderr.write(line)
            sys.stderr.flush()

    def sample_rss() -> None:
        while process.poll() is None:
            rss = _rss_of(process.pid)
            if rss:
                sampled[0] = max(sampled[0], rss)
            time.sleep(0.05)

    threads = [threading.Thread(target=forward_stderr, daemon=True), threading.Thread(target=sample_rss, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        stdout = process.stdout.read()  # type: ignore[union-attr]
        process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    for thread in threads:
        thread.join(timeout=5)
    results = [line[len(RESULT_PREFIX) :] for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not results:
        raise RuntimeError(f"load_step exited with {process.returncode}: " + " | ".join(list(tail)[-8:]))
    child = json.loads(results[-1])
    step = _step_figures(child)
    step.update(
        peak_rss_bytes=child["peak_rss_bytes"],
        baseline_rss_bytes=child["baseline_rss_bytes"],
        sampled_peak_rss_bytes=sampled[0] or None,
        peak_rss_source=child["peak_rss_source"],
    )
    return step


def _step_figures(result: dict) -> dict[str, Any]:
    """The STEP_KEYS of a `load_step` result, with its timing and rate."""
    report = result["report"]
    step = {key: None for key in STEP_KEYS}
    step.update({key: report.get(key) for key in STEP_KEYS if key in report})
    step.update(
        report_seconds=report.get("seconds"),
        seconds=round(result["seconds"], 3),
        rows_per_s=_rate(report.get("rows_read"), result["seconds"]),
        chunk_rows=result["chunk_rows"],
    )
    return step


def run_step_here(csv_path: Path, database_url: str, run_id: str, chunk_rows: int | None) -> dict[str, Any]:
    """The step's work in this process: for the re-run, whose time matters and whose memory does not.

    Timed exactly as in `load_step.py` (the work only, not the imports), so the two compare; it
    spares the run an interpreter start, which costs more than the re-run itself on a loaded machine.
    """
    from benchmarks.load_step import execute_step

    return _step_figures(execute_step(csv_path, database_url, run_id, chunk_rows, log))


# ----------------------------------------------------------------------------- targets and table


def _get(results: dict, path: str):
    value: Any = results
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


# (name, path of the value in the JSON, comparison, target, unit for display)
TARGETS = [
    ("first load >= 0.7x LOAD DATA rows/s", "step_first_load.ratio_to_load_data", ">=", 0.7, "x"),
    ("first load >= 5x to_sql rows/s", "step_first_load.ratio_to_to_sql", ">=", 5.0, "x"),
    ("unchanged re-run <= 0.05x first load time", "step_rerun.time_ratio_to_first", "<=", 0.05, "x"),
    ("next version <= 0.35x first load time", "step_new_version.time_ratio_to_first", "<=", 0.35, "x"),
    ("next version writes only the differences", "step_new_version.wrote_only_differences", "==", True, ""),
    ("peak RSS at N <= 400 MB", "peak_rss.n_mb", "<=", 400.0, " MB"),
    ("peak RSS at N <= 1.5x at N/10", "peak_rss.ratio", "<=", 1.5, "x"),
    ("2N rows <= 2.2x the time of N", "step_double.time_ratio_to_first", "<=", 2.2, "x"),
    ("peak RSS at 2N <= 400 MB", "peak_rss.n2_mb", "<=", 400.0, " MB"),
    ("HubSpot step within 1.07x the fastest legal time", "hubspot.ratio_to_fastest_legal", "<=", 1.07, "x"),
    ("HubSpot 0 contacts lost", "hubspot.lost", "==", 0, ""),
    ("HubSpot 0 contacts duplicated", "hubspot.duplicated", "==", 0, ""),
    ("HubSpot 0 requests on the unchanged re-run", "hubspot.rerun.requests_sent", "==", 0, ""),
    ("HubSpot 0 429s (issue item 3: never exceed the limit)", "hubspot.status_429", "==", 0, ""),
    ("HubSpot update of M/10 changed contacts: one batch per 100", "hubspot.update.exact_batches", "==", True, ""),
    ("HubSpot at the second limit: 0 429s", "hubspot_second.status_429", "==", 0, ""),
]


def evaluate_targets(results: dict, targets: list[tuple] | None = None) -> list[dict]:
    compare: dict[str, Callable[[float, float], bool]] = {
        ">=": lambda a, b: a >= b,
        "<=": lambda a, b: a <= b,
        "==": lambda a, b: a == b,
    }
    evaluated = []
    for name, path, op, target, unit in TARGETS if targets is None else targets:
        value = _get(results, path)
        passed = None if value is None else bool(compare[op](value, target))
        evaluated.append(
            {
                "name": name,
                "value": value,
                "op": op,
                "target": target,
                "unit": unit.strip(),
                "passed": passed,
                "source": path,
            }
        )
    return evaluated


def _n(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}{suffix}"
    return str(value)


def render_table(results: dict) -> str:
    m, p = results["machine"], results["parameters"]
    lines = []
    memory = f"{m['memory_bytes'] / 2**30:.1f} GiB" if m.get("memory_bytes") else "? GiB"
    lines.append(
        f"Machine: {m.get('cpu_model')}, nproc {m.get('nproc')}, {memory} RAM, "
        f"MariaDB {m.get('mariadb_version')}, Python {m.get('python_version')}"
    )
    lines.append(
        f"Load average: {m.get('load_average_start')} at start, {m.get('load_average_end')} at end (1, 5, 15 min)"
    )
    csv_info = results["csv"]
    lines.append(
        f"N = {p['rows']:,} rows (CSV {_n(csv_info.get('bytes') and csv_info['bytes'] / MB, 1)} MB, "
        f"generated in {_n(csv_info.get('generate_seconds'), 1)} s), M = {p['hubspot_contacts']:,} contacts, "
        f"HubSpot limit {p['hubspot_rate_limit']} requests / {p['hubspot_interval_ms'] / 1000:g} s, "
        f"latency {p['hubspot_latency_s']:g} s, server in a {p['hubspot_server']}"
    )
    lines.append("")

    targets = {t["source"]: t for t in results["targets"]}
    rows: list[tuple[str, str, str]] = []

    def row(label: str, value: str, source: str | None = None) -> None:
        rows.append((label, value, source or ""))

    ts, ld = results["to_sql"], results["load_data"]
    first, rerun, small = results["step_first_load"], results["step_rerun"], results["step_small"]
    rss, hs = results["peak_rss"], results["hubspot"]
    row("pandas read_csv + to_sql, plain table", f"{_n(ts.get('rows_per_s'))} rows/s ({_n(ts.get('seconds'), 1)} s)")
    row(
        "LOAD DATA LOCAL INFILE, plain table (ceiling)",
        f"{_n(ld.get('rows_per_s'))} rows/s ({_n(ld.get('seconds'), 1)} s)",
    )
    row(
        f"contacts_table step, first load [{first.get('writer') or '?'}]",
        f"{_n(first.get('rows_per_s'))} rows/s ({_n(first.get('seconds'), 1)} s; "
        f"{_n(first.get('inserted'))} inserted, {_n(first.get('rejected'))} rejected)",
    )
    row("  ratio to LOAD DATA", _n(first.get("ratio_to_load_data"), 2, "x"), "step_first_load.ratio_to_load_data")
    row("  ratio to to_sql", _n(first.get("ratio_to_to_sql"), 2, "x"), "step_first_load.ratio_to_to_sql")
    row(
        "contacts_table step, re-run on the unchanged file",
        f"{_n(rerun.get('seconds'), 2)} s = {_n(rerun.get('time_ratio_to_first'), 3, 'x')} the first load "
        f"(skipped: {rerun.get('skipped_identical_source')})",
        "step_rerun.time_ratio_to_first",
    )
    nv = results["step_new_version"]
    row(
        "contacts_table step, next version (10% changed, 1% new, 1% removed)",
        f"{_n(nv.get('seconds'), 2)} s = {_n(nv.get('time_ratio_to_first'), 3, 'x')} the first load "
        f"({_n(nv.get('staged'))} staged: {_n(nv.get('inserted'))} inserted, {_n(nv.get('updated'))} updated; "
        f"{_n(nv.get('deleted'))} deleted, {_n(nv.get('not_staged'))} left out as unchanged)",
        "step_new_version.time_ratio_to_first",
    )
    row(
        "  of which the database applying the difference",
        f"{_n(nv.get('apply_seconds'), 2)} s (delete, update, insert, keep the removed; one transaction)",
    )
    row("  wrote only the differences", _n(nv.get("wrote_only_differences")), "step_new_version.wrote_only_differences")
    row(
        "  peak RSS of the step",
        f"{_n(nv.get('peak_rss_mb'), 0, ' MB')} (after imports {_n(nv.get('baseline_rss_mb'), 0, ' MB')})",
    )
    row(
        f"peak RSS of the step at N/10 ({_n(small.get('rows_read'))} rows)",
        f"{_n(rss.get('n10_mb'), 0, ' MB')} (after imports {_n(rss.get('n10_baseline_mb'), 0, ' MB')})",
    )
    row(
        f"peak RSS of the step at N ({_n(first.get('rows_read'))} rows)",
        f"{_n(rss.get('n_mb'), 0, ' MB')} (after imports {_n(rss.get('n_baseline_mb'), 0, ' MB')})",
        "peak_rss.n_mb",
    )
    row("  ratio N to N/10", _n(rss.get("ratio"), 2, "x"), "peak_rss.ratio")
    double = results["step_double"]
    row(
        f"contacts_table step at 2N ({_n(double.get('rows_read'))} rows), first load",
        f"{_n(double.get('seconds'), 1)} s = {_n(double.get('time_ratio_to_first'), 2, 'x')} the time of N",
        "step_double.time_ratio_to_first",
    )
    row("  peak RSS at 2N", f"{_n(rss.get('n2_mb'), 0, ' MB')}", "peak_rss.n2_mb")
    row(
        f"hubspot_contacts, {_n(hs.get('expected'))} new contacts",
        f"{_n(hs.get('contacts_per_s'), 1)} contacts/s ({_n(hs.get('seconds'), 1)} s step; "
        f"ceiling {_n(hs.get('ceiling_contacts_per_s'))}/s)",
    )
    row(
        "  against the fastest legal time",
        f"{_n(hs.get('ratio_to_fastest_legal'), 3, 'x')} of {_n(hs.get('fastest_legal_seconds'), 1)} s (the upserts "
        f"alone); {_n(hs.get('fastest_legal_all_requests_seconds'), 1)} s for all {_n(hs.get('requests_sent'))} "
        f"requests; {_n(hs.get('fraction_of_ceiling'), 3)} of the ceiling's rate",
        "hubspot.ratio_to_fastest_legal",
    )
    row(
        "  requests sent (upserts + other)",
        f"{_n(hs.get('requests_sent'))} ({_n(hs.get('upsert_requests'))} + {_n(hs.get('other_requests'))}); "
        f"most in one window {_n(hs.get('max_requests_in_window'))}; "
        f"over {_n(hs.get('connections_opened'))} connections ({_n(hs.get('max_in_flight'))} in flight at most)",
    )
    row(
        "  before the step (the preflight's listing)",
        f"{_n(hs.get('setup_requests'))} requests, then the load of M rows; "
        f"waited {_n(hs.get('waited_for_window_seconds'), 1)} s more for them to leave the window",
    )
    row("  429s received", _n(hs.get("status_429")), "hubspot.status_429")
    row(
        "  lost (expected - stored)",
        f"{_n(hs.get('lost'))} ({_n(hs.get('expected'))} - {_n(hs.get('stored'))})",
        "hubspot.lost",
    )
    row("  duplicated (server ids vs emails)", _n(hs.get("duplicated")), "hubspot.duplicated")
    update = hs.get("update") or {}
    row(
        f"hubspot_contacts after {_n(update.get('changed'))} contacts changed: batch requests",
        f"{_n(update.get('upsert_requests'))} (expected {_n(update.get('expected_batches'))}; "
        f"{_n(update.get('requests_sent'))} requests in all, {_n(update.get('seconds'), 1)} s)",
        "hubspot.update.exact_batches",
    )
    hs2 = results["hubspot_second"]
    row(
        f"hubspot_contacts at {_n(hs2.get('rate_limit'))} requests / {p['hubspot_interval_ms'] / 1000:g} s",
        f"{_n(hs2.get('contacts_per_s'), 1)} contacts/s ({_n(hs2.get('seconds'), 1)} s; "
        f"{_n(hs2.get('fraction_of_ceiling'), 3)} of the ceiling {_n(hs2.get('ceiling_contacts_per_s'))}/s; "
        f"{_n(hs2.get('status_429'))} 429s)",
        "hubspot_second.status_429",
    )
    row(
        "hubspot_contacts re-run, nothing changed: requests",
        f"{_n(_get(hs, 'rerun.requests_sent'))} ({_n(_get(hs, 'rerun.seconds'), 2)} s step)",
        "hubspot.rerun.requests_sent",
    )

    header = ("measure", "value", "target", "result")
    body = []
    for label, value, source in rows:
        target = targets.get(source)
        if target is None:
            body.append((label, value, "", ""))
            continue
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[target["passed"]]
        unit = target["unit"]
        shown = f"{target['op']} {target['target']:g}{' ' + unit if unit == 'MB' else unit}"
        body.append((label, value, shown, verdict))
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*header).rstrip())
    lines.append(fmt.format(*("-" * w for w in widths)).rstrip())
    lines += [fmt.format(*r).rstrip() for r in body]
    passed = [t["passed"] for t in results["targets"]]
    lines.append("")
    lines.append(
        f"Targets: {passed.count(True)} passed, {passed.count(False)} failed, {passed.count(None)} not measured"
    )
    if results["errors"]:
        lines.append("Errors:")
        lines += [f"  {phase}: {message}" for phase, message in results["errors"].items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="N, rows of the generated CSV (default 1,000,000)")
    parser.add_argument("--hubspot-contacts", type=int, default=100_000, help="M, contacts to sync (default 100,000)")
    parser.add_argument(
        "--hubspot-rate-limit",
        type=int,
        default=100,
        help="R, requests per window on the local HubSpot server (default 100)",
    )
    parser.add_argument(
        "--hubspot-second-rate-limit",
        type=int,
        default=190,
        help="the same sync again at this limit, reported beside (default 190, Pro/Enterprise; 0: skip)",
    )
    parser.add_argument("--hubspot-interval-ms", type=int, default=10_000, help="the rate window (default 10,000 ms)")
    parser.add_argument(
        "--hubspot-latency",
        type=float,
        default=0.08,
        help="seconds the local HubSpot server takes per request (default 0.08)",
    )
    parser.add_argument(
        "--hubspot-in-flight", type=int, default=None, help="concurrent batch requests (default: the resource's, 4)"
    )
    parser.add_argument(
        "--hubspot-server",
        choices=("process", "thread"),
        default="process",
        help="run the local HubSpot server in its own process (default) or in a thread of this one",
    )
    parser.add_argument("--chunk-rows", type=int, default=None, help="the step's chunk size (default: the loader's)")
    parser.add_argument(
        "--mysql-url",
        default=os.environ.get("ETL_BENCH_MYSQL_URL") or os.environ.get("ETL_TEST_MARIADB_URL") or DEFAULT_MYSQL_URL,
        help=f"server to create the benchmark databases on (default {DEFAULT_MYSQL_URL}, "
        "or ETL_BENCH_MYSQL_URL / ETL_TEST_MARIADB_URL)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None, help="where the CSVs go (default: a temporary dir)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the JSON file (default {DEFAULT_OUT})")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="whole runs, each figure then reported as min / median / max; a target is met when the median meets it",
    )
    parser.add_argument("--log-level", default="INFO", help="progress output (default INFO)")
    args = parser.parse_args(argv)
    if args.rows < 10:
        parser.error("--rows must be at least 10 (the memory ratio needs N/10 rows)")
    if args.hubspot_contacts < 1 or args.hubspot_rate_limit < 1 or args.hubspot_interval_ms < 1:
        parser.error("--hubspot-contacts, --hubspot-rate-limit and --hubspot-interval-ms must be positive")
    return args


def _scrub_environment() -> list[str]:
    removed = sorted(name for name in os.environ if name.startswith(_SCRUBBED_PREFIXES))
    for name in removed:
        del os.environ[name]
    # Each phase loads its own data set over the last one's on purpose: not a mass delete to stop.
    os.environ["ETL_ALLOW_MASS_DELETE"] = "true"
    return removed


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    started_at = dt.datetime.now(dt.UTC)
    wall = time.perf_counter()
    mysql_url = args.mysql_url
    scrubbed = _scrub_environment()
    admin = _engine(_database_url(mysql_url, None))
    results: dict[str, Any] = {
        "schema_version": 1,
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": None,
        "total_seconds": None,
        "machine": machine_info(admin),
        "parameters": {
            "rows": args.rows,
            "small_rows": args.rows // 10,
            "hubspot_contacts": args.hubspot_contacts,
            "hubspot_rate_limit": args.hubspot_rate_limit,
            "hubspot_interval_ms": args.hubspot_interval_ms,
            "hubspot_latency_s": args.hubspot_latency,
            "hubspot_in_flight": args.hubspot_in_flight,
            "hubspot_server": args.hubspot_server,
            "chunk_rows": args.chunk_rows,
            "seed": args.seed,
            "dirty_rows": True,
            "mysql_server": sa.make_url(mysql_url).render_as_string(hide_password=True),
            "scrubbed_environment": scrubbed,
        },
        "csv": {"rows": None, "bytes": None, "generate_seconds": None, "small_rows": None, "small_bytes": None},
        "to_sql": {"rows": None, "seconds": None, "rows_per_s": None, "method": None},
        "load_data": {
            "rows": None,
            "seconds": None,
            "rows_per_s": None,
            "statement": None,
            "same_content_as_to_sql": None,
        },
        "step_first_load": {**{key: None for key in STEP_KEYS}, "ratio_to_load_data": None, "ratio_to_to_sql": None},
        "step_rerun": {**{key: None for key in STEP_KEYS}, "time_ratio_to_first": None},
        "step_new_version": {
            **{key: None for key in STEP_KEYS},
            "time_ratio_to_first": None,
            "lines": None,
            "wrote_only_differences": None,
        },
        "step_small": {key: None for key in STEP_KEYS},
        "step_double": {**{key: None for key in STEP_KEYS}, "time_ratio_to_first": None},
        "peak_rss": {
            "n_rows": None,
            "n_bytes": None,
            "n_mb": None,
            "n_baseline_mb": None,
            "n_sampled_mb": None,
            "n10_rows": None,
            "n10_bytes": None,
            "n10_mb": None,
            "n10_baseline_mb": None,
            "n10_sampled_mb": None,
            "n2_rows": None,
            "n2_bytes": None,
            "n2_mb": None,
            "n2_baseline_mb": None,
            "n2_sampled_mb": None,
            "ratio": None,
            "source": None,
        },
        "hubspot": empty_hubspot_result(),
        "hubspot_second": empty_hubspot_result(),
        "targets": [],
        "all_targets_passed": None,
        "errors": {},
        "settle_seconds": {},  # waited before each phase for the server to flush the last one's writes
        "table": None,
    }
    errors = results["errors"]

    def phase(name: str, fn: Callable[[], Any]) -> Any:
        log.info("=== %s", name)
        try:
            waited = results["settle_seconds"][name] = settle(admin)
            if waited is not None:
                log.info("the server flushed the last phase's writes in %.1f s", waited)
            return fn()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded, the other phases still run
            log.exception("%s failed", name)
            errors[name] = f"{type(exc).__name__}: {exc}"[:2000]
            return None

    token = uuid.uuid4().hex[:8]
    names = {
        "main": f"etl_bench_{token}",
        "small": f"etl_bench_{token}_small",
        "double": f"etl_bench_{token}_double",
        "hubspot": f"etl_bench_{token}_hs",
        "hubspot_second": f"etl_bench_{token}_hs2",
    }
    created: list[str] = []
    results["parameters"]["databases"] = list(names.values())  # created now, dropped at the end
    workdir_handle = None
    if args.workdir is None:
        workdir_handle = tempfile.TemporaryDirectory(prefix="etl_bench_")
        workdir = Path(workdir_handle.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    generator = _load_generator()
    try:
        with admin.connect() as conn:
            for name in names.values():
                conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
                created.append(name)
        urls = {key: _database_url(mysql_url, name) for key, name in names.items()}
        main_engine = _engine(urls["main"])

        csv_path, small_path = workdir / f"contacts_{args.rows}.csv", workdir / f"contacts_{args.rows // 10}.csv"
        new_version_path = workdir / f"contacts_{args.rows}_next.csv"
        double_path = workdir / f"contacts_{2 * args.rows}.csv"

        def generate() -> None:
            started = time.perf_counter()
            generator.write_csv(csv_path, args.rows, args.seed, dirty=True)
            results["csv"]["generate_seconds"] = round(time.perf_counter() - started, 2)
            generator.write_csv(small_path, args.rows // 10, args.seed, dirty=True)  # the same first rows
            results["step_new_version"]["lines"] = generator.write_new_version(csv_path, new_version_path)
            generator.write_csv(double_path, 2 * args.rows, args.seed, dirty=True)
            results["csv"].update(
                rows=args.rows,
                bytes=csv_path.stat().st_size,
                small_rows=args.rows // 10,
                small_bytes=small_path.stat().st_size,
            )

        log.info("=== generating %s + %s rows in %s", f"{args.rows:,}", f"{args.rows // 10:,}", workdir)
        generate()  # nothing to measure without it: a failure here ends the run
        columns = _plain_columns(csv_path)

        to_sql = phase("pandas.to_sql", lambda: bench_to_sql(main_engine, csv_path, columns))
        if to_sql:
            results["to_sql"].update(to_sql)
        load_data = phase("LOAD DATA LOCAL INFILE", lambda: bench_load_data(main_engine, csv_path, columns))
        if load_data:
            results["load_data"].update(load_data)
            if to_sql:
                results["load_data"]["same_content_as_to_sql"] = _content_digest(
                    main_engine, to_sql["table"], columns
                ) == _content_digest(main_engine, load_data["table"], columns)
        main_engine.dispose()

        first = phase(
            "contacts_table step, first load (child process)",
            lambda: run_step_child(csv_path, urls["main"], "benchmark-first", args.chunk_rows),
        )
        if first:
            results["step_first_load"].update(first)
            results["step_first_load"]["ratio_to_load_data"] = _ratio(
                first["rows_per_s"], results["load_data"]["rows_per_s"]
            )
            results["step_first_load"]["ratio_to_to_sql"] = _ratio(first["rows_per_s"], results["to_sql"]["rows_per_s"])
            rerun = phase(
                "contacts_table step, re-run on the unchanged file (this process)",
                lambda: run_step_here(csv_path, urls["main"], "benchmark-rerun", args.chunk_rows),
            )
            if rerun:
                if rerun["skipped_identical_source"]:
                    rerun["rows_per_s"] = None  # nothing was loaded: a rate would mean nothing
                results["step_rerun"].update(rerun)
                results["step_rerun"]["time_ratio_to_first"] = _ratio(rerun["seconds"], first["seconds"], 4)
            new_version = phase(
                "contacts_table step, the next version: 10% changed, 1% new, 1% removed (child process)",
                lambda: run_step_child(new_version_path, urls["main"], "benchmark-next", args.chunk_rows),
            )
            if new_version:
                results["step_new_version"].update(new_version)
                results["step_new_version"]["time_ratio_to_first"] = _ratio(new_version["seconds"], first["seconds"])
                results["step_new_version"]["peak_rss_mb"] = round(new_version["peak_rss_bytes"] / MB, 1)
                results["step_new_version"]["baseline_rss_mb"] = round(new_version["baseline_rss_bytes"] / MB, 1)
                # Exactly the differences written: every staged row inserted or updated, the rest untouched.
                results["step_new_version"]["wrote_only_differences"] = (
                    new_version["staged"] == new_version["inserted"] + new_version["updated"]
                    and new_version["not_staged"] == new_version["unchanged"]
                )
        small = phase(
            "contacts_table step at N/10 (child process, fresh database)",
            lambda: run_step_child(small_path, urls["small"], "benchmark-small", args.chunk_rows),
        )
        if small:
            results["step_small"].update(small)
        double = phase(
            "contacts_table step at 2N (child process, fresh database)",
            lambda: run_step_child(double_path, urls["double"], "benchmark-double", args.chunk_rows),
        )
        if double:
            results["step_double"].update(double)
            if first:
                results["step_double"]["time_ratio_to_first"] = _ratio(double["seconds"], first["seconds"])
        rss = results["peak_rss"]
        steps = (("n", results["step_first_load"]), ("n10", results["step_small"]), ("n2", results["step_double"]))
        for prefix, step in steps:
            peak = step.get("peak_rss_bytes")
            rss[f"{prefix}_rows"] = step.get("rows_read")
            rss[f"{prefix}_bytes"] = peak
            rss[f"{prefix}_mb"] = round(peak / MB, 1) if peak else None
            rss[f"{prefix}_baseline_mb"] = (
                round(step["baseline_rss_bytes"] / MB, 1) if step.get("baseline_rss_bytes") else None
            )
            rss[f"{prefix}_sampled_mb"] = (
                round(step["sampled_peak_rss_bytes"] / MB, 1) if step.get("sampled_peak_rss_bytes") else None
            )
        rss["ratio"] = _ratio(rss["n_bytes"], rss["n10_bytes"])
        rss["source"] = results["step_first_load"].get("peak_rss_source")

        hubspot = phase(
            "hubspot_contacts against the local HubSpot server",
            lambda: run_hubspot(
                urls["hubspot"],
                workdir / f"hubspot_{args.hubspot_contacts}.csv",
                args.hubspot_contacts,
                args.hubspot_rate_limit,
                args.hubspot_interval_ms,
                args.hubspot_latency,
                args.hubspot_in_flight,
                log,
                args.log_level.upper(),
                generate=lambda path, rows: generator.write_csv(path, rows, args.seed + 1, dirty=False),
                server_mode=args.hubspot_server,
            ),
        )
        if hubspot:
            results["hubspot"].update(hubspot)
        if args.hubspot_second_rate_limit:
            second = phase(
                f"hubspot_contacts at {args.hubspot_second_rate_limit} requests per window",
                lambda: run_hubspot(
                    urls["hubspot_second"],
                    workdir / f"hubspot_{args.hubspot_contacts}.csv",  # the same contacts
                    args.hubspot_contacts,
                    args.hubspot_second_rate_limit,
                    args.hubspot_interval_ms,
                    args.hubspot_latency,
                    args.hubspot_in_flight,
                    log,
                    args.log_level.upper(),
                    server_mode=args.hubspot_server,
                ),
            )
            if second:
                results["hubspot_second"].update(second)
    finally:
        for name in created:
            try:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
            except sa.exc.SQLAlchemyError as exc:
                log.warning("could not drop the benchmark database %s: %s", name, exc)
        admin.dispose()
        if workdir_handle is not None:
            workdir_handle.cleanup()

    results["machine"]["load_average_end"] = _loadavg()
    results["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results["total_seconds"] = round(time.perf_counter() - wall, 1)
    results["targets"] = evaluate_targets(results)
    measured = [t["passed"] for t in results["targets"]]
    results["all_targets_passed"] = all(measured) if None not in measured else None
    results["table"] = render_table(results)
    status = 1 if errors or (args.strict and results["all_targets_passed"] is not True) else 0
    return results, status


def summarize(runs: list[dict]) -> dict[str, Any]:
    """Several whole runs: each target's figure as min / median / max, judged by the median."""
    targets = []
    for name, path, op, target, unit in TARGETS:
        values = [_get(results, path) for results in runs]
        measured = [value for value in values if value is not None]
        summary: dict[str, Any] = {"name": name, "op": op, "target": target, "unit": unit.strip(), "values": values}
        if measured and all(isinstance(value, bool) for value in measured):
            summary["passed"] = sum(value is True for value in measured) * 2 > len(values)
        elif measured:
            middle = statistics.median(measured)
            summary.update(min=min(measured), median=middle, max=max(measured))
            summary["passed"] = evaluate_targets({"_": {"v": middle}}, [(name, "_.v", op, target, unit)])[0]["passed"]
        else:
            summary["passed"] = None
        targets.append(summary)
    lines = [f"{len(runs)} runs; load average (1, 5, 15 min) at start and end of each:"]
    lines += [
        f"  run {number}: {results['machine'].get('load_average_start')} -> {results['machine'].get('load_average_end')}"
        for number, results in enumerate(runs, 1)
    ]
    lines.append("")
    header = ("target", "min", "median", "max", "result")
    body = []
    for t in targets:
        shown = [_n(t.get(key), 3) for key in ("min", "median", "max")] if "median" in t else [_n(t["values"])] * 3
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["passed"]]
        body.append((f"{t['name']} ({t['op']} {t['target']:g})", *shown, verdict))
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(5)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines += [fmt.format(*header).rstrip(), fmt.format(*("-" * w for w in widths)).rstrip()]
    lines += [fmt.format(*row).rstrip() for row in body]
    return {"runs": runs, "targets": targets, "table": "\n".join(lines)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[bench %(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(args.log_level.upper())
    log.propagate = False
    try:
        outcomes = [run(args) for _ in range(max(args.repeat, 1))]
    except sa.exc.OperationalError as exc:
        server = sa.make_url(args.mysql_url).render_as_string(hide_password=True)
        print(f"benchmark: cannot use the MySQL/MariaDB server at {server}: {exc.orig}", file=sys.stderr)
        return 2
    results, status = outcomes[0]
    if len(outcomes) > 1:
        for each, _ in outcomes:
            print(each["table"], end="\n\n")
        results = summarize([each for each, _ in outcomes])
        status = max(each_status for _, each_status in outcomes)
        if args.strict and not all(t["passed"] for t in results["targets"]):
            status = 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(results["table"])
    print(f"\nJSON: {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
