"""`kaggle_dataset`: the source CSV, fetched from Kaggle only when a new version exists."""

from pathlib import Path

import dagster as dg
import requests

from etl_assets import settings
from etl_assets.archive import extract_csv
from etl_assets.assets.policies import step_retry_policy
from etl_assets.assets.preflight import preflight_checks
from etl_assets.contacts.source import CsvFormat
from etl_assets.dataset import (
    SAMPLE_DATASET,
    SourceFile,
    describe_csv,
    preview_csv,
    prune_versions,
    read_manifest,
    sample_csv_path,
    write_manifest,
)
from etl_assets.errors import failing_fast, reworded
from etl_assets.resources.kaggle import DatasetVersion, KaggleResource, describe_http_error
from etl_assets.retrying import call_with_retries


def _kaggle_call(fn, what: str, ref: str, log):
    """`fn` with in-step retries; an HTTP error still there after them is reworded for a person,
    its class as `classify` says: 401, 403, 404 permanent, 5xx and 429 transient (Kaggle outages
    last minutes: the step's RetryPolicy tries again later). Drops and timeouts leave as they are."""
    try:
        return call_with_retries(fn, what, settings.retry_settings(), log)
    except requests.exceptions.HTTPError as exc:
        raise reworded(exc, describe_http_error(exc, ref)) from None


def _fetch(
    context: dg.AssetExecutionContext, kaggle: KaggleResource, ref: str, data_dir: Path, fmt: CsvFormat
) -> tuple[SourceFile, bool]:
    """The current version's CSV; downloads only when the version on disk is older."""
    log = context.log
    version: DatasetVersion = _kaggle_call(
        lambda: kaggle.current_version(ref), f"reading Kaggle dataset {ref}", ref, log
    )
    wanted = kaggle.file_name()
    on_disk = read_manifest(data_dir)
    if (
        on_disk
        and on_disk.dataset == ref
        and on_disk.version == str(version.number)
        and (wanted is None or on_disk.file == Path(wanted).name)
    ):
        log.info("Kaggle: %s version %s is already on disk; no download", ref, version.number)
        return on_disk, False
    target = data_dir / "kaggle" / ref.replace("/", "__")
    archive = _kaggle_call(
        lambda: kaggle.download(version, target / f".download-{context.run.run_id}"),
        f"downloading Kaggle dataset {ref} v{version.number}",
        ref,
        log,
    )
    try:
        csv_path = extract_csv(archive, wanted, target / f"v{version.number}")
    finally:
        archive.unlink(missing_ok=True)
        archive.parent.rmdir()
    return describe_csv(ref, str(version.number), csv_path, fmt), True


@dg.asset(
    # In a run of both (daily_etl, "Materialize all") a failed preflight stops the run before any
    # data moves; materialized alone, or with its downstream assets only, it runs as it is.
    deps=[preflight_checks],
    group_name="contacts",
    kinds={"kaggle", "csv"},
    retry_policy=step_retry_policy(),
    description="The contacts CSV from the Kaggle dataset in KAGGLE_DATASET (or the embedded sample), "
    "downloaded only when Kaggle has a newer version.",
)
def kaggle_dataset(context: dg.AssetExecutionContext, kaggle: KaggleResource) -> dg.MaterializeResult:
    data_dir = settings.data_dir()
    ref = kaggle.dataset_ref()
    with failing_fast("kaggle_dataset"):
        fmt = CsvFormat.from_settings()
        if ref is None:
            context.log.info("Kaggle: no KAGGLE_DATASET, using the embedded sample dataset")
            source, downloaded = describe_csv(SAMPLE_DATASET, "embedded", sample_csv_path(), fmt), False
        else:
            source, downloaded = _fetch(context, kaggle, ref, data_dir, fmt)
        preview = preview_csv(Path(source.path), fmt)
    write_manifest(data_dir, source)
    if downloaded:  # only once the manifest points at the new version, which pruning never removes
        removed = prune_versions(Path(source.path).parent)
        if removed:
            context.log.info("Kaggle: removed %d old version(s) of %s: %s", len(removed), ref, ", ".join(removed))
    return dg.MaterializeResult(
        metadata={
            "summary": (
                f"{source.dataset} version {source.version}: {source.file}, {source.rows:,} rows, "
                f"{source.bytes:,} bytes; " + ("downloaded" if downloaded else "no download needed")
            ),
            "dataset": source.dataset,
            "version": source.version,
            "file": source.file,
            "path": dg.MetadataValue.path(source.path),
            "size_bytes": source.bytes,
            "rows": dg.MetadataValue.int(source.rows),
            "dagster/row_count": dg.MetadataValue.int(source.rows),
            "downloaded": downloaded,
            "sha256": source.sha256,
            "preview": dg.MetadataValue.md(preview),
        },
        data_version=dg.DataVersion(source.sha256),
    )
