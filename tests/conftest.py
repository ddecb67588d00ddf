"""Shared fixtures: small slices of the REAL Fashion-MNIST (Debian's dataset-fashion-mnist package).

Tests never fabricate pixel data: they slice the official IDX files, which `.ci/run` / `make test`
install. Slices are small, and what is expensive is built once and copied: the DVC workspaces (`data_workspace`:
fetch -> split done; `models_workspace`: two scikit-learn models trained, evaluated and published; each built
once per test run and shared by the xdist workers), one Prefect test server per worker (`prefect_server`) and one
real `prefect server start` per run (`real_prefect_server`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from flows.dvc_calls import dvc_env, dvc_executable  # noqa: F401  (dvc_env: re-exported for tests)
from flows.runtime import configure_environment
from pipeline.data.fetch import load_idx_dir, to_kaggle_table, write_kaggle_csv
from pipeline.params import load_params
from pipeline.schema import CSV_NAMES

REPO = Path(__file__).resolve().parents[1]
DEBIAN_IDX_DIR = Path(os.environ.get("FMNIST_IDX_DIR", "/usr/share/datasets/fashion-mnist"))

# Tests run Prefect, DVC and TensorFlow in this process: the same offline, quiet defaults as `python -m flows`.
configure_environment()


@functools.cache
def shipped_params() -> dict:
    return load_params(REPO / "params.yaml")


def shipped_section(name: str, **overrides) -> dict:
    """The shipped params.yaml section `name` (a fresh copy) with `overrides`: every key stays required."""
    return {**copy.deepcopy(shipped_params()[name]), **overrides}


def shipped_validate_params():
    """params.yaml's `validate` section as shipped: what the stage runs with on the full dataset."""
    from pipeline.params import ValidateParams, section

    return section(ValidateParams, "validate", copy.deepcopy(shipped_params()))


def shipped_hyperparams(name: str) -> dict:
    """The shipped params.yaml `models.<name>` (a fresh copy): the only home of each model's hyperparameters."""
    return copy.deepcopy(shipped_params()["models"][name])


@pytest.fixture(scope="session")
def fmnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The full official dataset as uint8 arrays: {'train': (x 60000x28x28, y), 'test': (x 10000x28x28, y)}."""
    if not DEBIAN_IDX_DIR.is_dir():
        pytest.fail(f"{DEBIAN_IDX_DIR} missing: install Debian's dataset-fashion-mnist (make setup does)")
    return load_idx_dir(DEBIAN_IDX_DIR)


@pytest.fixture(scope="session")
def small_split(fmnist) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny real train/val/test split (600/200/300 images) for model and evaluation tests."""
    (x, y), (xt, yt) = fmnist["train"], fmnist["test"]
    return {"train": (x[:600], y[:600]), "val": (x[600:800], y[600:800]), "test": (xt[:300], yt[:300])}


def write_csv_slice(fmnist, out_dir: Path, train_rows: int = 1000, test_rows: int = 300) -> dict[str, Path]:
    """Write Kaggle-layout CSVs holding the first rows of the real train and test sets."""
    paths = {}
    for split, rows in (("train", train_rows), ("test", test_rows)):
        x, y = fmnist[split]
        paths[split] = out_dir / CSV_NAMES[split]
        write_kaggle_csv(to_kaggle_table(x[:rows], y[:rows]), paths[split])
    return paths


@pytest.fixture
def csv_slice(fmnist, tmp_path) -> dict[str, Path]:
    """Kaggle-layout CSVs (1,000 train + 300 test real rows) in tmp_path/raw."""
    return write_csv_slice(fmnist, tmp_path / "raw")


def call_cli(*args: str, cwd: Path | str = REPO) -> subprocess.CompletedProcess:
    """`python -m pipeline ...` in this process (the same `pipeline.cli.main`, without a new interpreter): for
    error matrices, where a subprocess per case costs seconds. One subprocess per stage checks the real exit."""
    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:          # argparse errors exit 2, as the real command does
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(["python", "-m", "pipeline", *args], code, out.getvalue(), err.getvalue())


