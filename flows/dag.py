"""The stage DAG as DVC sees it (dvc.yaml, foreach/matrix expanded): names, upstream stages, run order.

Nothing here declares a stage: the list comes from DVC's own index of the workspace, so a stage added
to dvc.yaml (or a new `matrix` item such as `train@cnn-simple-42`) becomes a Prefect task with no code change.
Not about running stages: see flows.pipeline_flow and flows.parallel.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Stage:
    name: str                      # DVC address, e.g. "split" or "train@cnn-simple-42"
    cmd: str
    upstream: tuple[str, ...] = field(default_factory=tuple)   # direct upstream stages (DVC dependencies)
    # DVC's run cache can record it from a run made elsewhere: no `persist` output and every dependency inside
    # the workspace. Only such stages go to Dask workers (flows.parallel); the others run in the workspace.
    portable: bool = False


def dvc_env(workspace: Path | None = None) -> dict[str, str]:
    """Environment for `dvc`: stage commands call `python`, so this interpreter's bin dir goes first on PATH."""
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def dvc_executable() -> str:
    """The `dvc` next to this interpreter (the venv's), else whatever is on PATH."""
    candidate = Path(sys.executable).parent / "dvc"
    return str(candidate) if candidate.exists() else "dvc"


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
