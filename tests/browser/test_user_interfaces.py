"""What a user sees in a real browser (headless Chromium): the Dagster UI served by `rice dev` and the
MLflow UI, on a small materialised RICE_HOME (conftest). Screenshots of each view are saved.

Tests share one RICE_HOME and one `rice dev`; they run in file order, and the last one stops `rice dev`
with Ctrl-C.
"""

import re
import signal
import time
from collections import defaultdict

import dagster as dg
from playwright.sync_api import expect

from rice_assets.definitions import ALL_ASSETS
from rice_models.registry import champion_model_name
from rice_models.tracking import REGISTERED_MODEL, profile_name
from tests.browser.conftest import COMBINATION, listening_addresses

LOCATION = "rice_assets.definitions"  # the code location `rice dev` loads (`-m rice_assets.definitions`)
PARTITION = "SYN-0004"  # a development patient of the conftest cohort


def assets_by_group() -> dict[str, set[str]]:
    """Group name -> asset names, from the definitions themselves."""
    groups: dict[str, set[str]] = defaultdict(set)
    for assets in ALL_ASSETS:
        if isinstance(assets, dg.SourceAsset):  # landing_scans, an observable source asset
            groups[assets.group_name].add(assets.key.to_user_string())
            continue
        for key, group in assets.group_names_by_key.items():
            groups[group].add(key.to_user_string())
    return dict(groups)


def open_dagster(page, url: str) -> None:
    """Open a Dagster UI page and dismiss the first-visit newsletter dialog if it shows."""
    page.goto(url)
    page.wait_for_load_state("networkidle")
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=3_000)
        skip.click()
    except Exception:  # no dialog this time
        pass


def settled(page) -> None:
    """Wait until the page shows no "Loading..." placeholder (graph nodes, run logs)."""
    expect(page.get_by_text(re.compile(r"^Loading"))).to_have_count(0, timeout=60_000)


def test_rice_dev_serves_the_ui_on_localhost_only(dagster_ui) -> None:
    assert listening_addresses(dagster_ui.port) == {"127.0.0.1"}


def test_asset_graph_shows_every_asset_in_its_group(dagster_ui, page, shoot) -> None:
    groups = assets_by_group()
    assert set(groups) == {"cohort", "preprocessing", "training", "evaluation", "inference"}
    open_dagster(page, f"{dagster_ui.url}/asset-groups")
    for group in groups:  # the global lineage lists each group
        assert page.get_by_text(group, exact=True).first.is_visible(), group
    shoot(page, "dagster_global_lineage")
    for group, names in groups.items():
        open_dagster(page, f"{dagster_ui.url}/locations/{LOCATION}/asset-groups/{group}")
        nodes = page.locator('[class*="AssetNode_assetName"]')  # full nodes; neighbours are only links
        nodes.first.wait_for()
        shown = {text.strip() for text in nodes.all_inner_texts()}
        assert shown == names, f"group {group}: graph shows {sorted(shown)}, definitions say {sorted(names)}"
        settled(page)
        shoot(page, f"dagster_group_{group}")


def _open_metadata(page, key: str):
    """Click the `[Show Markdown]` of a metadata row of the asset page; return the dialog."""
    row = page.locator("tr", has=page.get_by_text(key, exact=True)).first
    row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    return dialog


def test_evaluation_tables_shows_the_ablation_table_and_its_plot(dagster_ui, page, shoot) -> None:
    open_dagster(page, f"{dagster_ui.url}/assets/evaluation_tables")
    page.get_by_text("html_report", exact=True).first.wait_for()  # the HTML report is attached
    assert page.get_by_text(re.compile(r"report\.html$")).count() >= 1

    dialog = _open_metadata(page, "ablation")
    table = dialog.locator("table")
    assert table.count() == 1
    rows = table.locator("tbody tr")
    assert rows.count() == 7  # every combination, run or not, beside the study's figures
    assert f"{COMBINATION} (champion)" in table.inner_text()
    assert "not run" in table.inner_text() and "0.916" in table.inner_text()  # the study's test F1
    assert "synthetic" in dialog.inner_text()
    shoot(page, "dagster_evaluation_tables_ablation")
    dialog.get_by_role("button", name="Close").click()
    dialog.wait_for(state="detached")

    dialog = _open_metadata(page, "ablation_plot")
    image = dialog.locator("img").first
    image.wait_for()
    width, height, source = image.evaluate("i => [i.naturalWidth, i.naturalHeight, i.src.slice(0, 22)]")
    assert source == "data:image/png;base64,"
    assert width > 500 and height > 250, "the plot did not decode"
    shoot(page, "dagster_evaluation_tables_ablation_plot")