def run_cli(*args: str, cwd: Path | str = REPO, check: bool = False, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m pipeline ...` the way dvc.yaml does, in a subprocess."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def set_dotted(params: dict, changes: dict) -> None:
    """Set `changes` (dotted keys such as "models.svc.C" -> values) in a params mapping, in place."""
    for key, value in changes.items():
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value


def make_workspace(dest: Path, fmnist, *, train_rows: int = 1000, test_rows: int = 300,
                   params_overrides: dict | None = None) -> Path:
    """A throw-away git+DVC workspace with the repo's dvc.yaml/params.yaml over a real CSV slice in `source/`
    (`fetch.source: source`, relative, so that a copy of the workspace is a workspace of its own).

    Stage commands run the installed `pipeline` package with this interpreter (PATH is set by
    `dvc_env`). Params are shrunk to the slice so the real DAG runs in seconds.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "pipeline", dest / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", dest / ".dvc" / "config")
    source = dest / "source"
    write_csv_slice(fmnist, source, train_rows, test_rows)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["fetch"]["source"] = "source"
    params["validate"]["expected_rows"] = {"train": train_rows, "test": test_rows}
    params["validate"]["class_share_tolerance"] = 0.05
    params["split"]["train_size"] = int(train_rows * 0.8)
    params["split"]["val_size"] = train_rows - int(train_rows * 0.8)
    set_dotted(params, params_overrides or {})
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def run_dvc(*args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """`dvc <args>` in `cwd`, with flows/dvc_calls.py's executable and environment (the one home of both)."""
    return subprocess.run([dvc_executable(), *args], cwd=cwd, env=dvc_env(), capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------------- workspaces built once per session
SLICE = {"train_rows": 500, "test_rows": 200}     # the one slice of the shared DVC workspaces
# Cheap settings for the model stages of test workspaces: the DAG is tested here, not the models.
CHEAP = {"evaluate.latency_calls": 3, "evaluate.warmup_calls": 1, "publish.dpi": 50, "publish.sample_images": 4}
MODELS = ["gaussian-nb", "decision-tree"]           # the two fastest registered models


def set_params(ws: Path, **changes) -> None:
    """Edit params.yaml by hand, as a user would: dotted keys -> new values."""
    params = yaml.safe_load((ws / "params.yaml").read_text())
    set_dotted(params, changes)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_workspace(template: Path, dest: Path, **param_changes) -> Path:
    """A copy of a built workspace (git repo, params, outputs, dvc.lock, DVC cache): what `dvc repro` recorded
    there is up to date here too. DVC's state database (.dvc/tmp) is left behind: it keys files by inode."""
    shutil.copytree(template, dest, symlinks=True, ignore=lambda d, names: ["tmp"] if Path(d).name == ".dvc" else [])
    if param_changes:
        set_params(dest, **param_changes)
    return dest


@dataclasses.dataclass(frozen=True)
class Built:
    path: Path
    first_run: str      # stdout of the `dvc repro` that built it (what a first run reports)


def built_once_per_run(name: str, build) -> Built:
    """`build(dest)` once per test RUN, not once per xdist worker: the first worker that asks builds it (in a new
    directory under the run's shared directory, holding a file lock); the others wait on the lock and get what it
    recorded. A failed build records nothing, so the next worker that asks fails on its own build too."""
    import fcntl
    import json
    import tempfile

    shared = Path(os.environ[SHARED_DIR])
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # released when the file closes
        record = shared / f"{name}.json"
        if record.exists():
            known = json.loads(record.read_text())
            return Built(Path(known["path"]), known["first_run"])
        built = build(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=shared)) / "ws")
        record.write_text(json.dumps({"path": str(built.path), "first_run": built.first_run}))
        return built


@pytest.fixture(scope="session")
def data_workspace(fmnist) -> Built:
    """Every data stage (fetch -> ingest -> validate -> convert -> images, split), run once per test run by
    `dvc repro split images` on the 500/200 real slice. Read-only: tests copy it (copy_workspace) first."""
    def build(dest: Path) -> Built:
        ws = make_workspace(dest, fmnist, **SLICE, params_overrides={"train.models": MODELS, **CHEAP})
        proc = run_dvc("repro", "split", "images", cwd=ws)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return Built(ws, proc.stdout)

    return built_once_per_run("data-workspace", build)


@pytest.fixture(scope="session")
def models_workspace(data_workspace) -> Built:
    """data_workspace plus train/evaluate@gaussian-nb-42 and @decision-tree-42 and publish (`dvc repro`), once per
    test run. Read-only: tests copy it (copy_workspace) before changing anything."""
    def build(dest: Path) -> Built:
        ws = copy_workspace(data_workspace.path, dest)
        proc = run_dvc("repro", cwd=ws)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return Built(ws, proc.stdout)

    return built_once_per_run("models-workspace", build)


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect test server (a temporary database) for every test that talks to Prefect's API."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def real_prefect_server():
    """The run's one real `prefect server start` (tests/_prefect_server.py), for the tests that need a whole server
    (its scheduler, blocks, several processes): a RealServer with api_url and a client environment. Every xdist
    worker gets the same server; it stops when the run ends (pytest_unconfigure below)."""
    from tests._prefect_server import shared_real_prefect_server

    return shared_real_prefect_server(Path(os.environ[SHARED_DIR]))


SHARED_DIR = "FMNIST_TESTS_SHARED_DIR"   # set by the run's main process, inherited by its xdist workers


def pytest_configure(config):
    if not hasattr(config, "workerinput"):     # the main process (xdist's controller, or a run without -n)
        import tempfile

        os.environ[SHARED_DIR] = tempfile.mkdtemp(prefix="fmnist-tests-")


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput") and SHARED_DIR in os.environ:
        from tests._prefect_server import stop_shared_real_prefect_server

        shared = Path(os.environ.pop(SHARED_DIR))
        stop_shared_real_prefect_server(shared)
        shutil.rmtree(shared, ignore_errors=True)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, fmnist, small_split) -> Path:
    """tests/_trained.py's workspace of tiny trained models (predict, export, serve, model cards)."""
    from tests._trained import build_trained_workspace

    return build_trained_workspace(tmp_path_factory.mktemp("trained"), fmnist, small_split)


@pytest.fixture(scope="session")
def cnn_ours_export(trained) -> Built:
    """`python -m pipeline export --model cnn-ours` in the `trained` workspace, once per session (export and serve
    tests share it): <trained>/exports/cnn-ours/seed-42/model.onnx. first_run: the command's stderr."""
    from tests._trained import SEED

    proc = run_cli("export", "--model", "cnn-ours", cwd=trained)
    assert proc.returncode == 0, proc.stderr
    return Built(trained / "exports" / "cnn-ours" / f"seed-{SEED}", proc.stderr)


# The slow tier (`pytest -m slow`; `make check` leaves it out): every test that runs the real DVC pipeline,
# Prefect or Dask end to end. Tests that use the shared end-to-end fixtures are marked here, so none is forgotten;
# the few that build an end-to-end run of their own carry the mark themselves.
END_TO_END_FIXTURES = {"data_workspace", "models_workspace", "prefect_server", "real_prefect_server"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
