"""CI: `.ci/run` is the one place the steps live; the workflow's two jobs call it and nothing else.

The workflow itself cannot run here; its structure is checked (independent gate job, weekly schedule, caches
keyed on what they hold), and `.ci/run` is run for real with a `make` that only records what it was asked.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github/workflows/ci.yml"
PREPARE = REPO / ".github/actions/prepare/action.yml"


def workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))   # YAML 1.1 reads the key `on` as true
    return data


def run_steps(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def test_jobs_call_ci_run_and_nothing_else():
    jobs = workflow()["jobs"]
    assert set(jobs) == {"test", "gate"}
    for name, job in jobs.items():
        runs = run_steps(job)
        assert len(runs) == 1 and runs[0].strip().endswith(f".ci/run {name}"), runs
        assert {"uses": "./.github/actions/prepare"} in job["steps"]
        for command in ("pytest", "dvc ", "make "):   # the steps themselves are .ci/run's, not a copy
            assert command not in runs[0]


def test_gate_is_independent_and_runs_weekly():
    wf = workflow()
    assert "needs" not in wf["jobs"]["gate"], "the gate must report even when a unit test fails"
    triggers = wf["on"]
    assert {"push", "pull_request", "workflow_dispatch", "schedule"} <= set(triggers)
    (cron,) = [entry["cron"] for entry in triggers["schedule"]]
    minute, hour, dom, month, dow = cron.split()
    assert dom == month == "*" and dow.isdigit(), f"weekly: one day of the week, got {cron!r}"


def test_caches_are_keyed_on_what_they_hold():
    steps = yaml.safe_load(PREPARE.read_text())["runs"]["steps"]
    (venv,) = [s for s in steps if s.get("uses", "").startswith("actions/cache@") and s["with"]["path"] == ".venv"]
    key = venv["with"]["key"]
    for part in ("requirements.lock", "pyproject.toml", "steps.python.outputs.python-version", "runner.os"):
        assert part in key
    gate = workflow()["jobs"]["gate"]["steps"]
    (dvc,) = [s for s in gate if s.get("uses", "").startswith("actions/cache@")]
    assert dvc["with"]["path"] == ".dvc/cache" and "restore-keys" in dvc["with"]


@pytest.fixture
def fake_make(tmp_path):
    """A `make` that records its arguments; `make test` fails when FAIL_TEST is set."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "make.log"
    (bindir / "make").write_text(f'#!/bin/sh\necho "$@" >> {log}\n'
                                 '[ "$1" = test ] && [ -n "$FAIL_TEST" ] && exit 1\nexit 0\n')
    (bindir / "make").chmod(0o755)

    def run(*args: str, fail_test: bool = False):
        if log.exists():
            log.unlink()
        env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
        env.pop("FAIL_TEST", None)
        if fail_test:
            env["FAIL_TEST"] = "1"
        proc = subprocess.run([str(REPO / ".ci/run"), *args], env=env, capture_output=True, text=True, timeout=30)
        return proc.returncode, log.read_text().split("\n")[:-1] if log.exists() else []
    return run


def test_ci_run_subcommands(fake_make):
    assert fake_make() == (0, ["test", "gate"])          # no argument: as before, tests then the gate
    assert fake_make("all") == (0, ["test", "gate"])
    assert fake_make("test") == (0, ["test"])
    assert fake_make("gate") == (0, ["gate"])
    assert fake_make(fail_test=True) == (1, ["test"])    # no argument: a failing test stops before the gate
    assert fake_make("gate", fail_test=True) == (0, ["gate"])
    code, calls = fake_make("lint")
    assert code == 2 and calls == []