def _run_status(home, run_id: str, timeout: float = 240) -> dg.DagsterRunStatus:
    """Wait for a run of the RICE_HOME's Dagster instance to finish; return its status."""
    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        while time.monotonic() < deadline:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.is_finished:
                return run.status
            time.sleep(1)
    raise AssertionError(f"run {run_id} did not finish within {timeout} s")


def test_materialising_one_raw_scans_partition_from_the_ui_succeeds(dagster_ui, ui_home, page, shoot) -> None:
    open_dagster(page, f"{dagster_ui.url}/assets/raw_scans")
    page.get_by_role("button", name="Materialize").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Select a partition or create one").click()
    page.keyboard.type(PARTITION)
    page.locator("[role=menuitem]").filter(has_text=PARTITION).filter(has_not_text="Add").last.click()
    page.keyboard.press("Escape")
    shoot(page, "dagster_raw_scans_launch_dialog")
    dialog.get_by_role("button", name="Launch 1 run").click()
    toast = page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}"))
    toast.wait_for()
    page.get_by_role("link", name="View").first.click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = page.url.rstrip("/").rsplit("/", 1)[1]

    assert _run_status(ui_home, run_id) == dg.DagsterRunStatus.SUCCESS
    page.reload()
    page.get_by_text("Success", exact=True).first.wait_for()
    settled(page)  # the run's event log has loaded
    with dg.DagsterInstance.from_config(str(ui_home / "dagster")) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.tags.get("dagster/partition") == PARTITION
    shoot(page, "dagster_raw_scans_run_success")


def quiet_mlflow(page) -> None:
    """Dismiss the MLflow UI's announcement of its registry UI whenever it pops up (it blocks clicks)."""
    announcement = page.get_by_role("dialog").filter(has_text="new Model Registry UI")
    page.add_locator_handler(
        announcement, lambda dialog: dialog.get_by_role("button", name="Try it now").click()
    )


def close_assistant(page) -> None:
    """Close the MLflow assistant side panel, when it opens, so screenshots show the page."""
    panel = page.locator("[aria-label='Close']").filter(visible=True)
    if panel.count():
        panel.first.click()


def test_mlflow_ui_shows_the_fold_models_and_the_champion_alias(mlflow_ui, page, shoot) -> None:
    fold_model, champion = profile_name(REGISTERED_MODEL, "quick"), champion_model_name("quick")
    quiet_mlflow(page)
    page.goto(f"{mlflow_ui.url}/#/models")
    page.get_by_role("link", name=champion, exact=True).wait_for()
    assert page.get_by_role("link", name=fold_model, exact=True).count() == 1
    try:  # the announcement shows a moment after the list: let it come, then dismiss it
        page.get_by_role("button", name="Try it now").click(timeout=5_000)
    except Exception:
        pass
    close_assistant(page)
    shoot(page, "mlflow_registered_models")

    page.goto(f"{mlflow_ui.url}/#/models/{champion}")
    row = page.get_by_role("row").filter(has=page.get_by_text("Version 1", exact=True)).first
    row.wait_for()
    assert re.search(r"@\s*champion", row.inner_text()), row.inner_text()
    assert f"combination: {COMBINATION}" in row.inner_text().replace("\n", " ").replace(" :", ":")
    close_assistant(page)
    shoot(page, "mlflow_champion_alias")

    page.get_by_role("link", name="Registered Models").first.click()  # back, as a user would
    page.get_by_role("link", name=fold_model, exact=True).click()
    page.get_by_text("Version 5", exact=True).wait_for()  # the five folds of the one combination
    assert page.get_by_text("Version 6", exact=True).count() == 0
    close_assistant(page)
    shoot(page, "mlflow_fold_models")


def test_ctrl_c_stops_rice_dev_without_a_traceback(dagster_ui) -> None:
    code, output = dagster_ui.stop(signal.SIGINT)
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "stopped." in output
