"""Prefect orchestration (flows/): one task per dvc.yaml stage, DVC cache, terminal validation gate, watcher.

Runs the real DVC data stages (up to `split`) in a throw-away workspace over a real data slice, against
the session's one Prefect test server (conftest.prefect_server).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import flows  # noqa: F401  (Prefect/DVC environment defaults before prefect is imported)
import pytest
import yaml
from _prefect_runs import artifacts, task_runs
from conftest import CHEAP, REPO, SLICE, make_workspace

from flows import fingerprint
from flows.dag import load_stages
from flows.artifacts import validation_markdown
from flows.failures import ValidationGateFailed
from flows.pipeline_flow import pipeline_flow
from flows.watcher import resource_id, watcher_flow

TARGET = ["split"]
TRAIN_CSV = Path("source/fashion-mnist_train.csv")


def dvc_yaml_order(workspace: Path) -> list[str]:
    return list(yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"])


def upstream_of_split(workspace: Path) -> list[str]:
    """Stages `dvc repro split` needs, in dvc.yaml order: computed from dvc.yaml's deps/outs here, independently."""
    stages = yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"]
    def paths(entries):
        return {next(iter(e)) if isinstance(e, dict) else e for e in entries or []}
    outs = {name: paths(s.get("outs")) | paths(s.get("metrics")) for name, s in stages.items() if "cmd" in s}
    needed, todo = set(), ["split"]
    while todo:
        name = todo.pop()
        needed.add(name)
        for dep in paths(stages[name].get("deps")):
            todo += [up for up, produced in outs.items() if dep in produced and up not in needed]
    return [name for name in stages if name in needed]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ran_workspace(prefect_server, fmnist, tmp_path_factory):
    """A workspace whose data stages (up to split) ran once through the flow: (workspace, first flow state)."""
    ws = make_workspace(tmp_path_factory.mktemp("flow-ws"), fmnist, **SLICE,
                        params_overrides={"train.models": ["gaussian-nb"], **CHEAP})
    state = pipeline_flow(workspace=str(ws), targets=TARGET, retry_delay_s=0, return_state=True)
    assert state.is_completed(), state.message
    return ws, state


# ----------------------------------------------------------------------------------- DAG derivation
def test_stage_list_is_read_from_dvc_yaml_with_foreach_expanded(tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "prep": {"cmd": "python -c 1", "outs": ["a.txt"]},
        "train": {"foreach": ["m2", "m1"], "do": {"cmd": "python -c 1 ${item}", "deps": ["a.txt"],
                                                    "outs": ["model-${item}.txt"]}},
        "report": {"cmd": "python -c 1", "deps": ["model-m1.txt", "model-m2.txt"]},
        "lonely": {"cmd": "python -c 1"},
    }}, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
    stages = load_stages(tmp_path)
    assert [s.name for s in stages] == ["prep", "train@m2", "train@m1", "report", "lonely"]
    assert {s.name: s.upstream for s in stages}["report"] == ("train@m2", "train@m1")
    assert [s.name for s in load_stages(tmp_path, ["train@m1"])] == ["prep", "train@m1"]


def test_repo_dag_matches_dvc_yaml_order():
    names = [s.name for s in load_stages(REPO)]
    declared = dvc_yaml_order(REPO)
    # foreach stages expand to name@item; the order of top-level stages is dvc.yaml's
    assert [n.split("@")[0] for n in names if n.split("@")[0] in declared] == \
        [d for d in declared for n in names if n.split("@")[0] == d]


# ------------------------------------------------------------------------------------- pipeline flow
def test_flow_runs_each_stage_as_one_task_in_dvc_order(ran_workspace):
    ws, state = ran_workspace
    expected = upstream_of_split(ws)
    outcomes = state.result()
    assert [o["stage"] for o in outcomes] == expected
    assert all(o["status"] == "ran" for o in outcomes)
    runs = task_runs(state.state_details.flow_run_id, expect=expected)
    assert sorted(runs) == sorted(expected)
    assert all(r.state.is_completed() and r.state.name == "Completed" for r in runs.values())
    order = sorted(runs.values(), key=lambda r: r.start_time)
    assert [r.name for r in order] == expected
    assert all(r.total_run_time.total_seconds() > 0 for r in runs.values())
    assert (ws / "data/split/train.npz").exists()
    # a run up to `split` is partial: the watcher must not take this data source as processed
    assert "last_success" not in fingerprint.load_state(ws)
    found = artifacts(state.state_details.flow_run_id)
    assert "fmnist-validation" in found and "PASSED" in found["fmnist-validation"].data
    assert "fmnist-pipeline-stages" in found


def test_second_run_reports_every_stage_cached(ran_workspace):
    ws, _ = ran_workspace
    state = pipeline_flow(workspace=str(ws), targets=TARGET, return_state=True)
    assert state.is_completed()
    assert {o["status"] for o in state.result()} == {"cached"}
    runs = task_runs(state.state_details.flow_run_id, expect=upstream_of_split(ws))
    assert sorted(runs) == sorted(upstream_of_split(ws))
    assert {r.state.name for r in runs.values()} == {"Cached"}


