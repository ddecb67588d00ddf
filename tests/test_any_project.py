"""The flow on a DVC project that is not this one (issue 29): every kind of stage DVC has, run serially and with
2 Dask workers, compared with `dvc repro --all-pipelines` of the same project; defaults without an
`orchestration` section; clear errors before any stage starts; the watcher on `dvc add` data and on a stage's
external dependency.

The project is built here, tiny: one script (scripts/tool.py), a few text files, real DVC. It is built once
per module and copied (with its `external/` directory beside it) for each run.
"""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path

import flows  # noqa: F401  (Prefect/DVC environment defaults before prefect is imported)
import pytest
import yaml
from conftest import run_dvc

from pipeline.errors import PipelineError

from flows import fingerprint
from flows.dag import data_sources, load_stages
from flows.parallel import Snapshot
from flows.pipeline_flow import DefaultOrchestration, orchestration_settings, pipeline_flow
from flows.watcher import resource_id, watcher_flow

TOOL = '''\
"""concat OUT IN...: OUT = the inputs' text (a directory: its files, sorted); write OUT WORD...; append OUT WORD..."""
import sys
from pathlib import Path


def read(path):
    path = Path(path)
    if path.is_dir():
        return "".join(f"{f.relative_to(path)}:{f.read_text()}" for f in sorted(path.rglob("*")) if f.is_file())
    return path.read_text()


op, out, *args = sys.argv[1:]
out = Path(out)
out.parent.mkdir(parents=True, exist_ok=True)
if op == "concat":
    out.write_text("".join(read(a) for a in args))
elif op == "write":
    out.write_text(" ".join(args) + "\\n")
else:
    with open(out, "a") as fh:
        fh.write(" ".join(args) + "\\n")
'''

# Every kind of stage: .dvc files from `dvc add` (a file, a directory) and `dvc import-url` (a local path); `cmd`
# as a list; foreach; a frozen stage (and one downstream of it); `wdir`; a stage with no dependencies;
# `always_changed`; an external dependency; and in sub/dvc.yaml a matrix with `vars` and params from a file that
# is not params.yaml. `thaw` also reads a file git ignores and no stage writes: it cannot go to a worker.
DVC_YAML = '''\
stages:
  prep:
    cmd:
      - python scripts/tool.py concat out/prep.txt raw.csv imported.txt images
      - python scripts/tool.py append out/prep.txt ${greeting}
    deps: [raw.csv, imported.txt, images, scripts/tool.py]
    params: [greeting]
    outs: [out/prep.txt]
  square:
    foreach: [1, 2]
    do:
      cmd: python scripts/tool.py concat out/sq-${item}.txt out/prep.txt out/prep.txt
      deps: [out/prep.txt, scripts/tool.py]
      outs: ["out/sq-${item}.txt"]
  frozen:
    cmd: python scripts/tool.py concat out/frozen.txt raw.csv
    deps: [raw.csv]
    outs: [out/frozen.txt]
  thaw:
    cmd: python scripts/tool.py concat out/thawed.txt out/frozen.txt local/notes.txt
    deps: [out/frozen.txt, local/notes.txt]
    outs: [out/thawed.txt]
  report:
    wdir: reports
    cmd: python ../scripts/tool.py concat summary.txt template.txt ../out/sq-1.txt ../out/sq-2.txt ../sub/grid-a.txt ../sub/grid-b.txt ../out/thawed.txt
    deps: [template.txt, ../out/sq-1.txt, ../out/sq-2.txt, ../sub/grid-a.txt, ../sub/grid-b.txt, ../out/thawed.txt]
    outs: [summary.txt]
  nodeps:
    cmd: python scripts/tool.py write out/nodeps.txt made from nothing
    outs: [out/nodeps.txt]
  always:
    cmd: python scripts/tool.py concat out/always.txt out/prep.txt
    deps: [out/prep.txt]
    outs: [out/always.txt]
    always_changed: true
  fed:
    cmd: python scripts/tool.py concat out/fed.txt ../external/feed.txt
    deps: [../external/feed.txt]
    outs: [out/fed.txt]
'''
SUB_DVC_YAML = '''\
vars: [config.yaml]
stages:
  grid:
    matrix:
      kind: ${kinds}
    cmd: python ../scripts/tool.py concat grid-${item.kind}.txt ../out/prep.txt && python ../scripts/tool.py append grid-${item.kind}.txt ${item.kind} x${scale}
    deps: [../out/prep.txt]
    params: [config.yaml: [scale]]
    outs: ["grid-${item.kind}.txt"]
'''
DATA_FILES = ("raw.csv.dvc", "images.dvc", "imported.txt.dvc")
ALL = {*DATA_FILES, "prep", "square@1", "square@2", "frozen", "thaw", "report", "nodeps", "always", "fed",
       "sub/dvc.yaml:grid@a", "sub/dvc.yaml:grid@b"}
