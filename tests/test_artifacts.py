"""Prefect artifacts render in the UI: no relative figure links (the UI cannot load them), figures embedded as
data: URIs, the comparison as a table artifact. Read back from a Prefect test server through the client.
The report is a real publish output: conftest's models_workspace (two models on a real slice)."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from pathlib import Path

import flows  # noqa: F401  (Prefect/DVC environment defaults before prefect is imported)
import pytest

from flows.artifacts import COMPARISON, ui_markdown

RELATIVE_IMAGE = re.compile(r"!\[[^\]]*\]\((?!data:|https?://)[^)]*\)")


def report_workspace(built: Path, tmp_path: Path) -> Path:
    """A workspace holding a copy of a real publish output: reports/comparison.md/.csv + figures/*.png."""
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in ("comparison.md", "comparison.csv"):
        shutil.copy(built / "reports" / name, reports / name)
    shutil.copytree(built / "reports" / "figures", reports / "figures")
    return tmp_path


def test_ui_markdown_embeds_figures_and_names_what_it_cannot_show(models_workspace, tmp_path):
    ws = report_workspace(models_workspace.path, tmp_path)
    source = (ws / COMPARISON).read_text()
    figures = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", source)
    assert figures, "the published report links its figures relatively"
    out = ui_markdown(source + "\n[the HTML report](comparison.html) [Prefect](https://www.prefect.io)\n",
                      ws / "reports", ws)
    assert not RELATIVE_IMAGE.search(out)
    embedded = re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", out)
    assert len(embedded) == len(figures)
    assert base64.b64decode(embedded[0]) == (ws / "reports" / figures[0]).read_bytes()
    assert "the HTML report (`reports/comparison.html`)" in out and "[Prefect](https://www.prefect.io)" in out

    # over the size budget, or missing: a note that names the file instead of a broken image
    assert len(figures) >= 3, "the test needs figures to embed and figures to leave out"
    (ws / "reports" / figures[-1]).unlink()
    budget = (ws / "reports" / figures[0]).stat().st_size      # room for the first figure, not for all
    small = ui_markdown(source, ws / "reports", ws, budget=budget)
    assert not RELATIVE_IMAGE.search(small)
    assert f"`reports/{figures[-1]}` (missing)" in small
    assert "MB of figures one artifact holds" in small
    assert 0 < len(re.findall(r"\(data:image/png;base64,", small)) < len(figures)


def test_comparison_artifacts_read_back_from_the_api(prefect_server, models_workspace, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.artifacts import publish_artifacts

    ws = report_workspace(models_workspace.path, tmp_path)

    @flow(name="artifacts-check")
    def publish_only():
        publish_artifacts(ws, [{"stage": "publish", "status": "ran", "duration_s": 1.0}])

    state = publish_only(return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    by_key = {a.key: a for a in found}
    assert {"fmnist-model-comparison", "fmnist-model-comparison-table", "fmnist-pipeline-stages"} <= set(by_key)

    md = by_key["fmnist-model-comparison"]
    assert md.type == "markdown"
    assert not RELATIVE_IMAGE.search(md.data), "a relative image link is a broken image in the Prefect UI"
    figures = len(re.findall(r"!\[[^\]]*\]\(figures/", (ws / COMPARISON).read_text()))
    assert md.data.count("](data:image/png;base64,") == figures
    with open(ws / "reports/comparison.csv", newline="") as fh:
        expected = list(csv.DictReader(fh))
    assert f"| {expected[0]['model']} |" in md.data   # the report's own tables are still there

    table = by_key["fmnist-model-comparison-table"]
    assert table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [r["model"] for r in rows] == [r["model"] for r in expected]
    best = rows[0]
    assert best["test_accuracy_pct"] == pytest.approx(float(expected[0]["test_accuracy_pct"]), abs=0.01)
    assert {"ci95_low_pct", "published_accuracy_pct", "gap_pp", "train_time_s"} <= set(best)
