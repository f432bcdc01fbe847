"""A smoke run of benchmarks/run.py with tiny sizes, so the script cannot rot.

Only that it runs end to end on MariaDB and the local HubSpot server, prints its table and writes
its JSON with every key, and that the counts it reports are right. No timing assertions: the
figures of a tiny run on a shared machine mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

from benchmarks.run import settle, summarize
from etl_assets_tests.conftest import MARIADB_ADMIN_URL, REPO

ROWS, SMALL_ROWS, CONTACTS = 2000, 200, 500

TOP_KEYS = {
    "schema_version",
    "started_at",
    "finished_at",
    "total_seconds",
    "machine",
    "parameters",
    "csv",
    "to_sql",
    "load_data",
    "step_first_load",
    "step_rerun",
    "step_new_version",
    "step_small",
    "step_double",
    "peak_rss",
    "hubspot",
    "hubspot_second",
    "targets",
    "all_targets_passed",
    "errors",
    "table",
}
MACHINE_KEYS = {
    "nproc",
    "memory_bytes",
    "cpu_model",
    "mariadb_version",
    "python_version",
    "load_average_start",
    "load_average_end",
}
STEP_KEYS = {
    "rows_read",
    "inserted",
    "rejected",
    "contacts_after",
    "writer",
    "skipped_identical_source",
    "apply_seconds",
    "seconds",
    "rows_per_s",
    "peak_rss_bytes",
    "baseline_rss_bytes",
}
HUBSPOT_KEYS = {
    "contacts",
    "rate_limit",
    "interval_ms",
    "ceiling_contacts_per_s",
    "seconds",
    "contacts_per_s",
    "fraction_of_ceiling",
    "requests_sent",
    "upsert_requests",
    "connections_opened",
    "status_429",
    "expected",
    "stored",
    "lost",
    "duplicated",
    "state_synced",
    "rerun",
}
TARGET_NAMES = [
    "first load >= 0.7x LOAD DATA",
    "first load >= 5x to_sql",
    "unchanged re-run <= 0.05x",
    "next version <= 0.35x",
    "next version writes only the differences",
    "peak RSS at N <= 400 MB",
    "peak RSS at N <= 1.5x at N/10",
    "2N rows <= 2.2x",
    "peak RSS at 2N <= 400 MB",
    "HubSpot step within 1.07x the fastest legal time",
    "HubSpot 0 contacts lost",
    "HubSpot 0 contacts duplicated",
    "HubSpot 0 requests on the unchanged re-run",
    "HubSpot update of M/10 changed contacts: one batch per 100",
    "HubSpot at the second limit: 0 429s",
]


def existing_databases(names: list[str]) -> set[str]:
    engine = sa.create_engine(MARIADB_ADMIN_URL)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT schema_name FROM information_schema.schemata WHERE schema_name IN :names").bindparams(
                    sa.bindparam("names", expanding=True)
                ),
                {"names": names},
            )
            return {row[0] for row in found}
    finally:
        engine.dispose()


def dirty_page_limit() -> float:
    engine = sa.create_engine(MARIADB_ADMIN_URL)
    try:
        with engine.connect() as conn:
            return float(conn.exec_driver_sql("SELECT @@innodb_max_dirty_pages_pct").scalar_one())
    finally:
        engine.dispose()


def test_benchmark_smoke_run_prints_the_table_and_writes_every_figure(tmp_path):
    out = tmp_path / "results" / "smoke.json"
    limit_before = dirty_page_limit()
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "run.py"),
            "--rows",
            str(ROWS),
            "--hubspot-contacts",
            str(CONTACTS),
            "--hubspot-rate-limit",
            "5",
            "--hubspot-interval-ms",
            "1000",
            "--hubspot-latency",
            "0.01",
            "--mysql-url",
            MARIADB_ADMIN_URL,
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    # The table: every measure and every target, with a verdict column.
    table = completed.stdout
    for label in (
        "pandas read_csv + to_sql",
        "LOAD DATA LOCAL INFILE",
        "contacts_table step, first load",
        "re-run on the unchanged file",
        "peak RSS of the step at N/10",
        "peak RSS of the step at N ",
        "hubspot_contacts, 500 new contacts",
        "429s received",
        "lost",
        "duplicated",
        "nothing changed: requests",
        "Machine:",
        "MariaDB",
        "Load average",
    ):
        assert label in table, label
    assert "result" in table and ("PASS" in table or "FAIL" in table)

    results = json.loads(out.read_text())
    assert TOP_KEYS <= set(results), TOP_KEYS - set(results)
    assert results["errors"] == {}
    assert results["table"] in table
    assert MACHINE_KEYS <= set(results["machine"]) and results["machine"]["mariadb_version"]
    # Each phase started once the server had flushed the one before (it does not on its own when idle).
    settled = results["settle_seconds"]
    assert len(settled) >= 8 and all(waited is not None and waited < 30 for waited in settled.values()), settled
    assert dirty_page_limit() == limit_before  # the flush-now setting it used is put back
    for key in ("step_first_load", "step_rerun", "step_new_version", "step_small", "step_double"):
        assert STEP_KEYS <= set(results[key]), (key, STEP_KEYS - set(results[key]))
    assert HUBSPOT_KEYS <= set(results["hubspot"])
    assert {"requests_sent", "status_429", "due"} <= set(results["hubspot"]["rerun"])

    # Every figure a target needs was measured.
    names = [target["name"] for target in results["targets"]]
    for expected in TARGET_NAMES:
        assert any(name.startswith(expected) for name in names), expected
    for target in results["targets"]:
        assert target["value"] is not None and target["passed"] in (True, False), target

    # The counts behind the figures (not timings).
    assert results["csv"]["rows"] == ROWS
    assert results["to_sql"]["rows"] == results["load_data"]["rows"] == ROWS
    assert results["load_data"]["same_content_as_to_sql"] is True
    first, rerun, small = results["step_first_load"], results["step_rerun"], results["step_small"]
    assert first["rows_read"] == ROWS and first["inserted"] + first["rejected"] == ROWS
    assert first["writer"] == "LOAD DATA LOCAL INFILE"
    assert rerun["skipped_identical_source"] is True and rerun["inserted"] == 0
    new_version = results["step_new_version"]
    lines = new_version["lines"]
    assert lines == {"changed": ROWS // 10, "new": ROWS // 100, "removed": ROWS // 100}
    assert new_version["wrote_only_differences"] is True and new_version["inserted"] > 0
    assert new_version["staged"] < ROWS // 5 and new_version["not_staged"] > ROWS // 2
    assert 0 < new_version["apply_seconds"] < new_version["report_seconds"]
    assert new_version["peak_rss_mb"] > new_version["baseline_rss_mb"] > 0
    assert small["rows_read"] == SMALL_ROWS and results["step_double"]["rows_read"] == 2 * ROWS
    assert results["peak_rss"]["n_bytes"] > 0 and results["peak_rss"]["n10_bytes"] > 0
    hubspot = results["hubspot"]
    assert hubspot["expected"] == hubspot["stored"] == hubspot["created"] == hubspot["state_synced"] == CONTACTS
    assert hubspot["lost"] == 0 and hubspot["duplicated"] == 0 and hubspot["state_id_mismatch"] == 0
    assert hubspot["upsert_requests"] == CONTACTS // 100
    assert 1 <= hubspot["connections_opened"] <= hubspot["max_in_flight"]
    assert hubspot["rerun"]["requests_sent"] == 0 and hubspot["rerun"]["due"] == 0
    assert hubspot["update"]["changed"] == CONTACTS // 10 and hubspot["update"]["exact_batches"] is True
    second = results["hubspot_second"]
    assert second["rate_limit"] == 190 and second["expected"] == second["stored"] == CONTACTS

    # The databases it created are gone.
    assert len(results["parameters"]["databases"]) == 5
    assert existing_databases(results["parameters"]["databases"]) == set()


@pytest.mark.fast
def test_repeated_runs_are_judged_by_their_median():
    def one(ratio: float, exact: bool) -> dict:
        return {
            "machine": {"load_average_start": [0.1, 0.2, 0.3], "load_average_end": [0.4, 0.5, 0.6]},
            "step_new_version": {"time_ratio_to_first": ratio, "wrote_only_differences": exact},
        }

    summary = summarize([one(0.30, True), one(0.50, True), one(0.34, False)])
    by_name = {target["name"]: target for target in summary["targets"]}
    ratio = by_name["next version <= 0.35x first load time"]
    assert (ratio["min"], ratio["median"], ratio["max"], ratio["passed"]) == (0.30, 0.34, 0.50, True)
    assert by_name["next version writes only the differences"]["passed"] is True  # 2 of 3
    assert by_name["first load >= 0.7x LOAD DATA rows/s"]["passed"] is None  # not measured
    assert "run 3: [0.1, 0.2, 0.3] -> [0.4, 0.5, 0.6]" in summary["table"]
    missed = {t["name"]: t for t in summarize([one(0.36, False), one(0.40, True), one(0.2, False)])["targets"]}
    assert missed["next version <= 0.35x first load time"]["passed"] is False
    assert missed["next version writes only the differences"]["passed"] is False


def test_settle_without_the_right_to_flush_measures_on_and_changes_nothing(caplog):
    """A benchmark user without SUPER: no wait, a warning that says why, the server's setting untouched."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(MARIADB_ADMIN_URL)
    database = sa.make_url(MARIADB_ADMIN_URL).database
    with admin.begin() as conn:
        for host in ("%", "localhost"):
            conn.exec_driver_sql("CREATE USER %s@%s IDENTIFIED BY 'bench-pw-1234'", (name, host))
            conn.exec_driver_sql(f"GRANT ALL ON `{database}`.* TO %s@%s", (name, host))
    limited = sa.create_engine(sa.make_url(MARIADB_ADMIN_URL).set(username=name, password="bench-pw-1234"))
    try:
        limit_before = dirty_page_limit()
        assert settle(limited) is None
        assert "cannot ask the server to flush before a phase" in caplog.text
        assert dirty_page_limit() == limit_before
    finally:
        limited.dispose()
        with admin.begin() as conn:
            for host in ("%", "localhost"):
                conn.exec_driver_sql("DROP USER IF EXISTS %s@%s", (name, host))
        admin.dispose()
