"""Reliability guarantees, each tested so that the test FAILS if the guarantee is broken.

- atomic writes: a failing or SIGKILLed writer never leaves a partial file under an output name;
- the validation gate under DVC: exit 3, nothing downstream runs, previous outputs stay;
- one run per workspace: the pipeline CLI and DVC both refuse a concurrent run with a clear message;
- safe loading: data files and params never execute code.

Model-side guarantees (kill mid-epoch then resume; Keras safe_mode / skops refusing pickled code) are
tested by the training engineer's tests (see docs/guarantees.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.params import load_params

from flows.dvc_calls import dvc_env, dvc_executable
from tests.conftest import REPO, SLICE, make_workspace, run_cli, run_dvc, shipped_validate_params, write_csv_slice

# dvc.yaml's ingest command (the stage CLIs take their paths from dvc.yaml; they have no defaults).
INGEST = ("ingest", "--raw", "data/raw", "--out", "data/interim")


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ================================================================================ atomic writes (unit)
class Boom(RuntimeError):
    pass


def test_atomic_path_failure_leaves_target_untouched(tmp_path):
    target = tmp_path / "out" / "data.bin"
    io.write_bytes(target, b"previous good output")
    inode = target.stat().st_ino
    with pytest.raises(Boom):
        with io.atomic_path(target) as tmp:
            assert tmp != target and tmp.parent == target.parent and tmp.name.startswith(".")
            tmp.write_bytes(b"half of the new out")
            # While the writer is busy, readers still see the complete previous output.
            assert target.read_bytes() == b"previous good output"
            raise Boom("writer failed mid-way")
    assert target.read_bytes() == b"previous good output"
    assert target.stat().st_ino == inode
    assert listing(target.parent) == ["data.bin"]  # the temporary file was removed


def test_atomic_path_success_replaces_in_one_step(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with io.atomic_path(target) as tmp:
        tmp.write_bytes(b"new complete output")
        assert target.read_bytes() == b"old"
    assert target.read_bytes() == b"new complete output"
    assert listing(tmp_path) == ["data.bin"]


def test_atomic_dir_failure_leaves_target_untouched(tmp_path):
    target = tmp_path / "docs"
    target.mkdir()
    (target / "index.html").write_text("good")
    (target / "sub").mkdir()
    (target / "sub" / "page.html").write_text("good page")
    with pytest.raises(Boom):
        with io.atomic_dir(target) as tmp:
            assert tmp != target and tmp.name.startswith(".")
            (tmp / "index.html").write_text("partial")
            assert (target / "index.html").read_text() == "good"
            raise Boom("writer failed mid-way")
    assert (target / "index.html").read_text() == "good"
    assert (target / "sub" / "page.html").read_text() == "good page"
    assert listing(tmp_path) == ["docs"]


def test_atomic_dir_success_swaps_the_whole_tree(tmp_path):
    target = tmp_path / "docs"
    target.mkdir()
    (target / "stale.html").write_text("old")
    with io.atomic_dir(target) as tmp:
        (tmp / "index.html").write_text("new")
    assert listing(target) == ["index.html"]
    assert listing(tmp_path) == ["docs"]


def test_save_arrays_failing_mid_write_keeps_previous_file(tmp_path, fmnist):
    target = tmp_path / "train.npz"
    x, y = fmnist["test"]
    io.save_arrays(target, x=x[:100], y=y[:100])
    before = sha(target)
    # The second array cannot be serialised: np.savez fails after writing the first one.
    with pytest.raises(Exception):
        io.save_arrays(target, x=x[:200], y=np.array([lambda: None], dtype=object))
    assert sha(target) == before
    np.testing.assert_array_equal(io.load_arrays(target)["x"], x[:100])
    assert listing(tmp_path) == ["train.npz"]


# ===================================================================== SIGKILL in the middle of a write
@pytest.fixture(scope="module")
def full_size_csvs(tmp_path_factory, fmnist) -> dict[str, Path]:
    """60,000-row train and 10,000-row test CSVs of real rows (the first 10,000 train rows, six times)."""
    d = tmp_path_factory.mktemp("fullcsv")
    paths = write_csv_slice(fmnist, d, 10000, 10000)
    header, body = paths["train"].read_bytes().split(b"\n", 1)
    paths["train"].write_bytes(header + b"\n" + body * 6)
    return paths


def _writing(interim: Path, old: dict[str, tuple]) -> bool:
    """True once ingest has started writing: a temp file has bytes, or a target changed in any way."""
    try:
        for p in interim.iterdir():
            if p.name.endswith(".tmp") and p.stat().st_size > 0:
                return True
        for name, st in old.items():
            now = (interim / name).stat()
            if (now.st_ino, now.st_size, now.st_mtime_ns) != st:
                return True
    except FileNotFoundError:
        return True
    return False


@pytest.mark.slow   # full-size CSVs, killed mid-write four times
def test_sigkill_during_ingest_never_leaves_a_partial_output(tmp_path, fmnist, full_size_csvs):
    ws = tmp_path / "ws"
    write_csv_slice(fmnist, ws / "data/raw", 1000, 300)
    assert run_cli(*INGEST, cwd=ws).returncode == 0
    interim = ws / "data/interim"
    names = ("train.parquet", "test.parquet")
    old_bytes = {n: (interim / n).read_bytes() for n in names}
    old = {n: hashlib.sha256(b).hexdigest() for n, b in old_bytes.items()}
    old_rows = {n: pq.read_metadata(interim / n).num_rows for n in names}
    new_rows = {"train.parquet": 60000, "test.parquet": 10000}

    # The new, complete outputs, built aside, for comparison.
    src = full_size_csvs["train"].parent
    proc = run_cli("ingest", "--raw", str(src), "--out", str(tmp_path / "ref"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    new = {n: sha(tmp_path / "ref" / n) for n in names}
    assert new != old
    for path in full_size_csvs.values():
        (ws / "data/raw" / path.name).write_bytes(path.read_bytes())

    rng = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    killed_mid_write = 0
    for attempt in range(4):
        for n in names:  # start every attempt from the previous good outputs
            (interim / n).write_bytes(old_bytes[n])
        stat = {n: ((interim / n).stat().st_ino, (interim / n).stat().st_size, (interim / n).stat().st_mtime_ns)
                for n in names}
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *INGEST], cwd=ws, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and not _writing(interim, stat) and time.monotonic() < deadline:
            time.sleep(0.002)
        # Kill somewhere inside the write phase (first attempt: as soon as it starts).
        time.sleep(0 if attempt == 0 else rng.uniform(0, 0.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_mid_write += proc.returncode == -signal.SIGKILL
        for n in names:
            path = interim / n
            assert path.exists(), f"attempt {attempt}: {n} disappeared"
            digest = sha(path)
            assert digest in (old[n], new[n]), f"attempt {attempt}: {n} is neither the old nor the new complete file"
            # A valid Parquet file with the matching row count: what the next stage reads is whole.
            assert pq.read_metadata(path).num_rows == (old_rows[n] if digest == old[n] else new_rows[n])
        # Leftover temporaries (SIGKILL skips clean-up) are hidden and never under an output name.
        assert [p for p in listing(interim) if not p.startswith(".")] == sorted(names)
        assert all(p.endswith(".tmp") for p in listing(interim) if p.startswith("."))
    assert killed_mid_write >= 1, "no attempt was killed while writing: the test proved nothing"

    # A later normal run completes and produces exactly the new outputs.
    assert run_cli(*INGEST, cwd=ws).returncode == 0
    assert {n: sha(interim / n) for n in names} == new


# ============================================================================ one run per workspace
def test_second_pipeline_command_in_one_workspace_fails_fast(tmp_path, fmnist):
    write_csv_slice(fmnist, tmp_path / "data/raw", 200, 50)
    with io.workspace_lock(tmp_path):
        proc = run_cli(*INGEST, cwd=tmp_path, timeout=120)   # "fast" = it fails at once instead of waiting
    assert proc.returncode == 2
    assert "error [ingest]: the pipeline is already running in this workspace" in proc.stderr
    assert f"pid {os.getpid()}" in proc.stderr and "separate clone" in proc.stderr
    assert not (tmp_path / "data/interim").exists()  # it did not touch the outputs
    # The lock is released with its holder: the next run goes through.
    proc = run_cli(*INGEST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert listing(tmp_path / "data/interim") == ["test.parquet", "train.parquet"]


def test_workspace_lock_is_exclusive_in_process(tmp_path):
    with io.workspace_lock(tmp_path):
        with pytest.raises(PipelineError, match="already running"):
            with io.workspace_lock(tmp_path):
                pass
    with io.workspace_lock(tmp_path):  # released
        pass


# ================================================================== DVC: concurrent repro and the gate
def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def dvc_workspace(tmp_path_factory, fmnist):
    """A real DVC workspace built by `dvc repro split`, with a second `dvc repro` started mid-way."""
    ws = make_workspace(tmp_path_factory.mktemp("dvcws"), fmnist, **SLICE)
    first = subprocess.Popen([dvc_executable(), "repro", "split"], cwd=ws, env=dvc_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Wait until ingest has finished: the first run is now in the validate stage (GX import alone takes
    # longer than DVC's 3 s lock retry).
    deadline = time.monotonic() + 300
    while not (ws / "data/interim/test.parquet").exists() and first.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second = run_dvc("repro", "split", cwd=ws, timeout=120)
    out, _ = first.communicate(timeout=600)
    return {"ws": ws, "first_rc": first.returncode, "first_out": out, "second": second}


@pytest.mark.slow
def test_concurrent_dvc_repro_fails_with_lock_message_not_corruption(dvc_workspace):
    second = dvc_workspace["second"]
    assert second.returncode != 0
    # DVC 3 holds its repo lock only while it plans/commits and per-output read/write locks while a stage
    # runs, so depending on the moment the second run reports one of DVC's two LockError messages.
    out = second.stdout + second.stderr
    assert "Unable to acquire lock" in out or re.search(r"'[^']+' is busy, it is being blocked by", out), out
    assert _ran(second.stdout) == set()
    assert dvc_workspace["first_rc"] == 0, dvc_workspace["first_out"]
    assert _ran(dvc_workspace["first_out"]) == {"fetch", "ingest", "validate", "convert", "split"}
    ws = dvc_workspace["ws"]
    status = run_dvc("status", "--with-deps", "split", cwd=ws)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
    assert yaml.safe_load((ws / "data/validation/report.json").read_text())["success"] is True
    params = yaml.safe_load((ws / "params.yaml").read_text())["split"]
    assert len(io.load_arrays(ws / "data/split/val.npz")["y"]) == params["val_size"]


@pytest.mark.slow
def test_gate_failure_under_dvc_exits_3_and_runs_nothing_downstream(dvc_workspace):
    ws = dvc_workspace["ws"]
    guarded = ["data/validation/report.json", "data/processed/train.npz", "data/processed/test.npz",
               "data/split/train.npz", "data/split/val.npz", "data/split/class_counts.json"]
    before = {p: sha(ws / p) for p in guarded}
    lock_before = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    # A label outside 0..9 in the user's CSV: well-formed, so only the gate can catch it.
    source = ws / "source/fashion-mnist_train.csv"
    lines = source.read_text().split("\n")
    lines[1 + 5] = "10" + lines[1 + 5][lines[1 + 5].index(","):]
    source.write_text("\n".join(lines))

    proc = run_dvc("repro", "split", cwd=ws)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert _ran(proc.stdout) == {"fetch", "ingest", "validate"}
    assert "error [validate]: data validation failed" in output
    assert "train: 1 label value(s) outside 0..9: row 5 -> 10" in output
    assert re.search(r"failed to reproduce 'validate'.*exited with '?3'?", output, re.S | re.I), output
    assert {p: sha(ws / p) for p in guarded} == before
    lock_after = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    for stage in ("validate", "convert", "split"):
        assert lock_after[stage] == lock_before[stage]
    # DVC knows the gate is still to pass: validate and everything after it are stale.
    status = run_dvc("status", "--with-deps", "split", cwd=ws)
    assert "validate" in status.stdout


# ========================================================================================= safe loading
class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious_npz(path: Path, marker: Path) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, x=np.array([_Payload(marker)], dtype=object), y=np.zeros(1, np.uint8))


def test_malicious_npz_really_executes_code_with_pickle_allowed(tmp_path):
    """Control: the crafted file is dangerous, so the next test's refusal means something."""
    marker = tmp_path / "pwned"
    _malicious_npz(tmp_path / "evil.npz", marker)
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as npz:
        npz["x"]
    assert marker.exists()


