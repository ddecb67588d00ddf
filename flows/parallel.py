"""Independent DVC stages at the same time, on Dask workers (prefect-dask), with DVC's bookkeeping intact.

DVC runs one command at a time per checkout, so a worker never runs a stage in the workspace. Each stage
that DVC's run cache can record (flows.dag.Stage.portable: no `persist` output, every dependency in the
repository) goes to a Dask worker, which runs it in a clone of its own:

1. the clone is the workspace's source files (what git would commit: tracked plus untracked, not ignored),
   shipped inside the task (no shared disk needed), plus the coordinator's dvc.lock at dispatch time;
2. the worker pulls the outputs of the stage's upstream stages from the DVC remote (`dvc pull <upstream>`),
   runs `dvc repro --single-item --pull <stage>` (restored from the remote's run cache when that run was
   ever pushed), and pushes the outputs and the run-cache entry (`dvc push --run-cache <stage>`);
3. the coordinator records the stage in the workspace with `dvc repro --single-item --pull <stage>`: DVC
   finds the pushed run and checks its outputs out ("restored") instead of running the command, and writes
   dvc.lock exactly as a serial `dvc repro` would for the same inputs.

A stage is dispatched only after all its upstream stages are recorded. The other stages (fetch, ingest,
validate: persistent outputs, data outside the repository) run in the workspace as in a serial run.
Everything goes through DVC's CLI; the coordinator makes one DVC call at a time, each worker clone one.
Resources: params.yaml `orchestration.stage_cpus`; see `local_cluster` and `stage_resources`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from pipeline.errors import PipelineError
from pipeline.io import write_text
from pipeline.models import registry

from flows import dask_logs
from flows.dag import Stage
from flows.dvc_calls import RUNNING_GROUPS, dvc_env, run_dvc, run_dvc_stage
from flows.failures import raise_for_failure, retry_if_transient, step_failed

DASK_LOGS = Path(__file__).with_name("dask_logs.py")   # a worker preload, by path
# The thread pools a stage's libraries size from the environment: BLAS/OpenMP (numpy, scikit-learn),
# joblib's n_jobs=-1 (LOKY_MAX_CPU_COUNT) and TensorFlow's intra-/inter-op pools.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS", "LOKY_MAX_CPU_COUNT", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


# ------------------------------------------------------------------------------------- coordinator side
@dataclass(frozen=True)
class Snapshot:
    """The workspace's source files as one tar archive: what a worker's clone starts from."""
    digest: str
    archive: bytes
    files: int
    names: frozenset[str] = frozenset()   # the files it holds, workspace-relative

    def holds(self, path: str) -> bool:
        """Whether the clone gets `path` (a file, or a directory with at least one file in it)."""
        return path in self.names or any(name.startswith(f"{path}/") for name in self.names)


def take_snapshot(workspace: Path) -> Snapshot:
    """Tar the files git would commit (tracked, plus untracked files that are not ignored), without the
    dvc.lock files.

    What DVC records (every dvc.lock and `.dvc` file) travels separately with each stage: it changes as stages
    are recorded. Raises PipelineError for a workspace that is not a git repository: git's ignore rules are what
    separates sources from outputs.
    """
    proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=workspace,
                          capture_output=True)
    if proc.returncode != 0:
        raise PipelineError(f"{workspace}: not a git repository ({proc.stderr.decode(errors='replace').strip()})",
                            hint="parallel runs ship the files git would commit to each worker: run `git init` "
                                 "there, or run without --workers")
    names = sorted({n for n in proc.stdout.decode().split("\0") if n and Path(n).name != "dvc.lock"})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in names:
            path = workspace / name
            if not path.is_file():   # deleted but still tracked, or a submodule
                continue
            info = tar.gettarinfo(str(path), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    archive = buffer.getvalue()
    return Snapshot(digest=hashlib.sha256(archive).hexdigest(), archive=archive, files=len(names),
                    names=frozenset(names))


def default_remote_url(workspace: Path) -> str:
    """The URL of the workspace's default DVC remote; a local path made absolute (workers see another cwd)."""
    rc, lines, _ = run_dvc(workspace, ["remote", "default"])
    name = lines[-1].strip() if rc == 0 and lines else ""
    if not name or name.startswith("ERROR"):
        raise PipelineError(f"{workspace}: no default DVC remote",
                            hint="parallel runs exchange stage outputs through the DVC remote: "
                                 "`dvc remote add -d <name> <url>` (README, 'Sharing results: the DVC remote')")
    rc, lines, _ = run_dvc(workspace, ["config", f"remote.{name}.url"])
    url = lines[-1].strip() if rc == 0 and lines else ""
    if not url:
        raise PipelineError(f"{workspace}: the default DVC remote '{name}' has no URL", hint="see `dvc remote list`")
    if "://" not in url and not Path(url).is_absolute():   # DVC resolves it from .dvc/, where the config is
        url = str((workspace / ".dvc" / url).resolve())
    return url