def test_no_op_run_makes_no_per_stage_dvc_call_and_a_change_reaches_only_its_stage(ran_workspace, monkeypatch):
    import flows.scheduler as pf   # the local stage task calls run_dvc_stage from there

    ws, _ = ran_workspace
    calls: list[str] = []
    real = pf.run_dvc_stage

    def recording(workspace, stage, **kwargs):
        calls.append(stage)
        return real(workspace, stage, **kwargs)

    monkeypatch.setattr(pf, "run_dvc_stage", recording)
    state = pipeline_flow(workspace=str(ws), targets=TARGET, return_state=True)
    assert state.is_completed() and {o["status"] for o in state.result()} == {"cached"}
    assert calls == [], "dvc status said everything is up to date: no stage needs its own dvc call"

    params_path = ws / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["split"]["seed"] += 1
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        state = pipeline_flow(workspace=str(ws), targets=TARGET, return_state=True)
        assert state.is_completed()
        assert calls == ["split"]
        assert {o["stage"]: o["status"] for o in state.result()}["split"] == "ran"
    finally:
        params_path.write_text(original)
        calls.clear()
        state = pipeline_flow(workspace=str(ws), targets=TARGET, return_state=True)
        assert state.is_completed() and calls == ["split"]
        # back to the earlier params: DVC's run cache restores split's outputs, and the flow says so
        assert {o["stage"]: o["status"] for o in state.result()}["split"] == "restored"


def test_validation_failure_is_terminal_and_stops_downstream(ran_workspace):
    ws, _ = ran_workspace
    source = ws / TRAIN_CSV
    original = source.read_bytes()
    last_success = fingerprint.load_state(ws).get("last_success")
    kept = {p: digest(ws / p) for p in ("data/split/train.npz", "data/split/val.npz",
                                        "data/processed/train.npz", "data/validation/report.json")}
    lines = original.split(b"\n")
    lines[1] = b"10," + lines[1].split(b",", 1)[1]      # first image gets label 10: the gate must reject it
    source.write_bytes(b"\n".join(lines))
    try:
        state = pipeline_flow(workspace=str(ws), targets=TARGET, retries=2, retry_delay_s=0, return_state=True)
        assert state.is_failed()
        with pytest.raises(ValidationGateFailed, match="label"):
            state.result()
        runs = task_runs(state.state_details.flow_run_id, expect={"validate"})
        assert runs["validate"].state.is_failed()
        assert runs["validate"].run_count == 1, "a validation failure must not be retried"
        assert "convert" not in runs and "split" not in runs
        assert {p: digest(ws / p) for p in kept} == kept, "previous good outputs must stay untouched"
        assert fingerprint.load_state(ws).get("last_success") == last_success, \
            "a failed run must not record its data"
        md = validation_markdown(ws)
        assert "FAILED" in md and "label" in md
        assert "FAILED" in artifacts(state.state_details.flow_run_id)["fmnist-validation"].data
    finally:
        source.write_bytes(original)


# ------------------------------------------------------------------------------------------- watcher
def test_watcher_runs_pipeline_only_when_source_changed(ran_workspace):
    ws, _ = ran_workspace
    first = watcher_flow(workspace=str(ws))              # never fully processed: the whole pipeline runs
    assert first["changed"] and first["action"] == "ran"
    assert fingerprint.load_state(ws)["last_success"]["digest"] == first["digest"]
    assert (ws / "accuracy.json").exists()
    assert watcher_flow(workspace=str(ws)) == {"changed": False, "action": "none", "digest": first["digest"]}

    # A new process reloads the fingerprint from .prefect-state/fingerprint.json: nothing changed, nothing runs.
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "flows", "watch", "--once", "--workspace", str(ws),
                           "--target", "fetch"],
                          cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "unchanged" in proc.stdout + proc.stderr
    assert "Running stage" not in proc.stdout + proc.stderr

    source = ws / TRAIN_CSV
    original = source.read_bytes()
    lines = original.split(b"\n")
    cells = lines[1].split(b",")
    cells[400] = b"7" if cells[400] != b"7" else b"8"      # one pixel of one image: a real content change
    lines[1] = b",".join(cells)
    source.write_bytes(b"\n".join(lines))
    try:
        before = digest(ws / "data/raw/fashion-mnist_train.csv")
        partial = watcher_flow(workspace=str(ws), targets=["fetch"])
        assert partial["changed"] and partial["action"] == "ran"
        assert digest(ws / "data/raw/fashion-mnist_train.csv") != before
        # a partial run does not record the change as processed: the next check still sees it
        assert fingerprint.load_state(ws)["last_success"]["digest"] == first["digest"]
        state = fingerprint.load_state(ws)
        assert fingerprint.changed(fingerprint.compute(ws, state.get("last_seen")), state.get("last_success"))
        # (that a whole run then records the new fingerprint: tests/test_loop.py, via the served deployments)
    finally:   # the module's workspace goes back to processed data for the tests that follow
        source.write_bytes(original)
        assert pipeline_flow(workspace=str(ws), targets=["fetch"], return_state=True).is_completed()