@pytest.mark.parametrize("kind", ["object-array-npz", "pickle-named-npz"])
def test_load_arrays_refuses_pickled_data(tmp_path, kind):
    marker = tmp_path / "pwned"
    path = tmp_path / "train.npz"
    if kind == "object-array-npz":
        _malicious_npz(path, marker)
    else:
        path.write_bytes(pickle.dumps({"x": _Payload(marker)}))
    with pytest.raises((ValueError, PipelineError), match="allow_pickle"):
        io.load_arrays(path)
    assert not marker.exists()


def test_stage_refuses_a_malicious_npz_input(tmp_path, fmnist):
    marker = tmp_path / "pwned"
    x, y = fmnist["test"]
    (tmp_path / "processed").mkdir()
    _malicious_npz(tmp_path / "processed/train.npz", marker)
    io.save_arrays(tmp_path / "processed/test.npz", x=x[:50], y=y[:50])
    (tmp_path / "params.yaml").write_text("split:\n  train_size: 1\n  val_size: 0\n  seed: 0\n")
    proc = run_cli("split", "--processed", "processed", "--out", "split", cwd=tmp_path)
    assert proc.returncode != 0
    assert "allow_pickle" in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "split").exists()


def test_params_yaml_cannot_execute_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "params.yaml"
    path.write_text(f"fetch: !!python/object/apply:builtins.open [{str(marker)!r}, w]\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_params(path)
    assert not marker.exists()
    proc = run_cli("fetch", "--params", str(path), cwd=tmp_path)
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr
    assert not marker.exists()


# ========================================================== known gap: the gate's verdict is not bound
def test_convert_refuses_data_the_gate_rejected(tmp_path, fmnist):
    from pipeline.data.convert import convert
    from pipeline.data.fetch import to_kaggle_table
    from pipeline.data.validate.stage import validate
    from pipeline.errors import ValidationFailed
    params = dataclasses.replace(shipped_validate_params(), expected_rows={"train": 500, "test": 200},
                                 class_share_tolerance=0.1)
    (x, y), (xt, yt) = fmnist["train"], fmnist["test"]
    interim = tmp_path / "interim"
    interim.mkdir()
    pq.write_table(to_kaggle_table(x[:500], y[:500]), interim / "train.parquet")
    pq.write_table(to_kaggle_table(xt[:200], yt[:200]), interim / "test.parquet")
    report, docs = tmp_path / "report.json", tmp_path / "docs"
    assert validate(interim, report, docs, params)["success"]
    bad = y[:500].copy()
    bad[3] = 10
    pq.write_table(to_kaggle_table(x[:500], bad), interim / "train.parquet")
    with pytest.raises(ValidationFailed):
        validate(interim, report, docs, params)
    with pytest.raises(PipelineError):
        convert(interim, report, tmp_path / "processed")
    assert not (tmp_path / "processed").exists()