def gpu_count() -> int:
    """NVIDIA GPUs on this machine (`nvidia-smi -L`); 0 when there is no driver."""
    try:
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in proc.stdout.splitlines()) if proc.returncode == 0 else 0


def local_worker_specs(n_workers: int, cores: int, gpus: int, prefect_api_url: str | None = None) -> dict:
    """Dask worker specs for `local_cluster`: one stage at a time per worker, the cores split evenly (the CPU
    resource), GPU=1 for the first workers when there are NVIDIA GPUs, each seeing only its own
    (CUDA_VISIBLE_DEVICES), and the Prefect API the workers report their task runs and logs to."""
    from distributed import Nanny

    share = max(1, cores // n_workers)
    specs = {}
    for i in range(n_workers):
        resources: dict[str, float] = {"CPU": share}
        env: dict[str, str] = {"PREFECT_API_URL": prefect_api_url} if prefect_api_url else {}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i) if i < gpus else ""
            if i < gpus:
                resources["GPU"] = 1
        # memory_limit 0: the stage runs in a subprocess that the worker's memory monitor does not see anyway.
        # preload: no dashboard address in the worker's start-up lines (flows.dask_logs).
        specs[f"stage-worker-{i}"] = {"cls": Nanny, "options": {"nthreads": 1, "resources": resources, "env": env,
                                                                "memory_limit": 0, "preload": [str(DASK_LOGS)]}}
    return specs


def local_cluster(n_workers: int, prefect_api_url: str | None = None):
    """A Dask cluster on this machine (local_worker_specs), so that N concurrent stages never ask for more
    threads than the machine has. `prefect_api_url`: the running flow's API, so that the workers of an
    ephemeral run report to it instead of starting Prefect servers of their own."""
    from distributed import Scheduler, SpecCluster

    class Cluster(SpecCluster):
        # distributed serves HTTP on 127.0.0.1 even with dashboard_address=None (that leaves out only the Bokeh
        # pages): no link for prefect-dask to announce, and no address in the scheduler's log (flows.dask_logs).
        @property
        def dashboard_link(self) -> str:
            return ""

    dask_logs.install()
    workers = local_worker_specs(n_workers, os.cpu_count() or 1, gpu_count(), prefect_api_url)
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None, "dashboard": False}}
    return Cluster(workers=workers, scheduler=scheduler, name="fmnist-pipeline")


