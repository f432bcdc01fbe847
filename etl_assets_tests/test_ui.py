"""The user's path through the Dagster UI, in a real browser.

`dagster dev` (webserver + daemon) on a free local port, DAGSTER_HOME in tmp, every setting pointed at
MariaDB and the local Kaggle/HubSpot servers; Debian's Chromium driven by Playwright (the system
binary, no browser download): the asset graph shows the preflight, the three assets and their lineage, "Materialize
all" launches a run that succeeds, and contacts_table shows its row count, Markdown preview and checks.

Screenshots go to test-artifacts/ui/. With ETL_UPDATE_DOCS_SCREENSHOTS=1 the test also refreshes the
ones docs/ui.md and the README show.

Chromium missing is a failure, not a skip: run `bash scripts/install_browser.sh`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from etl_assets_tests.conftest import REPO
from etl_assets_tests.test_schedule_daemon import (
    artifacts_dir,
    dagster_service,
    failure_summary,
    log_tail,
    prepare_dagster_home,
    wait_for,
)

# Read at import: the clean_env fixture removes every ETL_* variable before the test runs.
CHROMIUM = os.environ.get("ETL_TEST_CHROMIUM", "/usr/bin/chromium")
UPDATE_DOCS = os.environ.get("ETL_UPDATE_DOCS_SCREENSHOTS") == "1"
# As the machine notes prescribe for root in this sandbox: no sandbox, no GPU, and nothing that
# phones home (the network is closed; without these Chromium keeps retrying Google's hosts).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ASSETS = (
    "preflight_checks",
    "kaggle_dataset",
    "contacts_table",
    "hubspot_contacts",
    "hubspot_companies",
    "hubspot_contact_companies",
)
LINEAGE = {
    ("preflight_checks", "kaggle_dataset"),
    ("kaggle_dataset", "contacts_table"),
    ("contacts_table", "hubspot_contacts"),
    ("contacts_table", "hubspot_companies"),
    ("hubspot_contacts", "hubspot_contact_companies"),
    ("hubspot_companies", "hubspot_contact_companies"),
}
DOCS = REPO / "docs"
VIEWPORT = {"width": 2400, "height": 1000}  # wide enough for five full-size nodes in a row
UI_TIMEOUT_MS = 30_000
RUN_TIMEOUT_MS = 180_000

# Which asset-graph node each lineage arrow leaves and enters: the graph is one SVG whose nodes are
# <foreignObject>s (named by their data-tooltip) and whose edges are <path marker-end=arrow>s.
_EDGES_JS = """
() => {
  const svg = [...document.querySelectorAll('svg')].find(s => s.querySelector('foreignObject [data-tooltip]'));
  if (!svg) return null;
  const nodes = [...svg.querySelectorAll('foreignObject')].map(fo => ({
    name: fo.querySelector('[data-tooltip]')?.getAttribute('data-tooltip'),
    x: +fo.getAttribute('x'), y: +fo.getAttribute('y'), w: +fo.getAttribute('width'), h: +fo.getAttribute('height'),
  })).filter(n => n.name);
  const nearest = (pt, side) => {
    let best = null, bestDist = Infinity;
    for (const n of nodes) {
      const x = side === 'out' ? n.x + n.w : n.x;
      const dy = pt.y < n.y ? n.y - pt.y : (pt.y > n.y + n.h ? pt.y - n.y - n.h : 0);
      const d = Math.abs(pt.x - x) + dy;
      if (d < bestDist) { best = n.name; bestDist = d; }
    }
    return bestDist < 40 ? best : null;
  };
  return [...svg.querySelectorAll('path[marker-end]')].map(p => {
    const len = p.getTotalLength();
    return [nearest(p.getPointAtLength(0), 'out'), nearest(p.getPointAtLength(len), 'in')];
  });
}
"""


# Resolves once every finite CSS animation/transition running now has ended (dialogs fade in, status
# tags fade), or after 3 s: screenshots of the end state, not of a frame half-way. Infinite ones
# (spinners) are skipped.
_SETTLE_JS = """
() => Promise.race([
  Promise.all(document.getAnimations()
    .filter(a => a.effect && a.effect.getComputedTiming().iterations !== Infinity)
    .map(a => a.finished.catch(() => null))),
  new Promise(resolve => setTimeout(resolve, 3000)),
])
"""


_LOCATIONS_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _code_location(base: str) -> dict | None:
    """The etl_assets location entry once the webserver has finished loading it, else None."""
    try:
        reply = requests.post(f"{base}/graphql", json={"query": _LOCATIONS_QUERY}, timeout=5).json()
    except (requests.RequestException, ValueError):
        return None
    entries = (reply.get("data") or {}).get("workspaceOrError", {}).get("locationEntries") or []
    entry = next((e for e in entries if e["name"] == "etl_assets"), None)
    return entry if entry and entry["loadStatus"] == "LOADED" else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keep_schedule_quiet(monkeypatch) -> None:
    """The schedule is RUNNING under `dagster dev`: within a quarter of an hour of its default time
    (06:00 UTC) move it twelve hours away, so it cannot start a second run during the test."""
    now = dt.datetime.now(dt.UTC)
    if abs(now.hour * 60 + now.minute - 6 * 60) < 15:
        monkeypatch.setenv("ETL_SCHEDULE_CRON", "0 18 * * *")


def _require_chromium() -> None:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium is required at {CHROMIUM} for the UI test and is missing: "
            "run `bash scripts/install_browser.sh` (Debian's chromium package)"
        )


def _launch_chromium(playwright, profile: Path):
    return playwright.chromium.launch_persistent_context(
        str(profile),  # a fresh --user-data-dir
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        viewport=VIEWPORT,
        timeout=60_000,
    )


def _graph_clip(page, graph, margin: int = 28) -> dict:
    """The part of the page the asset nodes (and their kind tags below them) take up, plus a margin."""
    boxes = [graph.locator(f'foreignObject:has([data-tooltip="{asset}"])').bounding_box() for asset in ASSETS]
    left = max(0, min(b["x"] for b in boxes) - margin)
    top = max(0, min(b["y"] for b in boxes) - margin)
    right = min(VIEWPORT["width"], max(b["x"] + b["width"] for b in boxes) + margin)
    bottom = min(VIEWPORT["height"], max(b["y"] + b["height"] for b in boxes) + margin)
    return {"x": left, "y": top, "width": right - left, "height": bottom - top}


def _metadata_row(page, key: str):
    """The row of the asset page's metadata table whose key is `key`."""
    return page.locator("tr", has=page.get_by_text(key, exact=True))


