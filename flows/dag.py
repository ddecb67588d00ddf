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
    name: str                      # DVC address, e.g. "split" or "train@cnn-simple-42"
    cmd: str
    upstream: tuple[str, ...] = field(default_factory=tuple)   # direct upstream stages (DVC dependencies)
    # DVC's run cache can record it from a run made elsewhere: no `persist` output and every dependency inside
    # the workspace. Only such stages go to Dask workers (flows.parallel); the others run in the workspace.
    portable: bool = False


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
    """`dvc repro` address relative to the workspace root (DVC's own `addressing` is relative to the cwd)."""
    path = getattr(stage, "path_in_repo", "dvc.yaml")
    return stage.name if path == "dvc.yaml" else f"{path}:{stage.name}"


def load_stages(workspace: str | os.PathLike, targets: list[str] | None = None) -> list[Stage]:
    """All runnable stages of `workspace` in topological order (ties: dvc.yaml order).

    With `targets`, only those stages and everything upstream of them (what `dvc repro <targets>` would
    consider). Raises PipelineError for an unknown target or a workspace without dvc.yaml.
    """
    import networkx as nx
    from dvc.repo import Repo

    workspace = Path(workspace).resolve()
    if not (workspace / "dvc.yaml").exists():
        raise PipelineError(f"{workspace}: no dvc.yaml here", hint="pass --workspace pointing at the repository root")
    with Repo(str(workspace)) as repo:
        graph = repo.index.graph      # edges: stage -> the stage it depends on
        order = {stage: i for i, stage in enumerate(repo.index.stages)}
        runnable = {s for s in graph.nodes if getattr(s, "cmd", None) and not getattr(s, "frozen", False)}
        by_name = {_address(s): s for s in graph.nodes}
        if targets:
            unknown = [t for t in targets if t not in by_name]
            if unknown:
                raise PipelineError(
                    f"unknown stage(s): {', '.join(unknown)}",
                    hint=f"stages in dvc.yaml: {', '.join(sorted(by_name))}",
                )
            wanted = set()
            for t in targets:
                wanted |= {by_name[t]} | nx.descendants(graph, by_name[t])
        else:
            wanted = set(graph.nodes)
        ordered = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=lambda s: f"{order.get(s, 0):08d}")
        stages = []
        for node in ordered:
            if node not in wanted or node not in runnable:
                continue
            upstream = tuple(sorted((_address(d) for d in graph.successors(node) if d in runnable),
                                    key=lambda n: order.get(by_name[n], 0)))
            portable = (not any(out.persist for out in node.outs)
                        and all(dep.is_in_repo for dep in node.deps))
            stages.append(Stage(name=_address(node), cmd=str(node.cmd), upstream=upstream, portable=portable))
    return stages
