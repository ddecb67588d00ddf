"""The DVC experiment loop on a real data slice: run cache, versioned metrics and plots, queued sweeps, `-S`
errors, seeds, the default remote and a fresh clone, and Keras resume under DVC.

One git+DVC workspace (a copy of conftest's models_workspace: two fast scikit-learn models on 500 real training
rows) is committed once; each test leaves it as it found it (committed params, outputs checked out), so the tests
can run in any order.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import MODELS, copy_workspace, dvc_env, dvc_executable, run_dvc, set_params

GIT = ["git", "-c", "user.email=test@example.com", "-c", "user.name=test"]


def _ran(stdout: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", stdout))


def _restored(stdout: str) -> set[str]:
    return set(re.findall(r"Stage '([^']+)' is cached - skipping run", stdout))


def git(*args: str, cwd: Path) -> str:
    proc = subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def dvc_ok(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = run_dvc(*args, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def back_to_head(ws: Path) -> None:
    """Committed params and code, outputs as dvc.lock records them (git-tracked outputs from git)."""
    git("checkout", "-q", "--", ".", cwd=ws)
    dvc_ok("checkout", "--force", cwd=ws)
    status = dvc_ok("status", cwd=ws).stdout
    assert "up to date" in status, status


# What the workspace held before its first `dvc repro` (conftest.make_workspace): the project, and the source.
PROJECT_FILES = {"dvc.yaml", "params.yaml", ".gitignore", ".dvcignore", ".dvc/config"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory, models_workspace):
    root = tmp_path_factory.mktemp("exp")
    ws = copy_workspace(models_workspace.path, root / "ws")
    # What a user commits after a run: dvc.lock and the git-tracked metrics and plots; nothing else shows up.
    untracked = {line[3:] for line in git("status", "--porcelain", "--untracked-files=all", cwd=ws).split("\n")
                 if line}
    made_by_the_run = {f for f in untracked if f not in PROJECT_FILES and not f.startswith(("pipeline/", "source/"))}
    assert made_by_the_run == {"dvc.lock", "accuracy.json", ".dvc/.gitignore",
                               *(f"plots/history/{m}/seed-42.csv" for m in MODELS)}, made_by_the_run
    # The data source lives outside the repository, as /usr/share/datasets does for real runs.
    (ws / "source").rename(root / "source")
    set_params(ws, **{"fetch.source": str(root / "source")})
    proc = dvc_ok("repro", cwd=ws)
    assert _ran(proc.stdout) == {"fetch"}, proc.stdout    # a new source param; the same bytes: nothing after it
    git("add", "-A", cwd=ws)
    git("commit", "-qm", "first run", cwd=ws)
    return ws


def test_changing_a_parameter_back_restores_from_the_run_cache_and_trains_nothing(ws):
    first = {p: digest(ws / p) for p in ("models/decision-tree/seed-42/train.json",
                                         "metrics/decision-tree/seed-42.json", "accuracy.json")}
    set_params(ws, **{"models.decision-tree.max_depth": 3})
    proc = dvc_ok("repro", cwd=ws)
    assert _ran(proc.stdout) == {"train@decision-tree-42", "evaluate@decision-tree-42", "publish"}
    changed = json.loads((ws / "accuracy.json").read_text())["decision-tree"]["test_acc"]

    git("checkout", "-q", "params.yaml", cwd=ws)           # back to max_depth 10
    proc = dvc_ok("repro", cwd=ws)
    assert _ran(proc.stdout) == set(), proc.stdout         # nothing trained, evaluated or published...
    assert _restored(proc.stdout) == {"train@decision-tree-42", "evaluate@decision-tree-42", "publish"}
    # ...and the outputs are the first run's, byte for byte (train.json records the fit time: a retrain differs)
    assert {p: digest(ws / p) for p in first} == first
    assert json.loads((ws / "accuracy.json").read_text())["decision-tree"]["test_acc"] != changed
    assert "up to date" in dvc_ok("status", cwd=ws).stdout


def test_metrics_and_plots_diff_across_revisions_and_exp_show(ws):
    try:
        proc = dvc_ok("exp", "run", "-n", "shallow-tree", "-S", "models.decision-tree.max_depth=2", cwd=ws)
        assert _ran(proc.stdout) == {"train@decision-tree-42", "evaluate@decision-tree-42", "publish"}
        head = json.loads(git("show", "HEAD:accuracy.json", cwd=ws))
        now = json.loads((ws / "accuracy.json").read_text())

        diff = json.loads(dvc_ok("metrics", "diff", "HEAD", "--json", cwd=ws).stdout)["accuracy.json"]
        assert diff["decision-tree.test_acc"]["old"] == head["decision-tree"]["test_acc"]
        assert diff["decision-tree.test_acc"]["new"] == now["decision-tree"]["test_acc"] != \
            head["decision-tree"]["test_acc"]
        assert {"decision-tree.ci95_low", "decision-tree.ci95_high"} <= set(diff)
        assert not any(k.startswith("gaussian-nb.") for k in diff)      # unchanged model: no row

        shown = json.loads(dvc_ok("exp", "show", "--json", cwd=ws).stdout)
        exps = [e for rev in shown for e in (rev.get("experiments") or [])]
        named = [e for e in exps if e.get("name") == "shallow-tree"]
        assert named, [e.get("name") for e in exps]
        data = named[0]["revs"][0]["data"]
        assert data["metrics"]["accuracy.json"]["data"]["decision-tree"]["test_acc"] == now["decision-tree"]["test_acc"]
        assert data["params"]["params.yaml"]["data"]["models"]["decision-tree"]["max_depth"] == 2
        table = dvc_ok("exp", "show", "--no-pager", "--md", "--only-changed", cwd=ws).stdout
        assert "decision-tree.test_acc" in table and "shallow-tree" in table

        plots = json.loads(dvc_ok("plots", "diff", "HEAD", "--json", cwd=ws).stdout)
        history = plots["data"]["dvc.yaml::plots/history/decision-tree/seed-42.csv"][0]
        assert set(history["revisions"]) == {"workspace", "HEAD"}
        assert not plots.get("errors"), plots.get("errors")
    finally:
        back_to_head(ws)


def run_queue(ws: Path, *overrides: str, jobs: int) -> dict[str, str]:
    """Queue one sweep, run it with `dvc queue start -j N`, wait; return {experiment name: its log}."""
    queued = dvc_ok("exp", "run", "--queue", *[a for o in overrides for a in ("-S", o)], cwd=ws).stdout
    names = re.findall(r"Queued experiment '([^']+)'", queued)
    assert names, queued
    dvc_ok("queue", "start", "-j", str(jobs), cwd=ws)
    deadline = time.monotonic() + 600
    while re.search(r"\b(Queued|Running)\b", status := dvc_ok("queue", "status", cwd=ws).stdout):
        assert time.monotonic() < deadline, status
        time.sleep(2)
    for name in names:
        assert re.search(rf"\b{re.escape(name)}\b.*\bSuccess\b", status), status
    return {name: dvc_ok("queue", "logs", name, cwd=ws).stdout for name in names}


def test_queued_sweep_runs_only_the_changed_stages(ws):
    try:
        logs = run_queue(ws, "models.decision-tree.max_depth=4,6", jobs=2)
        assert len(logs) == 2
        for log in logs.values():
            # the other model and the data stages come from the workspace's cache; only the swept model runs
            assert _ran(log) <= {"train@decision-tree-42", "evaluate@decision-tree-42", "publish", "fetch"}, log
            assert "train@decision-tree-42" in _ran(log)
            assert not any(name.endswith(("gaussian-nb-42",)) for name in _ran(log))
        shown = json.loads(dvc_ok("exp", "show", "--json", cwd=ws).stdout)
        depths = {e["revs"][0]["data"]["params"]["params.yaml"]["data"]["models"]["decision-tree"]["max_depth"]
                  for rev in shown for e in (rev.get("experiments") or [])}
        assert {4, 6} <= depths

        # The same point again: the queued runs filled the shared run cache, so every expensive stage is
        # restored from it and nothing is trained.
        log = dvc_ok("exp", "run", "-S", "models.decision-tree.max_depth=4", cwd=ws).stdout
        assert not {s for s in _ran(log) if s.startswith(("train@", "evaluate@", "publish"))}, log
        assert {"train@decision-tree-42", "evaluate@decision-tree-42", "publish"} <= _restored(log)
    finally:
        run_dvc("queue", "remove", "--all", cwd=ws)
        run_dvc("exp", "remove", "-A", cwd=ws)
        back_to_head(ws)


def _first_error_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("error [train]"))


@pytest.mark.parametrize("override, edit", [
    ("+models.decision-tree.max_dept=3", {"models.decision-tree.max_dept": 3}),       # unknown key
    ("models.decision-tree.max_depth=deep", {"models.decision-tree.max_depth": "deep"}),  # wrong type
])
def test_set_param_override_fails_with_the_params_error_of_a_hand_edit(ws, override, edit):
    last_good = {p: digest(ws / p) for p in ("models/decision-tree/seed-42/model.skops",
                                             "plots/history/decision-tree/seed-42.csv", "accuracy.json")}
    try:
        set_params(ws, **edit)
        by_hand = run_dvc("repro", cwd=ws)
        assert by_hand.returncode != 0
        # DVC deleted the failed stage's old (non-persistent) output; nothing half-written took its place...
        assert not (ws / "models/decision-tree/seed-42").exists()
        assert not list((ws / "models/decision-tree").glob(".*.tmp"))
        # ...and `dvc checkout` + `git checkout` bring the last good outputs back, byte for byte.
        back_to_head(ws)
        assert {p: digest(ws / p) for p in last_good} == last_good

        via_s = run_dvc("exp", "run", "-S", override, cwd=ws)
        assert via_s.returncode != 0
        out = via_s.stdout + via_s.stderr
        assert _first_error_line(out) == _first_error_line(by_hand.stdout + by_hand.stderr)
        assert "params.yaml:" in _first_error_line(out) and "Traceback" not in out
    finally:
        back_to_head(ws)


def test_set_param_with_a_key_dvc_does_not_know_is_refused_before_anything_runs(ws):
    proc = run_dvc("exp", "run", "-S", "models.decision-tree.max_dept=3", cwd=ws)
    assert "max_dept" in proc.stdout + proc.stderr and "not in struct" in proc.stdout + proc.stderr
    assert _ran(proc.stdout) == set()
    back_to_head(ws)


def test_adding_a_seed_trains_only_the_new_runs_and_reports_the_spread(ws):
    try:
        set_params(ws, **{"train.seeds": [42, 7]})
        proc = dvc_ok("repro", cwd=ws)
        assert _ran(proc.stdout) == {f"{stage}@{m}-7" for stage in ("train", "evaluate") for m in MODELS} | {"publish"}
        summary = json.loads((ws / "accuracy.json").read_text())
        tree = [json.loads((ws / f"metrics/decision-tree/seed-{s}.json").read_text())["test"]["accuracy"]
                for s in (42, 7)]
        assert summary["decision-tree"]["test_acc"] == pytest.approx(50 * sum(tree), abs=1e-3)
        assert summary["decision-tree"]["seed_std"] is not None
        assert "(2 seeds)" in (ws / "reports/comparison.md").read_text()
    finally:
        back_to_head(ws)


def test_push_then_a_fresh_clone_pulls_every_output_and_reruns_nothing(ws, tmp_path):
    remote = (ws / ".dvc" / ".." / ".." / "fmnist-pipeline-dvc-remote").resolve()   # the default in .dvc/config
    proc = dvc_ok("push", "--run-cache", cwd=ws)
    assert remote.is_dir() and any(remote.rglob("*")), proc.stdout
    clone = ws.parent / "clone"                 # beside the workspace: the relative default remote is shared
    subprocess.run(["git", "clone", "-q", str(ws), str(clone)], check=True)
    try:
        assert not (clone / "models").exists()
        dvc_ok("pull", cwd=clone)
        for path in ("data/split/train.npz", "models/decision-tree/seed-42/model.skops",
                     "metrics/gaussian-nb/seed-42.predictions.npz", "reports/comparison.html",
                     "data/validation/report.json"):
            assert (clone / path).is_file(), path
            assert digest(clone / path) == digest(ws / path), path
        assert "up to date" in dvc_ok("status", cwd=clone).stdout
        assert _ran(dvc_ok("repro", cwd=clone).stdout) == set()
    finally:
        subprocess.run(["rm", "-rf", str(clone)])


def _checkpointed_epoch(state: Path) -> int:
    try:
        return int(json.loads(state.read_text()).get("epoch", 0))
    except (OSError, ValueError):      # not there yet, or being swapped in right now
        return 0


def test_interrupted_keras_training_under_dvc_resumes_from_its_last_epoch(ws):
    """SIGKILL `dvc repro` mid-training: DVC deletes the stage's output before the next run, but the epoch
    checkpoint lives in .checkpoints/, so the rerun resumes instead of starting over."""
    ckpt_state = ws / ".checkpoints" / "cnn-dropout-1" / "seed-42" / "state.json"
    epochs = 30          # far more than the 2 the kill waits for: the kill lands mid-training on any machine
    try:
        set_params(ws, **{"train.models": ["cnn-dropout-1"], "models.cnn-dropout-1.epochs": epochs,
                          "models.cnn-dropout-1.batch_size": 32})
        env = dvc_env()
        proc = subprocess.Popen([dvc_executable(), "repro", "train@cnn-dropout-1-42"], cwd=ws, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.monotonic() + 300
        while _checkpointed_epoch(ckpt_state) < 2:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reached = json.loads(ckpt_state.read_text())["epoch"]
        assert 2 <= reached < epochs and not (ws / "models/cnn-dropout-1/seed-42").exists()

        rerun = dvc_ok("repro", "train@cnn-dropout-1-42", cwd=ws)
        assert re.search(rf"resuming from checkpoint after epoch (\d+)/{epochs}", rerun.stdout + rerun.stderr)
        meta = json.loads((ws / "models/cnn-dropout-1/seed-42/train.json").read_text())
        assert meta["resumed_from_epoch"] >= reached and meta["epochs"] == epochs
        assert not (ws / ".checkpoints").exists()                   # removed on success
    finally:
        subprocess.run(["rm", "-rf", str(ws / ".checkpoints"), str(ws / "models/cnn-dropout-1"),
                        str(ws / "plots/history/cnn-dropout-1")])
        back_to_head(ws)