ON_WORKERS = {"prep", "square@1", "square@2", "report", "sub/dvc.yaml:grid@a", "sub/dvc.yaml:grid@b"}
RECORDS = ("dvc.lock", "sub/dvc.lock", *DATA_FILES)     # everything DVC records, compared as mappings
STATUS_CLEAN = {"always": ["always changed"]}            # what `dvc status --json` always reports here


def dvc(*args: str, cwd: Path) -> str:
    proc = run_dvc(*args, cwd=cwd)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def build_project(root: Path) -> Path:
    """root/project (git + DVC) and root/external (what it imports and depends on from outside)."""
    import subprocess

    external = root / "external"
    external.mkdir(parents=True)
    (external / "upstream.txt").write_text("imported line\n")
    (external / "feed.txt").write_text("feed v1\n")
    ws = root / "project"
    for directory in ("scripts", "images", "sub", "reports", "local"):
        (ws / directory).mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    dvc("init", "-q", cwd=ws)
    (ws / "scripts/tool.py").write_text(TOOL)
    (ws / "raw.csv").write_text("a,b\n1,2\n")
    (ws / "images/1.txt").write_text("one\n")
    (ws / "images/2.txt").write_text("two\n")
    dvc("add", "-q", "raw.csv", "images", cwd=ws)
    dvc("import-url", "-q", str(external / "upstream.txt"), "imported.txt", cwd=ws)
    (ws / "params.yaml").write_text("greeting: hello\n")     # no `orchestration` section: not this project
    (ws / "sub/config.yaml").write_text("scale: 3\nkinds: [a, b]\n")
    (ws / "reports/template.txt").write_text("summary of\n")
    (ws / "local/notes.txt").write_text("kept out of git\n")
    with open(ws / ".gitignore", "a") as fh:
        fh.write("/out/\n/reports/summary.txt\n/local/\n")
    (ws / "dvc.yaml").write_text(DVC_YAML)
    (ws / "sub/dvc.yaml").write_text(SUB_DVC_YAML)
    dvc("repro", "-q", "--single-item", "frozen", cwd=ws)   # a frozen stage must have run once
    dvc("freeze", "frozen", cwd=ws)
    return ws


def copy_project(ws: Path, dest_root: Path) -> Path:
    """A copy of the project and its external/ directory (DVC's state database, keyed by inode, left out)."""
    shutil.copytree(ws.parent, dest_root, symlinks=True,
                    ignore=lambda d, names: ["tmp"] if Path(d).name == ".dvc" else [])
    return dest_root / "project"


def records(ws: Path) -> dict[str, object]:
    return {name: yaml.safe_load((ws / name).read_text()) for name in RECORDS}


def outputs(ws: Path) -> dict[str, bytes]:
    """Every file of every output DVC declares (stages' and `.dvc` files'), with its bytes."""
    from dvc.repo import Repo

    with Repo(str(ws)) as repo:
        roots = [Path(out.fs_path) for stage in repo.index.stages for out in stage.outs]
    files = [f for root in roots for f in (sorted(root.rglob("*")) if root.is_dir() else [root])]
    return {f.relative_to(ws).as_posix(): f.read_bytes() for f in files}


def status(ws: Path) -> dict:
    return yaml.safe_load(dvc("status", "--json", cwd=ws))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_project(tmp_path_factory.mktemp("any-project"))


@pytest.fixture(scope="module")
def runs(prefect_server, base, tmp_path_factory):
    """The same project run by `dvc repro --all-pipelines`, by the flow serially and by the flow on 2 workers."""
    root = tmp_path_factory.mktemp("any-runs")
    reference = copy_project(base, root / "reference")
    dvc("repro", "--all-pipelines", cwd=reference)
    serial = copy_project(base, root / "serial")
    serial_state = pipeline_flow(workspace=str(serial), retry_delay_s=0, return_state=True)
    assert serial_state.is_completed(), serial_state.message
    parallel = copy_project(base, root / "parallel")
    dvc("remote", "add", "--local", "-d", "test-remote", str(root / "remote"), cwd=parallel)
    parallel_state = pipeline_flow(workspace=str(parallel), workers=2, retry_delay_s=0, return_state=True)
    assert parallel_state.is_completed(), parallel_state.message
    return {"reference": reference, "serial": serial, "parallel": parallel,
            "serial_state": serial_state, "parallel_state": parallel_state}


