"""The stage DAG as DVC sees it (dvc.yaml, foreach/matrix expanded): names, upstream stages, run order; and
where a stage writes (stage_out, outs_dir), for code that reads a stage's outputs.

Nothing here declares a stage or a path: the list comes from DVC's own index of the workspace, so a stage added
to dvc.yaml (or a new `matrix` item such as `train@cnn-simple-42`) becomes a Prefect task with no code change,
and a stage's outputs are looked up in dvc.yaml, so moving one there moves it for the flows and the benchmarks.
Not about running stages: see flows.pipeline_flow and flows.parallel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import dvc_yaml
from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Stage:
    # DVC address relative to the workspace root: "split", "train@cnn-simple-42" (foreach/matrix item),
    # "sub/dvc.yaml:grid@a" (a nested dvc.yaml), "data.dvc" (a `.dvc` file: dvc add / import / import-url)
    name: str
    cmd: str
    upstream: tuple[str, ...] = field(default_factory=tuple)   # direct upstream stages (DVC dependencies)
    # DVC's run cache can record it from a run made elsewhere, and a worker's clone can get all its inputs
    # (_portable). Only such stages go to Dask workers (flows.parallel); the others run in the workspace.
    portable: bool = False
    # Files and directories it reads that no stage writes (workspace-relative): what a worker's clone must
    # find among the shipped sources (flows.scheduler runs the stage in the workspace when one is missing).
    inputs: tuple[str, ...] = field(default_factory=tuple)
    # The file DVC records it in, workspace-relative: "dvc.lock", "sub/dvc.lock" or the `.dvc` file itself.
    record_file: str = "dvc.lock"
    # Every output goes to the DVC cache, so `dvc push` can send it to a worker that needs it.
    outs_cached: bool = True


REPO = Path(__file__).resolve().parents[1]


def _stage(stage: str, workspace: str | os.PathLike | None) -> dict[str, tuple[str, ...]]:
    """The workspace's declaration of `stage`, else (no dvc.yaml there, or no such stage) this repository's."""
    for dvc_file in dict.fromkeys(((Path(workspace) if workspace else REPO) / "dvc.yaml", REPO / "dvc.yaml")):
        if dvc_file.exists():
            declared = dvc_yaml.outputs(dvc_file)
            if stage in declared:
                return declared[stage]
    raise PipelineError(f"dvc.yaml: no stage '{stage}'", hint=f"stages in {REPO / 'dvc.yaml'}: "
                                                              f"{', '.join(dvc_yaml.outputs(REPO / 'dvc.yaml'))}")


def stage_outs(stage: str, workspace: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Every output `stage` declares in dvc.yaml (outs, metrics, plots) as written there: relative to the
    workspace root, `${...}` left as is. From the workspace's dvc.yaml, else this repository's. Plain YAML, no
    DVC, so that module constants and CLI defaults can use it."""
    kinds = _stage(stage, workspace)
    return tuple(path for kind in dvc_yaml.OUTPUT_KINDS for path in kinds[kind])


def stage_out(stage: str, endswith: str, workspace: str | os.PathLike | None = None) -> Path:
    """The one output of `stage` whose path ends with `endswith`, e.g. stage_out("fetch", "train.csv")."""
    found = [p for p in stage_outs(stage, workspace) if p.endswith(endswith)]
    if len(found) != 1:
        raise PipelineError(f"dvc.yaml: stage '{stage}' has {len(found)} outputs ending with {endswith!r}: {found}")
    return Path(found[0])


def outs_dir(stage: str, workspace: str | os.PathLike | None = None) -> Path:
    """The directory that holds the `outs` of `stage` (cut at the first `${...}`): data/split for split, models
    for train, metrics for evaluate; a stage whose one output is a directory (publish: reports) gives that."""
    outs = [p.split("${", 1)[0].rstrip("/") for p in _stage(stage, workspace)["outs"]]
    if not outs:
        raise PipelineError(f"dvc.yaml: stage '{stage}' declares no outs")
    return Path(outs[0] if len(outs) == 1 else os.path.commonpath(outs))


def _address(stage) -> str:
    """`dvc repro` address relative to the workspace root (DVC's own `addressing` is relative to the cwd):
    `name` in ./dvc.yaml, `sub/dvc.yaml:name` in a nested one, the `.dvc` file's path for dvc add/import."""
    path = getattr(stage, "path_in_repo", None) or "dvc.yaml"
    name = getattr(stage, "name", None)    # only dvc.yaml stages (PipelineStage) have one
    if name is None:
        return path
    return name if path == "dvc.yaml" else f"{path}:{name}"


def _record_file(stage) -> str:
    path = getattr(stage, "path_in_repo", None) or "dvc.yaml"
    if getattr(stage, "name", None) is None:
        return path
    parent = Path(path).parent
    return (parent / "dvc.lock").as_posix()


def _relative(fs_path: str, root: Path) -> str:
    return Path(os.path.relpath(fs_path, root)).as_posix()


def _portable(stage, upstream: list, portable: dict) -> bool:
    """What DVC's run cache needs to record a run (dvc.stage.cache._can_hash, less its hashing of the deps,
    which may not exist yet), not frozen, every input in the repository, and every upstream output able to
    reach a worker: cached (pushed to the remote), or written by a portable stage (its clone caches all)."""
    if stage.frozen or not stage.cmd or getattr(stage, "always_changed", False) or not stage.deps or not stage.outs:
        return False
    if any(dep.protocol != "local" or not dep.def_path or not dep.is_in_repo for dep in stage.deps):
        return False
    if any(out.protocol != "local" or not out.def_path or out.persist or not out.is_in_repo for out in stage.outs):
        return False
    return all(portable[up] or all(out.use_cache for out in up.outs) for up in upstream)