def dask_task_runner(workers: int, address: str | None):
    """prefect-dask's DaskTaskRunner: an existing scheduler at `address`, else a local_cluster of `workers`."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:   # the running flow's API (ephemeral or a server)
        api_url = str(client.api_url)
    return DaskTaskRunner(cluster_class=local_cluster,
                          cluster_kwargs={"n_workers": workers, "prefect_api_url": api_url})


@dataclass(frozen=True)
class ClusterShape:
    workers: int
    max_cpu: float | None    # the largest CPU resource a worker declares (None: no worker declares one)
    gpu_workers: int


def cluster_shape(client, timeout_s: float = 120.0) -> ClusterShape:
    """What the scheduler's workers declare. Waits (bounded) for at least one worker to join."""
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except Exception as exc:   # distributed raises its own TimeoutError
        raise PipelineError(f"no Dask worker joined the scheduler within {timeout_s:g} s ({exc})",
                            hint="start workers: `dask worker tcp://HOST:PORT --nthreads 1 --resources CPU=<n>`")
    infos = client.scheduler_info().get("workers", {}).values()
    cpus = [w.get("resources", {}).get("CPU") for w in infos]
    declared = [c for c in cpus if c]
    return ClusterShape(workers=len(cpus), max_cpu=max(declared) if declared else None,
                        gpu_workers=sum(1 for w in infos if w.get("resources", {}).get("GPU")))


def stage_resources(stage: Stage, cpus: int, wants_gpu: bool, shape: ClusterShape) -> dict[str, float]:
    """The Dask resources to annotate a stage's task with; never more than some worker has (it would wait
    forever). `cpus` is what the stage declares (params.yaml orchestration.stage_cpus)."""
    resources: dict[str, float] = {}
    if shape.max_cpu:
        resources["CPU"] = min(float(cpus), shape.max_cpu)
    if wants_gpu and shape.gpu_workers:
        resources["GPU"] = 1
    return resources


# ------------------------------------------------------------------------------------------ worker side
_SLOTS = threading.Lock()
_BUSY: set[int] = set()


@contextlib.contextmanager
def _slot():
    """A clone directory per concurrently running stage on this worker (one DVC command per checkout)."""
    with _SLOTS:
        slot = next(i for i in range(len(_BUSY) + 1) if i not in _BUSY)
        _BUSY.add(slot)
    try:
        yield slot
    finally:
        with _SLOTS:
            _BUSY.discard(slot)


def _worker():
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):   # not inside a Dask worker (tests call the task directly)
        return None


def _worker_root(worker) -> Path:
    # Dask's per-worker scratch directory (removed when the worker closes): clones and the worker's DVC cache.
    root = Path(worker.local_directory) if worker is not None else Path(tempfile.gettempdir()) / "fmnist-worker"
    root.mkdir(parents=True, exist_ok=True)
    return root


def prepare_clone(root: Path, snapshot: Snapshot, slot: int, remote_url: str) -> Path:
    """The clone for `snapshot` in `slot` under `root`: unpacked once (atomically), DVC pointed at the remote
    and at a cache shared by the worker's clones, without git (core.no_scm)."""
    clone = root / f"clone-{snapshot.digest[:16]}-{slot}"
    if not (clone / ".dvc").is_dir():
        staging = root / f".unpacking-{uuid.uuid4().hex}"
        with tarfile.open(fileobj=io.BytesIO(snapshot.archive)) as tar:
            tar.extractall(staging, filter="data")
        (staging / ".dvc").mkdir(exist_ok=True)
        for dvc_yaml in staging.rglob("dvc.yaml"):   # nested pipelines too
            cache_every_output(dvc_yaml)
        shutil.rmtree(clone, ignore_errors=True)
        staging.rename(clone)
    config = (f"[core]\n    no_scm = true\n    remote = coordinator\n    analytics = false\n"
              f"[cache]\n    dir = {root / 'dvc-cache'}\n"
              f"['remote \"coordinator\"']\n    url = {remote_url}\n")
    write_text(clone / ".dvc" / "config.local", config)
    return clone


def cache_every_output(dvc_yaml: Path) -> None:
    """In a worker's clone, turn `cache: false` outputs (small metrics/plots files that the workspace commits to
    git) into cached ones, so that `dvc push` sends them to the remote with the rest.

    DVC 3 pushes neither uncached outputs nor the outputs behind run-cache entries (dvc/repo/push.py), while the
    coordinator's restore needs every output of the run on the remote. The `cache` flag is not part of the
    run-cache key (DVC hashes the stage's lock entry: command, dependencies, parameters, output paths), so the
    clone's runs are found by the workspace, which then checks these files out as the plain files it tracks.
    """
    import yaml

    document = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}
    for definition in (document.get("stages") or {}).values():
        definition = definition.get("do", definition)   # a foreach stage declares its outputs under `do`
        for kind in ("outs", "metrics", "plots"):
            for entry in definition.get(kind) or []:
                if isinstance(entry, dict):
                    for flags in entry.values():
                        if isinstance(flags, dict) and flags.get("cache") is False:
                            flags["cache"] = True
    write_text(dvc_yaml, yaml.safe_dump(document, sort_keys=False))