# ------------------------------------------------------------------------------ every kind of DVC stage
def test_serial_and_parallel_runs_leave_what_dvc_repro_leaves(runs):
    reference = runs["reference"]
    assert status(reference) == STATUS_CLEAN
    expected_records, expected_outputs = records(reference), outputs(reference)
    assert len(expected_outputs) == 15   # 11 stage outputs, 4 files under DVC's data sources
    for kind in ("serial", "parallel"):
        ws = runs[kind]
        assert status(ws) == STATUS_CLEAN, kind
        assert records(ws) == expected_records, f"{kind}: dvc.lock, sub/dvc.lock and .dvc files as dvc repro's"
        assert outputs(ws) == expected_outputs, f"{kind}: every output byte for byte"


def test_every_stage_is_a_task_and_what_dvc_can_record_ran_on_workers(runs):
    serial = {o["stage"]: o for o in runs["serial_state"].result()}
    parallel = {o["stage"]: o for o in runs["parallel_state"].result()}
    assert set(serial) == set(parallel) == ALL
    # .dvc files and the frozen stage are verified by DVC, not run: `dvc status` found them up to date
    assert {n for n, o in serial.items() if o["status"] == "cached"} == {*DATA_FILES, "frozen"}
    assert {n for n, o in parallel.items() if "worker" in o} == ON_WORKERS
    assert all(parallel[n]["recorded"] == "restored" for n in ON_WORKERS), "recorded from the workers' runs"
    portable = {s.name for s in load_stages(runs["parallel"]) if s.portable}
    # thaw could be recorded from the run cache, but reads local/notes.txt, which git does not ship to workers
    assert portable == ON_WORKERS | {"thaw"}


def test_a_second_run_runs_only_the_always_changed_stage(runs):
    state = pipeline_flow(workspace=str(runs["serial"]), retry_delay_s=0, return_state=True)
    assert state.is_completed(), state.message
    assert {o["stage"] for o in state.result() if o["status"] != "cached"} == {"always"}
    assert status(runs["serial"]) == STATUS_CLEAN


def test_targets_take_dvc_forms_and_a_frozen_stage_does_not_pull_in_its_upstream(base):
    def names(*targets):
        return [s.name for s in load_stages(base, list(targets))]

    assert names("square") == ["images.dvc", "raw.csv.dvc", "imported.txt.dvc", "prep", "square@1", "square@2"]
    assert names("sub/dvc.yaml") == names("sub/dvc.yaml:grid") == \
        ["images.dvc", "raw.csv.dvc", "imported.txt.dvc", "prep", "sub/dvc.yaml:grid@a", "sub/dvc.yaml:grid@b"]
    assert names("raw.csv.dvc") == ["raw.csv.dvc"]
    assert names("thaw") == ["frozen", "thaw"], "as in dvc repro, raw.csv.dvc is not reproduced for a frozen stage"
    stages = {s.name: s for s in load_stages(base)}
    assert stages["prep"].cmd == ("python scripts/tool.py concat out/prep.txt raw.csv imported.txt images && "
                                  "python scripts/tool.py append out/prep.txt hello")
    assert stages["sub/dvc.yaml:grid@a"].record_file == "sub/dvc.lock"
    assert stages["images.dvc"].record_file == "images.dvc"
    assert stages["thaw"].inputs == ("local/notes.txt",) and stages["report"].inputs == ("reports/template.txt",)
    snapshot = Snapshot(digest="", archive=b"", files=2, names=frozenset({"reports/template.txt", "sub/dvc.yaml"}))
    assert snapshot.holds("reports/template.txt") and snapshot.holds("sub") and not snapshot.holds("local/notes.txt")


# ---------------------------------------------------------------------------- other projects' settings
def test_no_orchestration_section_means_documented_defaults_and_a_wrong_one_still_fails(base, tmp_path):
    settings, note = orchestration_settings(base)
    assert isinstance(settings, DefaultOrchestration) and "no `orchestration` section" in note
    assert settings.timeout_for("prep") is None and settings.cpus_for("sub/dvc.yaml:grid@a") == 1
    assert orchestration_settings(tmp_path)[1].startswith("no params.yaml")
    (tmp_path / "params.yaml").write_text("orchestration:\n  stage_timeout_s: {default: 10}\n")
    with pytest.raises(PipelineError, match="missing key.* in `orchestration`: stage_cpus"):
        orchestration_settings(tmp_path)