def _metadata_value(page, key: str):
    """The value cell (Key | Timestamp | Value) of that row."""
    return _metadata_row(page, key).locator("td").last


def _expect_markdown_table(page, expect, key: str, column: str) -> None:
    """Open a Markdown metadata value and see it rendered as a table with `column`."""
    _metadata_row(page, key).get_by_text("Show Markdown").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.locator("table th", has_text=column).first).to_be_visible()
    assert dialog.locator("table tbody tr").count() >= 1


def _close_dialog(page, expect) -> None:
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)


def _contacts_count(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT COUNT(*) FROM contacts").scalar()
    finally:
        engine.dispose()


@pytest.mark.e2e
def test_materialize_all_from_the_ui(pipeline_env, monkeypatch, mariadb_url, hubspot_server, tmp_path):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("the `playwright` package is required for the UI test: pip install -e '.[dev]'")
    _require_chromium()  # before spending half a minute starting dagster dev
    import dagster as dg

    expect.set_options(timeout=UI_TIMEOUT_MS)
    _keep_schedule_quiet(monkeypatch)
    home = prepare_dagster_home(pipeline_env)
    out = artifacts_dir("ui")
    log_path = out / "dagster-dev.log"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    shots: list[Path] = []
    timings: list[str] = []
    last = [time.monotonic()]

    def lap(what: str) -> None:
        now = time.monotonic()
        timings.append(f"{now - last[0]:6.1f}s  {what}")
        last[0] = now

    def shot(page, name: str, **kwargs) -> Path:
        page.evaluate(_SETTLE_JS)
        path = out / f"{len(shots) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), **kwargs)
        shots.append(path)
        return path

    with dagster_service(
        "dagster",
        "dev",
        "-m",
        "etl_assets",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        env=dict(os.environ),
        log_path=log_path,
    ) as dev:

        def webserver_up() -> bool:
            try:
                return requests.get(f"{base}/server_info", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(f"dagster dev to serve {base}", webserver_up, timeout=120, alive=dev, log_path=log_path)
        # The code location as the webserver loaded it: an error here (a resource or setting that
        # fails at load) is what a user would see as a red banner, so fail with its message.
        location = wait_for(
            "the webserver to load the etl_assets code location",
            lambda: _code_location(base),
            timeout=120,
            alive=dev,
            log_path=log_path,
        )
        error = location["locationOrLoadError"]
        assert error["__typename"] == "RepositoryLocation", (
            f"the webserver failed to load etl_assets:\n{error.get('message')}\n{log_tail(log_path)}"
        )
        lap("dagster dev serving, code location loaded")

        with sync_playwright() as playwright:
            browser = _launch_chromium(playwright, tmp_path / "chromium-profile")
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            # The UI greets a new instance with a "Join the Dagster community" dialog; skip it as a user would.
            page.add_locator_handler(page.get_by_role("button", name="Skip", exact=True), lambda b: b.click())
            try:
                # 1. The asset graph: the preflight and three assets, three lineage edges.
                page.goto(f"{base}/asset-groups")
                graph = page.locator("svg:has(foreignObject [data-tooltip])")
                for asset in ASSETS:
                    expect(graph.locator(f'foreignObject [data-tooltip="{asset}"]')).to_be_visible(timeout=90_000)
                edges = wait_for(
                    "the lineage edges",
                    lambda: (e := page.evaluate(_EDGES_JS)) and len(e) >= 3 and e,
                    timeout=30,
                    interval=0.5,
                )
                assert {tuple(edge) for edge in edges} == LINEAGE, edges
                shot(page, "asset-graph")
                lap("asset graph with lineage shown (browser started)")

                # 2. Materialize all: the toast names the run; its page shows it succeed.
                page.get_by_role("button", name="Materialize all").click()
                toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
                expect(toast).to_be_visible()
                short_id = re.search(r"[0-9a-f]{8}", toast.inner_text()).group(0)
                shot(page, "run-launched")
                page.get_by_role("button", name="View", exact=True).or_(
                    page.get_by_role("link", name="View", exact=True)
                ).first.click()
                page.wait_for_url(re.compile(rf"/runs/{short_id}[0-9a-f-]+"))
                run_id = page.url.rsplit("/runs/", 1)[1].split("?")[0]
                status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
                expect(status.first).to_be_visible(timeout=RUN_TIMEOUT_MS)
                shot(page, "run")
                if status.first.inner_text() != "Success":
                    with dg.DagsterInstance.from_config(str(home)) as instance:
                        pytest.fail(
                            f"the run {run_id} ended in {status.first.inner_text()}:\n"
                            f"{failure_summary(instance, run_id)}\n{log_tail(log_path)}"
                        )
                lap("Materialize all: run launched and succeeded")

                # The instance in DAGSTER_HOME agrees, and the run materialized every asset.
                with dg.DagsterInstance.from_config(str(home)) as instance:
                    run = instance.get_run_by_id(run_id)
                    assert run.status == dg.DagsterRunStatus.SUCCESS
                    assert "dagster/schedule_name" not in run.tags  # launched from the UI, not the schedule
                    for asset in ASSETS:
                        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
                        assert event is not None and event.run_id == run_id, asset
                rows = _contacts_count(mariadb_url)
                assert rows > 0 and len(hubspot_server.contacts_snapshot()) == rows

                # The graph now shows the materializations.
                page.goto(f"{base}/asset-groups")
                for asset in ASSETS:
                    node = graph.locator(f'foreignObject:has([data-tooltip="{asset}"])')
                    expect(node.get_by_text("Materialized", exact=True)).to_be_visible()
                    expect(node.locator(f'a[href*="/runs/{run_id}"]').first).to_be_visible()
                shot(page, "asset-graph-materialized")
                graph_shot = shot(page, "asset-graph-materialized-closeup", clip=_graph_clip(page, graph))

                # 3. contacts_table: the row count (dagster/row_count) up top, row_count and a summary in
                # the metadata, the latest check result.
                page.goto(f"{base}/assets/contacts_table")
                count = rf"({rows}|{rows:,})"
                row_count_box = page.get_by_text("Row count", exact=True).locator("xpath=..")
                expect(row_count_box.get_by_text(re.compile(rf"^{count}$"))).to_be_visible()
                expect(_metadata_value(page, "row_count")).to_have_text(re.compile(rf"^\s*{count}\s*$"))
                expect(_metadata_value(page, "summary")).to_contain_text(re.compile(rf"\b{count} contacts\b"))
                expect(page.get_by_text("Latest check results")).to_be_visible()
                asset_shot = shot(page, "contacts-table")
                _metadata_row(page, "row_count").scroll_into_view_if_needed()
                shot(page, "contacts-table-metadata")
                # The preview renders as a Markdown table.
                _expect_markdown_table(page, expect, "preview", column="email")
                shot(page, "contacts-table-preview")
                _close_dialog(page, expect)

                # The asset check is visible and passed.
                page.goto(f"{base}/assets/contacts_table?view=checks")
                expect(page.get_by_text("contacts_reject_rate").first).to_be_visible()
                expect(page.get_by_text("Passed").first).to_be_visible()
                shot(page, "contacts-table-checks")

                # The other two assets say what they did: the dataset version, the sync's outcome counts.
                page.goto(f"{base}/assets/kaggle_dataset")
                expect(_metadata_row(page, "version")).to_be_visible()
                expect(_metadata_value(page, "summary")).to_contain_text("datablist/customers")
                shot(page, "kaggle-dataset")
                _expect_markdown_table(page, expect, "preview", column="Email")
                shot(page, "kaggle-dataset-preview")
                _close_dialog(page, expect)
                page.goto(f"{base}/assets/hubspot_contacts")
                expect(_metadata_value(page, "summary")).to_contain_text(re.compile(rf"^\s*{count} created\b"))
                expect(page.get_by_text("Latest check results")).to_be_visible()
                shot(page, "hubspot-contacts")
                _metadata_row(page, "summary").scroll_into_view_if_needed()
                shot(page, "hubspot-contacts-metadata")
                lap("graph, contacts_table, checks, kaggle_dataset, hubspot_contacts pages")
            except BaseException:
                with contextlib.suppress(Exception):  # never hide the real failure
                    shot(page, "failure")
                print(f"--- {log_path} (tail) ---\n{log_tail(log_path)}")  # shown with the failure
                raise
            finally:
                browser.close()
                (out / "timings.txt").write_text("\n".join(timings) + "\n")

    if UPDATE_DOCS:
        DOCS.mkdir(exist_ok=True)
        shutil.copy(graph_shot, DOCS / "ui-asset-graph.png")
        shutil.copy(asset_shot, DOCS / "ui-contacts-table.png")