def thread_env(threads: int) -> dict[str, str]:
    return {name: str(threads) for name in THREAD_VARIABLES}


def _granted_threads(worker, cpus: float) -> int:
    """A worker that runs one stage at a time gives it all its CPUs; one that runs several gives each the
    CPUs it asked for (Dask keeps their sum within the worker's CPU resource)."""
    if worker is None:
        return max(1, int(cpus))
    declared = worker.state.total_resources.get("CPU")
    if worker.state.nthreads == 1:
        return max(1, int(declared or cpus))
    return max(1, int(min(cpus, declared) if declared else cpus))


@task(name="dvc-stage-on-worker", retry_condition_fn=retry_if_transient, persist_result=False,
      cache_policy=NO_CACHE)
def run_stage_on_worker(stage: str, upstream: list[str], snapshot: Snapshot, records: dict[str, str],
                        remote_url: str, cpus: float = 1, timeout_s: float | None = None) -> dict[str, Any]:
    """Run one stage in this worker's clone and push its outputs and run-cache entry to the DVC remote.

    records: what the workspace's DVC has recorded at dispatch (every dvc.lock and `.dvc` file: path -> text,
    "" where there is none yet), so that the clone pulls the upstream outputs the workspace holds now."""
    log = get_run_logger()
    worker = _worker()
    where = getattr(worker, "name", None) or "local"
    started = time.monotonic()
    with _slot() as slot:
        clone = prepare_clone(_worker_root(worker), snapshot, slot, remote_url)
        for path, text in records.items():
            if text:
                write_text(clone / path, text)
            else:
                (clone / path).unlink(missing_ok=True)
        threads = _granted_threads(worker, cpus)
        env = dvc_env(**thread_env(threads))
        log.info("stage '%s' on worker %s (clone %s, %d thread(s))", stage, where, clone.name, threads)
        if upstream:
            returncode, lines, _ = run_dvc(clone, ["pull", *upstream], env=env, exclusive=False)
            if returncode != 0:
                log.error("stage '%s': could not pull its inputs from the DVC remote %s", stage, remote_url)
                raise step_failed(stage, returncode, lines, "pulling its inputs from the DVC remote")
        returncode, status, lines = run_dvc_stage(clone, stage, log=log, timeout_s=timeout_s, pull=True, env=env,
                                                  exclusive=False)
        raise_for_failure(stage, returncode, status, lines, timeout_s, log)
        returncode, lines, _ = run_dvc(clone, ["push", "--run-cache", stage], env=env, exclusive=False)
        if returncode != 0:
            raise step_failed(stage, returncode, lines, "pushing its outputs to the DVC remote")
    duration = round(time.monotonic() - started, 2)
    log.info("stage '%s' %s on worker %s in %.1f s; outputs pushed", stage, status, where, duration)
    return {"stage": stage, "status": status, "duration_s": duration, "worker": where, "threads": threads}


def stop_stage_processes() -> int:
    """Stop the DVC commands this worker process started (run through `client.run` when a run is interrupted)."""
    stopped = 0
    for pgid in list(RUNNING_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGINT)
            stopped += 1
    return stopped


def wants_gpu(stage: str) -> bool:
    """Training and evaluating a Keras model use a GPU where a worker has one (the registry says which are)."""

    family, _, item = stage.partition("@")
    if family not in ("train", "evaluate") or not item:
        return False
    model = item.rsplit("-", 1)[0]
    return model in registry.names() and registry.get(model).family == "keras"
