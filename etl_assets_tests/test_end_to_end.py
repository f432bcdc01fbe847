"""The user's command, `dagster job execute -m etl_assets -j daily_etl`, in a subprocess."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from etl_assets.contacts.mapping import load_column_map
from etl_assets.contacts.records import SeenEmails, prepare_chunk
from etl_assets_tests.conftest import SAMPLE_CSV, run_dagster

pytestmark = pytest.mark.e2e


def expected_contacts() -> dict[str, dict]:
    """The valid, de-duplicated contacts of the sample, computed independently of the pipeline run."""
    raw = pa.Table.from_pandas(pd.read_csv(SAMPLE_CSV, dtype=str, keep_default_na=False), preserve_index=False)
    chunk = prepare_chunk(raw, load_column_map(None), np.arange(1, raw.num_rows + 1), SeenEmails())
    return {row["email"]: row for row in chunk.valid.to_pylist()}


def test_daily_etl_against_mariadb_and_local_servers(pipeline_env, mariadb_url, hubspot_server, kaggle_server):
    result = run_dagster("job", "execute", "-m", "etl_assets", "-j", "daily_etl", env=pipeline_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    expected = expected_contacts()
    stored = hubspot_server.contacts_snapshot()
    assert set(stored) == set(expected)
    sample = next(iter(expected.values()))
    properties = stored[sample["email"]]["properties"]
    assert properties["firstname"] == sample["first_name"]
    assert properties["source_customer_id"] == sample["customer_id"]
    assert properties["subscription_date"] == sample["subscription_date"]
    assert "source_customer_id" in {prop["name"] for prop in hubspot_server.properties}

    engine = sa.create_engine(mariadb_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM contacts")).scalar_one() == len(expected)
        assert conn.execute(sa.text("SELECT COUNT(*) FROM contacts_rejected")).scalar_one() == 12
        synced = conn.execute(sa.text("SELECT COUNT(*) FROM hubspot_sync_state WHERE status = 'synced'"))
        assert synced.scalar_one() == len(expected)
    assert kaggle_server.downloads == 1

    # The same command again: no download (same Kaggle version), no HubSpot upserts (nothing changed).
    upserts_before = hubspot_server.count_requests("/batch/upsert")
    again = run_dagster("job", "execute", "-m", "etl_assets", "-j", "daily_etl", env=pipeline_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert kaggle_server.downloads == 1
    assert hubspot_server.count_requests("/batch/upsert") == upserts_before


def test_daily_etl_with_nothing_configured(clean_env, tmp_path):
    result = run_dagster("job", "execute", "-m", "etl_assets", "-j", "daily_etl", env=clean_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "HubSpot: dry run (nothing configured: no HUBSPOT_ACCESS_TOKEN and no HUBSPOT_* setting)" in output
    assert "Kaggle: no KAGGLE_DATASET, using the embedded sample dataset" in output
    assert "Database: no ETL_DATABASE_URL, using SQLite" in output

    outboxes = list((tmp_path / "etl_data" / "hubspot_outbox").glob("*.jsonl"))
    assert len(outboxes) == 1
    batches = [json.loads(line) for line in outboxes[0].read_text().splitlines()]
    emails = [item["id"] for batch in batches for item in batch["body"]["inputs"]]
    assert max(len(batch["body"]["inputs"]) for batch in batches) == 100
    assert sorted(emails) == sorted(expected_contacts())
    assert Path(tmp_path / "etl_data" / "etl.sqlite").exists()
