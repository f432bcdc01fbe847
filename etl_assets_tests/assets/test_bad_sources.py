"""Source files from the wild, through the real steps: each gives its documented outcome.

A good load comes first; then the dataset's next version on the local Kaggle server is the bad
file. A file that cannot be loaded fails its step once (no step retries), with a message that
names the file and carries no traceback, and leaves `contacts`, the data dir and the database
as they were; a file with bad rows loads the good ones and rejects the others with reasons.
"""

import dagster as dg
import pytest
import sqlalchemy as sa

from etl_assets_tests.assets.test_assets import count, failure_message, materialization, run_daily_etl
from etl_assets_tests.conftest import SAMPLE_CSV

HEADER, *ROWS = SAMPLE_CSV.read_text().splitlines()
SOURCE_STEPS = ["kaggle_dataset", "contacts_table"]


def load_sources():
    return run_daily_etl(asset_selection=[dg.AssetKey(step) for step in SOURCE_STEPS])


def with_company(line: str, company: str) -> str:
    fields = line.split(",")
    fields[4] = company
    return ",".join(fields)


def sample(*, first_rows: list[str] | None = None, header: str = HEADER, rows: int = 40) -> str:
    return "\n".join([header, *(first_rows or []), *ROWS[:rows]]) + "\n"


def retries(result) -> int:
    return sum(event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for event in result.all_events)


def leftovers(mariadb_url: str, data_dir) -> list[str]:
    engine = sa.create_engine(mariadb_url)
    staging = [name for name in sa.inspect(engine).get_table_names() if "staging" in name or "retired" in name]
    return (
        staging + [str(path) for path in data_dir.rglob(".extract-*")] + [str(p) for p in data_dir.rglob(".download-*")]
    )