def _matches(name: str, target: str) -> bool:
    """DVC's target forms: an address, a foreach/matrix group (`train`: every `train@*`), a dvc.yaml or `.dvc`
    file (every stage it holds)."""
    if target in (name, name.split("@")[0]):
        return True
    file = name.split(":")[0] if ":" in name else (name if name.endswith(".dvc") else "dvc.yaml")
    return file == target


def _resolve_targets(targets: list[str], by_name: dict) -> list:
    found = {t: [s for name, s in by_name.items() if _matches(name, t.removeprefix("./"))] for t in targets}
    unknown = [t for t, stages in found.items() if not stages]
    if unknown:
        raise PipelineError(f"unknown stage(s): {', '.join(unknown)}",
                            hint=f"stages in this DVC project: {', '.join(sorted(by_name))}")
    return [s for stages in found.values() for s in stages]


def check_workspace(workspace: str | os.PathLike) -> Path:
    """`workspace` resolved; PipelineError unless it is the root of a DVC project (stage addresses, and every
    `dvc` command the flow runs there, are relative to the root)."""
    workspace = Path(workspace).resolve()
    if not (workspace / ".dvc").is_dir():
        above = next((p for p in workspace.parents if (p / ".dvc").is_dir()), None)
        raise PipelineError(
            f"{workspace}: not the root of a DVC project (no .dvc/ directory here)",
            hint=f"pass --workspace {above} (the project's root: stage addresses are relative to it)" if above
            else "pass --workspace pointing at the directory where `dvc init` ran")
    return workspace


def load_stages(workspace: str | os.PathLike, targets: list[str] | None = None) -> list[Stage]:
    """Every stage of the DVC project at `workspace` in topological order (ties: DVC's order of its files):
    dvc.yaml stages, nested `*/dvc.yaml` ones and `.dvc` files, as `dvc repro --all-pipelines` visits them.

    With `targets`, only those stages and everything upstream of them (what `dvc repro <targets>` would
    consider). As in `dvc repro`, a frozen stage does not pull in its upstream stages. Raises PipelineError,
    before anything runs, for a directory that is not a DVC project's root, a project DVC cannot read, or an
    unknown target.
    """
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.repo.reproduce import get_active_graph

    workspace = check_workspace(workspace)
    try:
        with Repo(str(workspace)) as repo:
            return _plan(repo, workspace, targets, get_active_graph(repo.index.graph), nx)
    except DvcException as exc:
        raise PipelineError(f"{workspace}: DVC cannot read this project: {exc}",
                            hint="`dvc status` there shows DVC's own report; fix the dvc.yaml or .dvc file it "
                                 "names") from None


def _plan(repo, workspace: Path, targets: list[str] | None, graph, nx) -> list[Stage]:
    # edges: stage -> the stage it depends on; a frozen stage's edges are cut, as `dvc repro` does
    order = {stage: i for i, stage in enumerate(repo.index.stages)}
    by_name = {_address(s): s for s in graph.nodes}
    if targets:
        wanted = set()
        for node in _resolve_targets(targets, by_name):
            wanted |= {node} | nx.descendants(graph, node)
    else:
        wanted = set(graph.nodes)
    produced = [Path(out.fs_path) for node in graph.nodes for out in node.outs]

    def written_by_a_stage(path: str) -> bool:   # an output, inside one, or a directory holding one
        return any(Path(path).is_relative_to(p) or p.is_relative_to(path) for p in produced)

    ordered = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=lambda s: f"{order.get(s, 0):08d}")
    stages, portable = [], {}
    for node in ordered:
        ups = list(graph.successors(node))
        portable[node] = _portable(node, ups, portable)
        if node not in wanted:
            continue
        upstream = tuple(sorted((_address(d) for d in ups), key=lambda n: order.get(by_name[n], 0)))
        inputs = tuple(sorted({_relative(dep.fs_path, workspace) for dep in node.deps
                               if dep.protocol == "local" and dep.is_in_repo and not written_by_a_stage(dep.fs_path)}))
        cmd = " && ".join(node.cmd) if isinstance(node.cmd, list) else str(node.cmd or "")
        stages.append(Stage(name=_address(node), cmd=cmd, upstream=upstream, portable=portable[node],
                            inputs=inputs, record_file=_record_file(node),
                            outs_cached=all(out.use_cache for out in node.outs)))
    return stages


def data_sources(workspace: str | os.PathLike) -> list[str]:
    """Where new data enters the DVC project at `workspace`: the paths `dvc add` tracks and the dependencies
    outside the project of stages `dvc repro` would re-run (absolute local paths, or URLs), sorted.

    Frozen stages are left out: `dvc repro` never re-runs them, so a change there (a `dvc import-url`, frozen
    by default) reaches the project only through `dvc update`, not through a pipeline run.
    """
    from dvc.dependency import ParamsDependency
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    found: set[str] = set()
    try:
        with Repo(str(Path(workspace).resolve())) as repo:
            for stage in repo.index.stages:
                if stage.frozen:
                    continue
                if not stage.cmd and not stage.deps:          # `dvc add`: its outputs are the data
                    found.update(out.fs_path for out in stage.outs if out.protocol == "local")
                    continue
                for dep in stage.deps:
                    if isinstance(dep, ParamsDependency) or dep.is_in_repo:
                        continue
                    found.add(dep.fs_path if dep.protocol == "local" else str(dep.def_path))
    except DvcException as exc:
        raise PipelineError(f"{workspace}: DVC cannot read this project: {exc}",
                            hint="`dvc status` there shows DVC's own report") from None
    return sorted(found)
