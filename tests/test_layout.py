"""The code layout's rules, checked against the code itself (static imports, function-level ones included):

- every stage in dvc.yaml (every matrix item) declares, in its `deps`, every project module its command can
  import, so `dvc repro` never skips a stage whose code changed (and an edit to a shared helper shows in
  `dvc status` for exactly the stages that import it);
- no import circles; shared helpers never import stage code; stage packages import each other only to read
  another stage's files; a function-level import of project code says why it is not at the top.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import shlex
from pathlib import Path

import networkx as nx
import pytest

from tests.conftest import REPO, copy_workspace, run_dvc

PACKAGES = ("pipeline", "flows")
# The stage packages; everything else in pipeline/ is a shared helper (pipeline/cli.py and __main__.py: the entry).
STAGE_PACKAGES = ("pipeline.data", "pipeline.training", "pipeline.publish", "pipeline.serving")
ENTRY = ("pipeline.__main__", "pipeline.cli")
# What one stage package may take from another: the readers of a stage's own files.
FILE_READERS = {
    "pipeline.data.convert": {"load_test_set", "table_to_arrays"},
    "pipeline.data.ingest": {"read_kaggle_csv"},
    "pipeline.data.validate.report": {"near_duplicates_of"},
    # the gate's reference profile and its drift statistics on it: what monitor compares served images with
    "pipeline.data.content": {"drift", "load_profile", "psi"},
}


def _module_files(root: Path) -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            files[name.removesuffix(".__init__")] = path
    return files


@functools.lru_cache(maxsize=None)
def import_graph(root: Path = REPO) -> tuple[dict[str, Path], dict[str, list[tuple[str, set[str], bool, str]]]]:
    """module -> [(imported project module, names taken, function-level?, source line)] for every import."""
    files = _module_files(root)
    graph: dict[str, list] = {}
    for name, path in files.items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        tree = ast.parse(source)
        nested = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for node in ast.walk(fn) if node is not fn}
        edges = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [(alias.name, set()) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from pipeline.models import registry` imports the submodule registry
                targets = [(f"{node.module}.{a.name}", set()) if f"{node.module}.{a.name}" in files
                           else (node.module, {a.name}) for a in node.names]
            else:
                continue
            text = "\n".join(lines[node.lineno - 1:node.end_lineno])
            for module, names in targets:
                while module and module not in files:
                    module = module.rpartition(".")[0]
                if module and module != name:
                    edges.append((module, names, id(node) in nested, text))
        graph[name] = edges
    return files, graph


def _packages_of(module: str) -> list[str]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(modules: list[str], root: Path = REPO) -> set[str]:
    """Every project module that importing `modules` can import (function-level imports included)."""
    files, graph = import_graph(root)
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in seen or module not in files:
            continue
        seen.add(module)
        todo += _packages_of(module) + [target for target, *_ in graph[module]]
    return seen


def stage_commands(root: Path = REPO, empty_matrices: bool = True) -> dict[str, tuple[str, list[str]]]:
    """Every stage of dvc.yaml, matrix expanded: address -> (cmd, deps), as DVC itself reads them (and, with
    `empty_matrices`, the stage templates whose matrix has no items, as written)."""
    from dvc.repo import Repo

    from pipeline import dvc_yaml

    with Repo(str(root)) as repo:
        stages = {stage.name: (stage.cmd if isinstance(stage.cmd, str) else " ".join(stage.cmd),
                               [dep.def_path for dep in stage.deps])
                  for stage in repo.index.stages}
    # A matrix over an empty list (export.models by default) has no items in DVC's index; its code deps, which
    # never vary by item, are checked as written.
    for name, definition in dvc_yaml.stages(root / "dvc.yaml").items() if empty_matrices else ():
        if not any(address == name or address.startswith(name + "@") for address in stages):
            stages[name] = (dvc_yaml.command(root / "dvc.yaml", name), list(definition.get("deps") or []))
    return stages


def stage_code(cmd: str, root: Path = REPO) -> set[str]:
    """The project modules `python -m pipeline <stage> ...` can import."""
    words = shlex.split(cmd)
    assert words[:3] == ["python", "-m", "pipeline"], f"not a pipeline command: {cmd}"
    return closure([*ENTRY, cli_stages(root)[words[3]]], root)


def cli_stages(root: Path = REPO) -> dict[str, str]:
    """stage -> module, from `root`'s pipeline/cli.py STAGES (read, not imported: `root` may be another checkout)."""
    tree = ast.parse((root / "pipeline" / "cli.py").read_text(encoding="utf-8"))
    table = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and any(getattr(t, "id", None) == "STAGES" for t in node.targets))
    return {stage: module for stage, (module, _) in ast.literal_eval(table).items()}


