"""Parallel stage execution (`python -m flows run --workers N` / `--dask-address`): Dask workers run stages in
clones of their own, outputs travel through a local-directory DVC remote, and the workspace ends up with the
bookkeeping a serial `dvc repro` leaves. Real DVC, real Dask processes, a real data slice.

The serial reference is conftest's models_workspace (built by `dvc repro`); one workspace runs the whole DAG
through the flow from scratch; the others start from a copy of conftest's data_workspace (data stages done).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import flows  # noqa: F401  (Prefect/DVC environment defaults before prefect is imported)
import psutil
import pytest
import yaml
from _prefect_runs import task_runs
from conftest import CHEAP, MODELS, SLICE, copy_workspace, make_workspace, run_dvc, set_params

from pipeline.errors import PipelineError

from flows.dag import Stage, load_stages
from flows.dvc_calls import flow_env
from flows.failures import StageFailed, ValidationGateFailed
from flows.parallel import (ClusterShape, cache_every_output, local_worker_specs, stage_resources, take_snapshot,
                            thread_env, wants_gpu)
from flows.pipeline_flow import pipeline_flow

# Stages whose outputs hold no timings: byte-identical whoever runs them.
DETERMINISTIC = ("fetch", "ingest", "convert", "images", "split")


def with_remote(ws: Path, root: Path) -> Path:
    proc = run_dvc("remote", "add", "--local", "-f", "-d", "test-remote", str(root / "remote"), cwd=ws)
    assert proc.returncode == 0, proc.stderr
    return ws


def workspace(root: Path, data_workspace, **changes) -> Path:
    """A copy of conftest's data_workspace (data stages recorded) with its own DVC remote and `changes`."""
    return with_remote(copy_workspace(data_workspace.path, root / "ws", **changes), root)


def lock(ws: Path) -> dict:
    return yaml.safe_load((ws / "dvc.lock").read_text())["stages"]


def cache_holds(ws: Path, md5: str) -> bool:
    return (ws / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).exists()


def api_url() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url)


