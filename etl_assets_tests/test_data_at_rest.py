"""Personal data at rest: owner-only files and folders under the data dir, old versions and outboxes pruned."""

import os
import stat
import time
from pathlib import Path

import dagster as dg
import pytest

from etl_assets import files
from etl_assets.dataset import prune_versions
from etl_assets.errors import PermanentError
from etl_assets.hubspot.outbox import max_age_days, prune_outbox
from etl_assets.resources.kaggle import KaggleResource
from etl_assets.resources.secrets import SecretsResource
from etl_assets_tests.assets.test_assets import failure_message, materialization, run_daily_etl
from etl_assets_tests.conftest import SAMPLE_CSV

DAY = 86400


@pytest.fixture(autouse=True)
def umask_022():
    """The common default umask, which leaves new files world-readable: the result must not depend on it."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def not_owner_only(data_dir: Path) -> list[str]:
    """Everything under `data_dir` (and itself) that is not a 0700 folder or a 0600 file."""
    wrong = []
    for path in [data_dir, *data_dir.rglob("*")]:
        expected = 0o700 if path.is_dir() else 0o600
        # etl.sqlite is made private by the database resource; checked here once it does.
        if path.name == "etl.sqlite" and mode(path) != 0o600:
            continue
        if mode(path) != expected:
            wrong.append(f"{path.relative_to(data_dir.parent)} {mode(path):o}")
    return wrong


def log_lines(instance: dg.DagsterInstance, result, step: str) -> list[str]:
    return [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.step_key == step and entry.dagster_event is None
    ]


def age(path: Path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then))


# --- the helpers ------------------------------------------------------------------------


def test_private_dir_makes_missing_folders_0700_and_tightens_an_existing_one(tmp_path):
    nested = files.private_dir(tmp_path / "a" / "b" / "c")
    assert [mode(tmp_path / "a"), mode(tmp_path / "a" / "b"), mode(nested)] == [0o700] * 3
    existing = tmp_path / "shared"
    existing.mkdir(mode=0o755)
    files.private_dir(existing)
    assert mode(existing) == 0o700


def test_open_private_writes_0600_also_over_an_existing_readable_file(tmp_path):
    with files.open_private(tmp_path / "new.json") as handle:
        handle.write("{}")
    readable = tmp_path / "old.csv"
    readable.write_bytes(b"old")
    readable.chmod(0o644)
    with files.open_private(readable, "wb") as handle:
        handle.write(b"new")
    assert (mode(tmp_path / "new.json"), mode(readable), readable.read_bytes()) == (0o600, 0o600, b"new")


def test_prune_versions_keeps_the_newest_two_and_the_current_one(tmp_path):
    for name in ("v1", "v2", "v3", "v10", ".download-run", ".extract-x"):
        (tmp_path / name).mkdir()
    (tmp_path / "v4").write_text("a file, not a version folder")
    assert prune_versions(tmp_path / "v10") == ["v2", "v1"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [".download-run", ".extract-x", "v10", "v3", "v4"]

    for name in ("v1", "v2"):
        (tmp_path / name).mkdir()
    assert prune_versions(tmp_path / "v1") == ["v2"]  # the manifest still points at v1
    assert sorted(path.name for path in tmp_path.glob("v*") if path.is_dir()) == ["v1", "v10", "v3"]


def test_prune_outbox_deletes_files_older_than_the_age(tmp_path):
    for name, days in (("old-run.jsonl", 31), ("recent-run.jsonl", 1)):
        (tmp_path / name).write_text("{}\n")
        age(tmp_path / name, days)
    assert prune_outbox(tmp_path, 30) == ["old-run.jsonl"]
    assert [path.name for path in tmp_path.iterdir()] == ["recent-run.jsonl"]
    assert prune_outbox(tmp_path / "missing", 30) == []


def test_a_negative_outbox_age_is_refused_naming_the_setting(clean_env, monkeypatch):
    assert max_age_days() == 30
    monkeypatch.setenv("ETL_OUTBOX_MAX_AGE_DAYS", "-1")
    with pytest.raises(PermanentError, match="ETL_OUTBOX_MAX_AGE_DAYS must be 0 or more days, got -1"):
        max_age_days()


# --- through the pipeline -----------------------------------------------------------------


def test_a_run_on_the_embedded_defaults_writes_only_owner_only_files(clean_env):
    data_dir = Path(clean_env["ETL_DATA_DIR"])
    data_dir.mkdir(mode=0o755)  # a data dir from before: tightened by the run

    result = run_daily_etl()

    assert result.success
    assert materialization(result, "hubspot_contacts")["would_send_contacts"] > 0
    assert (data_dir / "source.json").exists()
    assert list((data_dir / "hubspot_outbox").glob("*.jsonl"))
    assert not_owner_only(data_dir) == []


def test_a_kaggle_run_writes_only_owner_only_files(pipeline_env, monkeypatch):
    monkeypatch.setenv("HUBSPOT_DRY_RUN", "true")  # the outbox too
    data_dir = Path(pipeline_env["ETL_DATA_DIR"])

    result = run_daily_etl()

    assert result.success
    assert materialization(result, "kaggle_dataset")["downloaded"] is True
    assert (data_dir / "kaggle" / "datablist__customers" / "v1" / "customers-1000.csv").exists()
    assert list((data_dir / "hubspot_outbox").glob("*.jsonl"))
    assert not_owner_only(data_dir) == []


def test_a_downloaded_zip_is_owner_only(pipeline_env, tmp_path):
    kaggle = KaggleResource(secrets=SecretsResource())
    version = kaggle.current_version("datablist/customers")

    archive = kaggle.download(version, tmp_path / "etl_data" / "kaggle" / ".download-test")

    assert archive.stat().st_size > 0
    assert not_owner_only(tmp_path / "etl_data") == []


def test_three_published_versions_leave_the_newest_two(pipeline_env, kaggle_server, monkeypatch):
    monkeypatch.setenv("HUBSPOT_DRY_RUN", "true")
    files = {"customers-1000.csv": SAMPLE_CSV.read_bytes()}
    instance = dg.DagsterInstance.ephemeral()
    assert run_daily_etl(instance).success
    for _ in range(2):
        kaggle_server.bump_version("datablist", "customers", files)
        result = run_daily_etl(instance)
        assert result.success

    folder = Path(pipeline_env["ETL_DATA_DIR"]) / "kaggle" / "datablist__customers"
    assert sorted(path.name for path in folder.iterdir()) == ["v2", "v3"]
    assert materialization(result, "kaggle_dataset")["version"] == "3"
    assert "Kaggle: removed 1 old version(s) of datablist/customers: v1" in log_lines(
        instance, result, "kaggle_dataset"
    )


def test_a_dry_run_deletes_outbox_files_older_than_the_age(clean_env):
    outbox = files.private_dir(Path(clean_env["ETL_DATA_DIR"]) / "hubspot_outbox")
    for name, days in (("old-run.jsonl", 31), ("recent-run.jsonl", 1)):
        (outbox / name).write_text("{}\n")
        age(outbox / name, days)
    instance = dg.DagsterInstance.ephemeral()

    result = run_daily_etl(instance)

    assert result.success
    assert sorted(path.name for path in outbox.iterdir()) == sorted(["recent-run.jsonl", f"{result.run_id}.jsonl"])
    assert "HubSpot dry run: removed 1 outbox file(s) older than 30 days: old-run.jsonl" in log_lines(
        instance, result, "hubspot_contacts"
    )


def test_a_negative_outbox_age_fails_the_dry_run_naming_it(clean_env, monkeypatch):
    monkeypatch.setenv("ETL_OUTBOX_MAX_AGE_DAYS", "-1")

    result = run_daily_etl()

    assert not result.success
    assert "ETL_OUTBOX_MAX_AGE_DAYS must be 0 or more days, got -1" in failure_message(result)
