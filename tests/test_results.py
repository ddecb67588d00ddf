"""The committed report (docs/results/report/) is what the code writes from the committed run inputs
(docs/results/run/): publish is re-run on the snapshot (scripts/results.py, dvc.yaml's own publish command) and
every file must come out byte for byte. `make results` rebuilds both after a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import results

pytestmark = pytest.mark.slow


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results") / "report"
    results.render(out)
    return out


def test_committed_report_is_what_publish_writes_from_the_committed_inputs(rebuilt):
    committed, fresh = files(results.REPORT), files(rebuilt)
    assert sorted(committed) == sorted(fresh), "run `make results` (after `make run`) and commit docs/results"
    stale = [name for name in committed if committed[name] != fresh[name]]
    assert not stale, f"docs/results/report is stale ({', '.join(stale[:5])}): run `make results` and commit it"


def test_snapshot_holds_every_run_the_report_names(rebuilt):
    import yaml

    train = yaml.safe_load((results.SNAPSHOT / "params.yaml").read_text())["train"]
    summary = json.loads((rebuilt / "accuracy.json").read_text())
    assert sorted(summary) == sorted(train["models"])
    for name in train["models"]:
        for seed in train["seeds"]:
            assert (results.SNAPSHOT / "metrics" / name / f"seed-{seed}.json").is_file()
            assert (results.SNAPSHOT / "models" / name / f"seed-{seed}" / "train.json").is_file()