def code_dep_gaps(root: Path = REPO) -> dict[str, dict[str, list[str]]]:
    """stage -> {"undeclared": closure files no dep covers, "unused": code deps holding no closure file}."""
    files, _ = import_graph(root)
    gaps = {}
    for address, (cmd, deps) in stage_commands(root).items():
        code = {files[m].relative_to(root).as_posix() for m in stage_code(cmd, root)}
        code_deps = [d.rstrip("/") for d in deps if d.split("/")[0] in PACKAGES]
        covered = lambda path, dep: path == dep or path.startswith(dep + "/")   # noqa: E731
        undeclared = sorted(p for p in code if not any(covered(p, d) for d in code_deps))
        # a data file beside the code (the gate's reference profile) is not code
        unused = sorted(d for d in code_deps if (d.endswith(".py") or (root / d).is_dir())
                        and not any(covered(p, d) for p in code))
        if undeclared or unused:
            gaps[address] = {"undeclared": undeclared, "unused": unused}
    return gaps


# ------------------------------------------------------------------------------------------------ deps
def test_every_stage_declares_all_the_code_it_can_import_and_no_code_it_cannot():
    gaps = code_dep_gaps()
    assert not gaps, "dvc.yaml deps do not match the code the stage commands import:\n" + json.dumps(gaps, indent=1)


def test_the_check_sees_function_level_imports_and_package_inits():
    code = stage_code("python -m pipeline train --model x")
    # registry imports pipeline.models.cnn inside a function; pipeline/__init__ runs pipeline/runtime.py
    assert {"pipeline.models.cnn", "pipeline.models.baselines", "pipeline.runtime", "pipeline.metrics",
            "pipeline.runs", "pipeline.training"} <= code
    assert not any(m.startswith(("pipeline.publish", "pipeline.serving", "flows")) for m in code)


@pytest.mark.parametrize("helper", ["pipeline/metrics.py", "pipeline/schema.py"])
def test_editing_a_helper_makes_dvc_status_report_exactly_the_stages_that_import_it(models_workspace, tmp_path,
                                                                                    helper):
    ws = copy_workspace(models_workspace.path, tmp_path / "ws")
    with (ws / helper).open("a", encoding="utf-8") as f:
        f.write("\n# an edit\n")
    proc = run_dvc("status", "--json", cwd=ws)
    assert proc.returncode == 0, proc.stderr
    changed = {address for address, changes in json.loads(proc.stdout).items()
               if any("changed deps" in c and helper in c["changed deps"] for c in changes if isinstance(c, dict))}
    module = helper.removesuffix(".py").replace("/", ".")
    importers = {address for address, (cmd, _) in stage_commands(ws, empty_matrices=False).items()
                 if module in stage_code(cmd, ws)}
    assert importers, f"no stage imports {helper}?"
    assert changed == importers


# ------------------------------------------------------------------------------------------------ imports
def test_no_import_circles():
    _, graph = import_graph()
    digraph = nx.DiGraph([(m, t) for m, edges in graph.items() for t, *_ in edges])
    # a package's __init__ re-exporting its own submodules is not a circle of code
    digraph.remove_edges_from([(a, b) for a, b in list(digraph.edges) if b.startswith(a + ".")])
    assert list(nx.simple_cycles(digraph)) == []


def _stage_package(module: str) -> str | None:
    return next((p for p in STAGE_PACKAGES if module == p or module.startswith(p + ".")), None)


def test_shared_helpers_never_import_stage_code():
    _, graph = import_graph()
    helpers = [m for m in graph if m.startswith("pipeline") and _stage_package(m) is None and m not in ENTRY]
    bad = {m: sorted({t for t, *_ in graph[m] if _stage_package(t)}) for m in helpers}
    assert {m: t for m, t in bad.items() if t} == {}


def test_stage_packages_import_each_other_only_to_read_a_stage_file():
    _, graph = import_graph()
    bad = []
    for module, edges in graph.items():
        own = _stage_package(module)
        for target, names, _, text in edges:
            other = _stage_package(target)
            if own and other and other != own and not (names and names <= FILE_READERS.get(target, set())):
                bad.append(f"{module}: {text.strip()}")
    assert bad == []


def test_function_level_imports_of_project_code_say_why():
    _, graph = import_graph()
    silent = [f"{m}: {text.strip()}" for m, edges in graph.items() for _, _, nested, text in edges
              if nested and "#" not in text]
    assert silent == []


def test_docstrings_are_short():
    """Design history lives in docs/, not at the top of a module."""
    files, _ = import_graph()
    long = {}
    for name, path in files.items():
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if len(doc.splitlines()) > 25:
            long[name] = len(doc.splitlines())
    assert long == {}


def test_readme_code_map_names_every_package():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = re.search(r"## Code map\n(.*?)\n## ", text, re.S)
    assert section, "README has no '## Code map' section"
    packages = sorted({p.parent.relative_to(REPO).as_posix() for pkg in PACKAGES
                       for p in (REPO / pkg).rglob("__init__.py")})
    missing = [p for p in packages if f"{p}/" not in section.group(1)]
    assert missing == []


def test_no_flows_module_shadows_a_library():
    """Prefect runs a served deployment's flow from its file (flows/pipeline_flow.py), with flows/ first on
    sys.path: a flows/dvc.py there made `import dvc.exceptions` fail inside DVC's own code."""
    import importlib.metadata
    import sys

    top_level = set(importlib.metadata.packages_distributions()) | set(sys.stdlib_module_names)
    files, _ = import_graph()
    shadows = sorted(name for name, path in files.items() if name.startswith("flows.") and path.stem in top_level)
    assert shadows == []
