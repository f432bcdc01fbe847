"""A zip bomb from Kaggle, through the real pipeline: refused at once, nothing changed, nothing left behind."""

import io
import os
import zipfile
from pathlib import Path

import sqlalchemy as sa

from etl_assets_tests.assets.test_assets import failure_message, run_daily_etl
from etl_assets_tests.assets.test_bad_sources import leftovers, retries


def contacts(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.text("SELECT * FROM contacts ORDER BY email"))]


def test_a_zip_bomb_fails_kaggle_dataset_once_and_changes_nothing(pipeline_env, mariadb_url, kaggle_server):
    assert run_daily_etl().success
    before = contacts(mariadb_url)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("customers-1000.csv", b"0" * 60_000_000)
    kaggle_server.bump_version("datablist", "customers", zip_bytes=bomb.getvalue())

    result = run_daily_etl()

    assert not result.success
    message = failure_message(result)
    assert "kaggle_dataset: 'customers-1000.csv' in the downloaded archive is 60,000,000 bytes" in message
    assert "a compression ratio over the cap of 200: it looks like a zip bomb" in message
    assert "Traceback" not in message
    assert retries(result) == 0
    assert kaggle_server.downloads == 2
    assert contacts(mariadb_url) == before
    assert leftovers(mariadb_url, Path(os.environ["ETL_DATA_DIR"])) == []