def flow_messages(state, until: str) -> list[str]:
    """The flow run's log messages in order, once one contains `until` (logs reach the API in batches)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    run_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    deadline = time.monotonic() + 60
    while True:
        with get_client(sync_client=True) as client:
            messages = [entry.message for entry in client.read_logs(log_filter=run_filter, sort=LogSort.TIMESTAMP_ASC)]
        if any(until in m for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.5)


def test_the_first_log_line_says_the_defaults_are_used(runs):
    messages = flow_messages(runs["serial_state"], until="stage(s) from DVC in order")
    ours = [m for m in messages if not m.startswith("Beginning flow run")]   # Prefect's own first line
    assert ours[0].startswith("params.yaml has no `orchestration` section: running with the defaults, "
                              "no stage timeout and 1 CPU per stage"), ours[:3]


# ------------------------------------------------------------------- clear errors before any stage starts
def test_not_the_project_root_is_a_clear_error_with_no_traceback(prefect_server, base):
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    from flows.dvc_calls import flow_env

    proc = subprocess.run([sys.executable, "-m", "flows", "run", "--workspace", str(base / "sub")],
                          env=flow_env(PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=os.getcwd()),
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"error [run]: {base / 'sub'}: not the root of a DVC project" in out
    assert f"how to fix: pass --workspace {base}" in out
    assert "Traceback" not in out and "no params.yaml" not in out, out


@pytest.mark.parametrize("case", ["DVC cannot read it", "unknown target", "wrong orchestration"])
def test_what_the_flow_cannot_run_is_a_clear_error_before_any_stage(prefect_server, base, tmp_path, case):
    ws = copy_project(base, tmp_path / "copy")
    targets = None
    if case == "DVC cannot read it":
        (ws / "sub/dvc.yaml").write_text(SUB_DVC_YAML.replace("vars: [config.yaml]", "vars: [missing.yaml]"))
        expected = ["DVC cannot read this project", "missing.yaml", "`dvc status` there"]
    elif case == "unknown target":
        targets = ["sqare"]
        expected = ["unknown stage(s): sqare", "square@1", "sub/dvc.yaml:grid@a"]
    else:
        (ws / "params.yaml").write_text("greeting: hello\norchestration: {stage_cpus: {default: 1}}\n")
        expected = ["missing key(s) in `orchestration`: stage_timeout_s", "how to fix"]
    state = pipeline_flow(workspace=str(ws), targets=targets, return_state=True)
    assert state.is_failed()
    with pytest.raises(PipelineError) as info:
        state.result()
    assert info.value.exit_code == 2 and all(text in str(info.value) for text in expected), str(info.value)
    messages = flow_messages(state, until=expected[0])
    assert any(expected[0] in m for m in messages) and not any("Traceback" in m for m in messages), messages
    assert not (ws / "out" / "prep.txt").exists(), "no stage may have run"


# ------------------------------------------------------------------------- watcher and scheduled runs
def test_watcher_sees_dvc_add_data_and_an_external_dependency(runs, tmp_path, monkeypatch):
    import prefect.events

    from flows.deployments import build_deployments

    ws = copy_project(runs["serial"], tmp_path / "copy")
    assert data_sources(ws) == [str(tmp_path / "copy/external/feed.txt"), str(ws / "images"), str(ws / "raw.csv")], \
        "dvc add paths and the external dependency; not the frozen import-url"
    # this copy's data as processed, as a run that reached the end of the DAG here records it
    fingerprint.save_state(ws, last_success=fingerprint.compute(ws))
    assert watcher_flow(workspace=str(ws))["action"] == "none"

    # a `dvc add`-tracked file changes: the scheduled check (`flows serve`, event mode) announces it ...
    sent = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda **kw: sent.append(kw))
    (ws / "raw.csv").write_text("a,b\n1,2\n3,4\n")
    assert watcher_flow(workspace=str(ws), mode="event")["action"] == "event"
    assert [e["resource"]["prefect.resource.id"] for e in sent] == [resource_id(ws)]
    _, pipeline = build_deployments(ws, interval=60)
    assert pipeline.triggers[0].match.model_dump()["prefect.resource.id"] == resource_id(ws)
    # ... and the run the trigger starts re-records the data and re-runs what reads it
    state = pipeline_flow(**pipeline.parameters, return_state=True)
    assert state.is_completed(), state.message
    ran = {o["stage"] for o in state.result() if o["status"] != "cached"}
    assert {"raw.csv.dvc", "prep", "report"} <= ran and "frozen" not in ran and "fed" not in ran
    assert "3,4" in (ws / "out/prep.txt").read_text() and status(ws) == STATUS_CLEAN
    assert watcher_flow(workspace=str(ws), mode="event")["action"] == "none"

    # the external dependency changes: `flows watch` runs the pipeline
    (ws.parent / "external/feed.txt").write_text("feed v2\n")
    result = watcher_flow(workspace=str(ws))
    assert result["changed"] and result["action"] == "ran"
    assert (ws / "out/fed.txt").read_text() == "feed v2\n" and status(ws) == STATUS_CLEAN
    assert fingerprint.load_state(ws)["last_success"]["digest"] == result["digest"]


def test_a_project_with_no_data_source_says_what_to_watch(tmp_path):
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc("init", "-q", cwd=tmp_path)
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent("""\
        stages:
          hello:
            cmd: echo hi > hi.txt
            outs: [hi.txt]
        """))
    with pytest.raises(PipelineError, match="no data source to watch") as info:
        fingerprint.compute(tmp_path)
    assert "dvc add" in info.value.hint