def flow_log(flow_run_id, wanted: list[str]) -> list[str]:
    """The flow run's log messages in order, once every text in `wanted` is among them (logs reach the API in
    batches after the run)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    deadline = time.monotonic() + 60
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                    sort=LogSort.TIMESTAMP_ASC)
        messages = [entry.message for entry in logs]
        if all(any(w in m for m in messages) for w in wanted) or time.monotonic() > deadline:
            return messages
        time.sleep(0.5)


@pytest.fixture(scope="module")
def serial_and_parallel(prefect_server, fmnist, models_workspace, tmp_path_factory):
    """The same project and slice run by `dvc repro` (conftest's models_workspace) and, from scratch, by the flow
    with 2 local Dask workers."""
    root = tmp_path_factory.mktemp("parallel")
    parallel = with_remote(make_workspace(root / "ws", fmnist, **SLICE,
                                          params_overrides={"train.models": MODELS, **CHEAP}), root)
    state = pipeline_flow(workspace=str(parallel), workers=2, retry_delay_s=0, return_state=True)
    assert state.is_completed(), state.message
    return models_workspace.path, parallel, state


# ------------------------------------------------------------------------------------ DVC bookkeeping
def test_parallel_run_leaves_what_a_serial_dvc_repro_leaves(serial_and_parallel):
    serial, parallel, _ = serial_and_parallel
    assert "Data and pipelines are up to date" in run_dvc("status", cwd=parallel).stdout
    expected, got = lock(serial), lock(parallel)
    # dvc.lock is a mapping: a fresh one lists stages in the order they were recorded, which for concurrent
    # stages is the order they finished (DVC keeps an entry's place when it is updated later)
    assert sorted(got) == sorted(expected), "the same stages recorded"
    for name, entry in expected.items():
        for part in ("cmd", "params"):
            assert got[name].get(part) == entry.get(part), (name, part)
        assert [d["path"] for d in got[name]["deps"]] == [d["path"] for d in entry["deps"]], name
        assert [o["path"] for o in got[name]["outs"]] == [o["path"] for o in entry["outs"]], name
    for name in DETERMINISTIC:
        assert got[name] == expected[name], f"{name}: outputs must be byte-identical to the serial run's"
    for name in (n for n in expected if n.startswith("evaluate@")):
        predictions = [o for o in expected[name]["outs"] if o["path"].endswith(".predictions.npz")]
        assert predictions and predictions[0] in got[name]["outs"], f"{name}: the same predictions"
    git_tracked = {"accuracy.json"} | {o["path"] for n, e in got.items() for o in e["outs"]
                                       if o["path"].startswith("plots/")}
    for name, entry in got.items():
        for out in entry["outs"]:
            if out["path"] not in git_tracked:
                assert cache_holds(parallel, out["md5"]), f"{name}: {out['path']} is not in the DVC cache"
            assert (parallel / out["path"]).exists(), out["path"]


def test_portable_stages_ran_on_two_workers_at_once_and_were_recorded_from_the_run_cache(serial_and_parallel):
    _, parallel, state = serial_and_parallel
    outcomes = {o["stage"]: o for o in state.result()}
    stages = {s.name: s for s in load_stages(parallel)}
    assert set(outcomes) == set(stages)
    for name, stage in stages.items():
        if stage.portable:
            assert outcomes[name]["worker"].startswith("stage-worker-"), name
            assert outcomes[name]["recorded"] == "restored", f"{name} ran again in the workspace"
        else:
            assert "worker" not in outcomes[name] and outcomes[name]["status"] == "ran", name
    assert {outcomes[n]["worker"] for n in stages if n.startswith("train@")} == {"stage-worker-0", "stage-worker-1"}
    # Both trainings were handed to the cluster before either was recorded in the workspace (DVC restoring the
    # worker's run: "is cached - skipping run"): the scheduler dispatches every ready stage at once. Read from
    # the flow process's own log, in order; no clock involved.
    trainings = [f"train@{m}-42" for m in MODELS]
    restored = [f"Stage '{t}' is cached - skipping run" for t in trainings]
    messages = flow_log(state.state_details.flow_run_id, [f"stage '{t}' dispatched" for t in trainings] + restored)
    dispatched = [next(i for i, m in enumerate(messages) if f"stage '{t}' dispatched" in m) for t in trainings]
    recorded = [i for i, m in enumerate(messages) if any(r in m for r in restored)]
    assert recorded and max(dispatched) < min(recorded), "both trainings must be in flight at once"
    # on 2 cores, each of the 2 workers runs one stage at a time with one thread
    assert {outcomes[n]["threads"] for n in stages if stages[n].portable} == {max(1, (os.cpu_count() or 1) // 2)}


def test_a_second_parallel_run_dispatches_nothing(serial_and_parallel):
    _, parallel, _ = serial_and_parallel
    state = pipeline_flow(workspace=str(parallel), workers=2, retry_delay_s=0, return_state=True)
    assert state.is_completed(), state.message
    assert {o["status"] for o in state.result()} == {"cached"}
    assert not any("worker" in o for o in state.result())


# -------------------------------------------------------------- workers with a directory of their own
def test_external_scheduler_two_workers_own_directories_and_gpu_resource(prefect_server, data_workspace, tmp_path):
    """`--dask-address`: a scheduler and 2 worker processes started by hand, each in its own directory, sharing
    nothing with the workspace but the DVC remote; the Keras stages go to the worker that declares GPU=1.
    The CNN comes first in train.models, so it is dispatched first and holds the GPU worker: the other worker
    then has the free slot for the scikit-learn stages."""
    ws = workspace(tmp_path, data_workspace, **{"train.models": ["cnn-dropout-1", "gaussian-nb"],
                                                "models.cnn-dropout-1.epochs": 1})
    scheduler_file = tmp_path / "scheduler.json"
    env = dict(os.environ, PREFECT_API_URL=api_url())
    dask = str(Path(sys.executable).parent / "dask")
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        for name, resources in (("gpu-worker", "CPU=1 GPU=1"), ("cpu-worker", "CPU=1")):
            (tmp_path / name).mkdir()
            procs.append(subprocess.Popen(
                [dask, "worker", "--scheduler-file", str(scheduler_file), "--name", name,
                 "--nthreads", "1", "--resources", resources, "--local-directory", str(tmp_path / name),
                 "--no-dashboard"], cwd=tmp_path / name, env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True))
        import json

        address = json.loads(scheduler_file.read_text())["address"]
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        state = pipeline_flow(workspace=str(ws), dask_address=address, retry_delay_s=0, return_state=True)
        assert state.is_completed(), state.message
        outcomes = {o["stage"]: o for o in state.result()}
        assert outcomes["train@cnn-dropout-1-42"]["worker"] == "gpu-worker"
        assert outcomes["evaluate@cnn-dropout-1-42"]["worker"] == "gpu-worker"
        assert {o.get("worker") for o in outcomes.values()} >= {"gpu-worker", "cpu-worker"}
        for name in ("gpu-worker", "cpu-worker"):   # each worker's clones live in its own directory
            assert list((tmp_path / name).rglob("clone-*/dvc.yaml")), name
        assert "Data and pipelines are up to date" in run_dvc("status", cwd=ws).stdout
        assert all(o.get("recorded") == "restored" for o in outcomes.values() if "worker" in o)
    finally:
        for proc in reversed(procs):
            with _suppress():
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError)


# ------------------------------------------------------------------------------------------- failures
def test_a_failed_stage_stops_only_what_depends_on_it(prefect_server, data_workspace, tmp_path):
    ws = workspace(tmp_path, data_workspace, **{"train.models": ["gaussian-nb", "extra-tree"],
                                                "models.extra-tree.max_depth": -3})   # sklearn rejects it at fit
    state = pipeline_flow(workspace=str(ws), workers=2, retries=2, retry_delay_s=0, return_state=True)
    assert state.is_failed()
    with pytest.raises(StageFailed, match="train@extra-tree-42"):
        state.result()
    runs = task_runs(state.state_details.flow_run_id, expect={"train@extra-tree-42", "train@gaussian-nb-42"})
    assert runs["train@extra-tree-42"].run_count == 1, "a stage-code failure is not retried"
    recorded = lock(ws)
    assert {"train@gaussian-nb-42", "evaluate@gaussian-nb-42"} <= set(recorded), "independent stages finish"
    assert not {"train@extra-tree-42", "evaluate@extra-tree-42", "publish"} & set(recorded)
    assert "evaluate@extra-tree-42" not in runs and "publish" not in runs
    status = run_dvc("status", "train@gaussian-nb-42", "evaluate@gaussian-nb-42", cwd=ws).stdout
    assert "Data and pipelines are up to date" in status, status


def test_the_data_gate_stops_everything_downstream(prefect_server, data_workspace, tmp_path):
    ws = workspace(tmp_path, data_workspace)
    csv = ws / "source" / "fashion-mnist_train.csv"
    lines = csv.read_bytes().split(b"\n")
    lines[1] = b"10," + lines[1].split(b",", 1)[1]      # label 10: the gate must reject it
    csv.write_bytes(b"\n".join(lines))
    state = pipeline_flow(workspace=str(ws), workers=2, retry_delay_s=0, return_state=True)
    with pytest.raises(ValidationGateFailed, match="label"):
        state.result()
    runs = task_runs(state.state_details.flow_run_id, expect={"fetch", "ingest", "validate"})
    assert runs["validate"].run_count == 1
    assert set(runs) == {"fetch", "ingest", "validate"}, "nothing downstream of the gate may start"


def test_ctrl_c_leaves_no_half_recorded_stage_and_the_next_run_resumes(prefect_server, data_workspace, tmp_path):
    ws = workspace(tmp_path, data_workspace)
    env = flow_env(PREFECT_API_URL=api_url(), PYTHONUNBUFFERED="1")   # whole log lines: the test reads them
    # A shell that starts a job in the background (CI's runner, `make test &`) hands it SIGINT ignored, and
    # Python keeps an inherited ignore: start the flow with Ctrl-C live, as a terminal's foreground job has it.
    live_ctrl_c = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                   "sys.argv = ['flows'] + sys.argv[1:]; runpy.run_module('flows', run_name='__main__')")
    cmd = [sys.executable, "-c", live_ctrl_c, "run", "--workspace", str(ws), "--workers", "2"]
    log_path = tmp_path / "flow.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # Interrupt while a worker runs a training: publish cannot have run yet, whatever the machine's speed.
        # Only this flow's process tree counts: other runs on the machine share Dask's scratch directory.
        deadline = time.monotonic() + 300
        while proc.poll() is None and not _stage_commands_running(ws, "train", under=proc.pid):
            assert time.monotonic() < deadline, "no training started"
            time.sleep(0.05)
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        tree = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    seen = [log_path.read_text(errors="replace")]
    log = "".join(seen)
    assert proc.returncode == 130, log[-3000:]
    recorded = lock(ws)
    assert "publish" not in recorded
    for name in recorded:   # whatever dvc.lock holds matches the workspace: nothing half-recorded
        status = run_dvc("status", name, cwd=ws).stdout
        assert "Data and pipelines are up to date" in status, (name, status)
    deadline = time.monotonic() + 30
    while any(p.is_running() for p in tree) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in tree if p.is_running()], "the workers and their stage commands must be stopped"

    state = pipeline_flow(workspace=str(ws), workers=2, retry_delay_s=0, return_state=True)
    assert state.is_completed(), state.message
    outcomes = {o["stage"]: o for o in state.result()}
    for name in recorded:
        assert outcomes[name]["status"] == "cached", f"{name} was recorded before Ctrl-C and must not re-run"
    assert "Data and pipelines are up to date" in run_dvc("status", cwd=ws).stdout


def _stage_commands_running(ws: Path, stage: str = "", under: int | None = None) -> bool:
    """A `python -m pipeline <stage>` command runs in ws or a worker clone (of process `under`'s tree, if given)."""
    candidates = psutil.Process(under).children(recursive=True) if under else psutil.process_iter()
    for proc in candidates:
        try:
            cmdline = " ".join(proc.cmdline())
            if f"-m pipeline {stage}" in cmdline and proc.pid != os.getpid():
                if "clone-" in proc.cwd() or proc.cwd() == str(ws):
                    return True
        except (psutil.Error, OSError):
            continue
    return False


# ------------------------------------------------------------------------------------ resources (unit)
def test_local_workers_split_the_cores_and_each_gpu_goes_to_one_worker():
    specs = local_worker_specs(3, cores=16, gpus=2, prefect_api_url="http://127.0.0.1:1/api")
    options = [spec["options"] for spec in specs.values()]
    assert [o["resources"] for o in options] == [{"CPU": 5, "GPU": 1}, {"CPU": 5, "GPU": 1}, {"CPU": 5}]
    assert [o["env"]["CUDA_VISIBLE_DEVICES"] for o in options] == ["0", "1", ""]
    assert all(o["nthreads"] == 1 and o["env"]["PREFECT_API_URL"].endswith(":1/api") for o in options)
    assert [s["options"]["resources"] for s in local_worker_specs(4, cores=2, gpus=0).values()] == [{"CPU": 1}] * 4


def test_stage_resources_never_ask_more_than_a_worker_has():
    train = Stage("train@cnn-ours-42", "cmd", ("split",), True)
    assert stage_resources(train, 4, True, ClusterShape(workers=2, max_cpu=2, gpu_workers=1)) == {"CPU": 2, "GPU": 1}
    assert stage_resources(train, 1, True, ClusterShape(workers=2, max_cpu=8, gpu_workers=0)) == {"CPU": 1}
    assert stage_resources(train, 2, False, ClusterShape(workers=2, max_cpu=None, gpu_workers=0)) == {}
    assert wants_gpu("train@cnn-ours-42") and wants_gpu("evaluate@cnn-dropout-1-43")
    assert not wants_gpu("train@svc-42") and not wants_gpu("split") and not wants_gpu("publish")
    assert set(thread_env(3).values()) == {"3"}
    assert {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LOKY_MAX_CPU_COUNT", "TF_NUM_INTRAOP_THREADS"} <= \
        set(thread_env(3))


def test_snapshot_ships_what_git_would_commit_and_workers_cache_every_output(tmp_path, fmnist):
    ws = make_workspace(tmp_path / "ws", fmnist, train_rows=100, test_rows=50)
    (ws / "data" / "raw").mkdir(parents=True)
    (ws / "data" / "raw" / "big.csv").write_text("ignored by git")
    (ws / "dvc.lock").write_text("schema: '2.0'\n")
    snapshot = take_snapshot(ws)
    import io
    import tarfile

    names = set(tarfile.open(fileobj=io.BytesIO(snapshot.archive)).getnames())
    assert {"dvc.yaml", "params.yaml", ".dvc/config", "pipeline/training/train.py"} <= names
    assert "data/raw/big.csv" not in names and "dvc.lock" not in names
    assert take_snapshot(ws).digest == snapshot.digest, "the same sources give the same snapshot"
    copy = tmp_path / "dvc.yaml"
    copy.write_text((ws / "dvc.yaml").read_text())
    cache_every_output(copy)
    stages = yaml.safe_load(copy.read_text())["stages"]
    assert stages["publish"]["metrics"] == [{"accuracy.json": {"cache": True}}]
    assert stages["train"]["plots"][0]["plots/history/${item.model}/seed-${item.seed}.csv"]["cache"] is True
    assert stages["train"]["matrix"] == yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]["train"]["matrix"]
    (tmp_path / "plain").mkdir()
    with pytest.raises(PipelineError, match="not a git repository"):
        take_snapshot(tmp_path / "plain")


def test_workers_must_be_a_positive_whole_number(capsys):
    from flows.cli import build_parser

    assert build_parser().parse_args(["run", "--workers", "3"]).workers == 3
    assert build_parser().parse_args(["run"]).workers == 1
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["run", "--workers", bad])
        assert exit_info.value.code == 2
        assert "must be a whole number >= 1" in capsys.readouterr().err