REFUSED = {
    "cp1252": (
        sample(first_rows=[with_company(ROWS[0], "Société Générale")]).encode("cp1252"),
        "kaggle_dataset",
        "customers-1000.csv is not valid utf-8: byte 0xe9 at offset ",
    ),
    "utf-16": (
        sample().encode("utf-16"),
        "kaggle_dataset",
        "customers-1000.csv is not valid utf-8: byte 0xff at offset 0 (line 1)",
    ),
    "empty": (b"", "kaggle_dataset", "customers-1000.csv is empty: no header row"),
    "header-only": (f"{HEADER}\n".encode(), "kaggle_dataset", "customers-1000.csv has a header but no data rows"),
    "duplicate-mapped-header": (
        sample(header=HEADER.replace("Index", "Email")).encode(),
        "contacts_table",
        "customers-1000.csv has the mapped column(s) ['Email'] more than once",
    ),
    "quoted-newline-in-header": (
        sample(header=HEADER.replace("Company", '"Com\npany"')).encode(),
        "contacts_table",
        "customers-1000.csv lacks the mapped column(s) ['Company']",
    ),
    "all-rejected": (
        sample(first_rows=["1,2,3"], rows=0).encode(),
        "contacts_table",
        "all 1 rows of customers-1000.csv were rejected (wrong_field_count (1))",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_file_that_cannot_be_loaded_fails_once_clearly_and_changes_nothing(
    name, pipeline_env, mariadb_url, kaggle_server, tmp_path
):
    content, step, expected = REFUSED[name]
    assert load_sources().success
    kaggle_server.bump_version("datablist", "customers", {"customers-1000.csv": content})
    result = load_sources()
    assert not result.success
    message = failure_message(result)
    assert f"{step}: " in message and expected in message
    assert "Traceback" not in message and "Error:" not in message
    assert retries(result) == 0
    assert count(mariadb_url, "SELECT COUNT(*) FROM contacts") == 988
    assert count(mariadb_url, "SELECT COUNT(*) FROM etl_loads") == 1
    assert leftovers(mariadb_url, tmp_path / "etl_data") == []


@pytest.mark.parametrize(("encoding", "setting"), [("cp1252", "cp1252"), ("utf-16", "utf-16")])
def test_a_declared_encoding_is_read(encoding, setting, pipeline_env, mariadb_url, kaggle_server, monkeypatch):
    content = sample(
        first_rows=[with_company(ROWS[0], "Société Générale").replace(ROWS[0].split(",")[9], "zoe@example.com")]
    )
    kaggle_server.add_dataset("datablist", "customers", {"customers-1000.csv": content.encode(encoding)})
    monkeypatch.setenv("ETL_SOURCE_ENCODING", setting)
    assert load_sources().success
    assert (
        count(
            mariadb_url,
            "SELECT COUNT(*) FROM contacts WHERE company = 'Société Générale' AND email = 'zoe@example.com'",
        )
        == 1
    )


LOADED_WITH_REJECTS = {
    "ragged": ([ROWS[0] + ",extra", "1,2,3"], {1: "wrong number of fields: 13", 2: "wrong number of fields: 3"}),
    "unescaped-quote": (
        [with_company(ROWS[0], '"He said "clean the file first" yesterday"')],
        {1: "broken quoting: text after a closing quote"},
    ),
    "unclosed-quote": ([with_company(ROWS[0], '"Stark')], {1: "broken quoting: a quoted value is never closed"}),
    "2-mib-field": ([with_company(ROWS[0], "x" * (2 << 20))], {1: "a field longer than the 1 MiB cap"}),
    "semicolon-row": ([ROWS[0].replace(",", ";")], {1: "wrong number of fields: 1"}),
}


@pytest.mark.parametrize("name", list(LOADED_WITH_REJECTS))
def test_bad_rows_are_rejected_on_their_own_and_no_value_is_altered(
    name, pipeline_env, mariadb_url, kaggle_server, tmp_path
):
    bad_rows, reasons = LOADED_WITH_REJECTS[name]
    # The sample's first 40 rows follow the bad ones; its row 1 would be a duplicate of a bad row's email.
    content = "\n".join([HEADER, *bad_rows, *ROWS[1:41]]) + "\n"
    kaggle_server.add_dataset("datablist", "customers", {"customers-1000.csv": content.encode()})
    result = load_sources()
    assert result.success
    loaded = materialization(result, "contacts_table")
    assert loaded["rejected"] == len(reasons) + sum(1 for row in ROWS[1:41] if "@" not in row.split(",")[9])
    engine = sa.create_engine(mariadb_url)
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT source_row, reason FROM contacts_rejected")).all())
        companies = set(conn.execute(sa.text("SELECT company FROM contacts")).scalars())
    for row, reason in reasons.items():
        assert stored[row].startswith(reason)
    assert not any("clean the file" in company or company.startswith("Stark,") for company in companies)
    assert leftovers(mariadb_url, tmp_path / "etl_data") == []


def test_space_padded_headers_a_bom_and_semicolons_load_like_the_sample(pipeline_env, mariadb_url, kaggle_server):
    header = ";".join(f" {name} " for name in HEADER.split(","))
    content = "\ufeff" + "\r\n".join([header, *(row.replace(",", ";") for row in ROWS)]) + "\r\n"
    kaggle_server.add_dataset("datablist", "customers", {"customers-1000.csv": content.encode()})
    result = load_sources()
    assert result.success
    assert (
        materialization(result, "contacts_table")["inserted"],
        count(mariadb_url, "SELECT COUNT(*) FROM contacts"),
    ) == (988, 988)


def test_a_mass_deletion_is_refused_until_allowed_and_the_removed_contacts_are_kept(
    pipeline_env, mariadb_url, kaggle_server, monkeypatch
):
    assert load_sources().success
    kaggle_server.bump_version("datablist", "customers", {"customers-1000.csv": sample(rows=500).encode()})
    refused = load_sources()
    assert not refused.success and retries(refused) == 0
    message = failure_message(refused)
    assert "more than ETL_MAX_DELETE_FRACTION=0.1 allows; nothing was changed" in message
    assert count(mariadb_url, "SELECT COUNT(*) FROM contacts") == 988

    monkeypatch.setenv("ETL_ALLOW_MASS_DELETE", "true")
    allowed = load_sources()
    assert allowed.success
    deleted = materialization(allowed, "contacts_table")["deleted"]
    assert deleted > 400
    assert count(mariadb_url, "SELECT COUNT(*) FROM contacts") == 988 - deleted
    assert count(mariadb_url, "SELECT COUNT(*) FROM contacts_removed") == deleted


def test_a_bad_delete_fraction_is_refused_naming_it(pipeline_env, monkeypatch):
    monkeypatch.setenv("ETL_MAX_DELETE_FRACTION", "10%")
    result = load_sources()
    assert "ETL_MAX_DELETE_FRACTION must be a number, got '10%'" in failure_message(result)
    assert retries(result) == 0


def test_previews_cut_long_values(pipeline_env, kaggle_server):
    content = "\n".join([HEADER, with_company(ROWS[0], "y" * 1_000_000), *ROWS[1:41]]) + "\n"
    kaggle_server.add_dataset("datablist", "customers", {"customers-1000.csv": content.encode()})
    result = load_sources()
    assert result.success
    for asset in SOURCE_STEPS:
        preview = materialization(result, asset)["preview"]
        assert len(preview) < 6_000 and "y" * 60 not in preview
    assert "y" * 59 + "…" in materialization(result, "kaggle_dataset")["preview"]
