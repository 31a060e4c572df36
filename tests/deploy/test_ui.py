"""The Dagster UI of the production topology in a real browser (Playwright with
Debian's chromium): the asset graph shows every asset, a materialisation launched
from the UI succeeds, and a backfill of two batch partitions launched from the UI
completes through the daemon. Screenshots go to tmp/artifacts/ui/."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus
from playwright.sync_api import Page, sync_playwright

from llama_assets.ingest.assets import raw_documents
from llama_assets.jobs import ALL_ASSETS
from llama_assets.training.assets import training_dataset
from tests.deploy.conftest import assert_succeeded, wait_for, wait_for_runs

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("LLAMA_TEST_ARTIFACTS", ROOT / "tmp" / "artifacts")) / "ui"
CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own download cannot work here


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, topology, sensor_batches, request):
    """A page on the webserver; a screenshot of its last state is saved whatever
    the outcome."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)
    yield page
    page.screenshot(path=ARTIFACTS / f"{request.node.name}-end.png")
    page.close()


def open_ui(page: Page, url: str) -> None:
    # No sign-up dialog to dismiss: deploy/prod/dagster.yaml turns the NUX off.
    page.goto(url, wait_until="networkidle")


def test_the_asset_graph_shows_every_asset(page, topology):
    # Wide enough that the whole graph fits at a zoom where nodes show full names.
    page.set_viewport_size({"width": 4000, "height": 1800})
    open_ui(page, topology.webserver_url + "/asset-groups")
    page.get_by_text("curate", exact=True).last.wait_for()
    page.get_by_role("button", name="settings", exact=True).last.click()
    page.get_by_role("menuitem", name="Expand all groups").click()
    for asset in ALL_ASSETS:
        node = page.get_by_text(asset.key.to_user_string(), exact=True).first
        node.wait_for(state="visible")
    page.keyboard.press("Escape")
    page.screenshot(path=ARTIFACTS / "asset-graph.png")


def test_a_materialisation_launched_from_the_ui_succeeds(page, topology, prod_instance):
    instance = prod_instance
    before = {r.run_id for r in instance.get_runs()}
    open_ui(page, topology.webserver_url + "/assets/" + training_dataset.key.to_user_string())
    page.get_by_role("button", name="Materialize").first.click()
    [run] = wait_for(
        lambda: (
            [
                r
                for r in instance.get_runs()
                if r.run_id not in before and r.asset_selection == {training_dataset.key}
            ]
            or None
        ),
        "the UI's run appears",
    )
    assert "dagster/sensor_name" not in run.tags and "dagster/backfill" not in run.tags
    page.screenshot(path=ARTIFACTS / "materialisation-launched.png")
    assert_succeeded(instance, wait_for_runs(instance, [run.run_id]))
    page.goto(f"{topology.webserver_url}/runs/{run.run_id}", wait_until="networkidle")
    page.get_by_text("Success").first.wait_for()
    page.screenshot(path=ARTIFACTS / "materialisation-run.png")


def test_a_backfill_of_two_batch_partitions_from_the_ui_completes(
    page, topology, prod_instance, sensor_batches
):
    instance = prod_instance
    keys, _ = sensor_batches
    wanted = keys[:2]
    before = {b.backfill_id for b in instance.get_backfills()}
    open_ui(page, topology.webserver_url + "/assets/" + raw_documents.key.to_user_string())
    page.get_by_role("button", name="Materialize…").first.click()
    dialog = page.get_by_role("dialog")
    # "All" follows the partition keys as they load; "Custom" copies the keys known
    # at its click (none while the dialog still loads), so it waits for all three.
    dialog.get_by_role("button", name="All", exact=True).click()
    dialog.get_by_text(f"{len(keys)} partitions").wait_for()
    dialog.get_by_role("button", name="Custom").click()
    # "Custom" starts from every partition: remove the ones not wanted.
    for key in keys[2:]:
        dialog.locator(f'div[data-tooltip="{key}"] [aria-label="close"]').click()
    dialog.get_by_text("2 partitions").wait_for()
    page.screenshot(path=ARTIFACTS / "backfill-dialog.png")
    dialog.get_by_role("button", name="Launch backfill").click()

    [backfill] = wait_for(
        lambda: [b for b in instance.get_backfills() if b.backfill_id not in before] or None,
        "the UI's backfill appears",
    )
    done = wait_for(
        lambda: (
            (b := instance.get_backfill(backfill.backfill_id)).status.value.startswith("COMPLETED")
            and b
        ),
        "the backfill completes",
    )
    runs = instance.get_runs(dg.RunsFilter.for_backfill(backfill.backfill_id))
    assert_succeeded(instance, runs)
    assert done.status == BulkActionStatus.COMPLETED_SUCCESS
    assert sorted(r.tags["dagster/partition"] for r in runs) == wanted
    assert all(r.asset_selection == {raw_documents.key} for r in runs)
    page.goto(f"{topology.webserver_url}/runs/b/{backfill.backfill_id}", wait_until="networkidle")
    page.screenshot(path=ARTIFACTS / "backfill-completed.png")