def test_watcher_event_mode_emits_once_per_change(ran_workspace, monkeypatch):
    ws, _ = ran_workspace
    import prefect.events

    sent = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: sent.append(kw))
    state = fingerprint.load_state(ws)
    fingerprint.save_state(ws, last_success={**(state.get("last_success") or {}), "digest": "stale"})
    try:
        first = watcher_flow(workspace=str(ws), mode="event")
        second = watcher_flow(workspace=str(ws), mode="event")
    finally:
        fingerprint.save_state(ws, last_success=state.get("last_success"), announced=None)
    assert first["action"] == "event" and second["action"] == "already-announced"
    assert len(sent) == 1 and sent[0]["event"] == flows.DATASET_CHANGED_EVENT
    assert sent[0]["resource"]["prefect.resource.id"] == resource_id(ws)


def test_deployments_wire_schedule_and_event_trigger(tmp_path):
    from flows.deployments import build_deployments

    watcher, pipeline = build_deployments(tmp_path, cron="*/5 * * * *")
    assert watcher.parameters["mode"] == "event"
    assert watcher.schedules[0].schedule.cron == "*/5 * * * *"
    (trigger,) = pipeline.triggers
    assert trigger.expect == {flows.DATASET_CHANGED_EVENT}
    assert trigger.match.model_dump()["prefect.resource.id"] == resource_id(tmp_path)
    assert pipeline.concurrency_limit == 1


def test_validation_artifact_shows_warnings_and_the_near_duplicate_share(tmp_path):
    report = {"success": True, "failures": [], "warnings": ["test: 600 of 2000 images ... [warning]"],
              "splits": {"test": {"success": True, "rows": 2000, "columns": 785, "expectations_total": 20,
                                  "expectations_failed": 1, "failures": [],
                                  "summary": {"content": {"near_duplicates": {"count": 49, "share": 0.0049,
                                                                              "max_rms": 0.05}}}}}}
    (tmp_path / "data/validation").mkdir(parents=True)
    (tmp_path / "data/validation/report.json").write_text(json.dumps(report))
    md = validation_markdown(tmp_path)
    assert "PASSED" in md and "## Warnings (the data passed)" in md and "600 of 2000 images" in md
    assert "49 test images (0.49%) within RMS pixel difference 0.05" in md


# ------------------------------------------------------------------------------- retries and timeouts
@pytest.mark.parametrize("output, transient", [
    (["error [train]: params.yaml: `models.x.epochs` must be an integer", "ERROR: failed to reproduce 'train@x-42':"
      " failed to run: python -m pipeline train ..., exited with 2"], False),
    (["ERROR: failed to reproduce 'validate': failed to run: python -m pipeline validate, exited with 3"], False),
    (["Traceback (most recent call last):", "ZeroDivisionError: division by zero", "exited with 1"], False),
    (["ERROR: Unable to acquire lock. Most likely another DVC process is running"], True),
    (["ERROR: failed to reproduce 'train@x-42': failed to run: python -m pipeline train, exited with -9"], True),
    (["something else went wrong, exited with 1"], False),
])
def test_only_failures_that_can_be_transient_are_retried(output, transient):
    from flows.failures import classify_failure

    is_transient, why = classify_failure(output)
    assert is_transient is transient and why


def _edit_params(ws: Path, change) -> str:
    original = (ws / "params.yaml").read_text()
    params = yaml.safe_load(original)
    change(params)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return original


def _fails_once(ws: Path, change, error, match: str, **flow_kwargs) -> None:
    """With params.yaml edited by `change`, train@gaussian-nb-42 fails with `error` and is not retried."""
    original = _edit_params(ws, change)
    try:
        state = pipeline_flow(workspace=str(ws), targets=["train@gaussian-nb-42"], retries=2, retry_delay_s=0,
                              return_state=True, **flow_kwargs)
        assert state.is_failed()
        with pytest.raises(error, match=match):
            state.result()
        stage = "train@gaussian-nb-42"
        assert task_runs(state.state_details.flow_run_id, expect={stage})[stage].run_count == 1
    finally:
        (ws / "params.yaml").write_text(original)


def test_bad_input_is_not_retried_and_a_timeout_stops_the_stage(ran_workspace):
    from flows.failures import StageFailed, StageTimedOut

    ws, _ = ran_workspace
    _fails_once(ws, lambda p: p["models"]["gaussian-nb"].update(priors="uniform"), StageFailed, "exit 2")
    try:
        _fails_once(ws, lambda p: p["orchestration"]["stage_timeout_s"].update(train=0.5), StageTimedOut,
                    "0.5 s timeout", force=True)
    finally:
        assert pipeline_flow(workspace=str(ws), targets=["train@gaussian-nb-42"], return_state=True).is_completed()
