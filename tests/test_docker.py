"""The Dockerfile, read (no Docker daemon here), and what the image relies on, run for real.

- One stage for CPU and GPU (`--build-arg GPU=1`), installing what `make setup GPU=0|1` installs.
- Dependency layers come before the source COPY, and copy no code: editing a .py must not reinstall TensorFlow.
- .git (and the venv, data, results, local DVC settings) stay out of the build context.
- Results live in volumes; the README's `docker run` mounts each of them.
- Without .git, DVC runs with core.no_scm, and a second "container" (a fresh dvc.lock, the volumes kept)
  restores every run-cached stage instead of recomputing it: checked on a real data slice.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import copy_workspace, run_dvc

REPO = Path(__file__).resolve().parents[1]
WORKDIR = "/home/app/fmnist-pipeline"
VOLUMES = ["data", "models", "metrics", "reports", ".dvc/cache"]


def stages() -> dict[str, list[str]]:
    """Dockerfile instructions per stage name (continuation lines joined)."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM \S+ AS (\w+)", line)
        if match:
            current = match.group(1)
            out[current] = [line]
        elif current:
            out[current].append(line)
    return out


def test_dependencies_install_before_the_source_is_copied():
    st = stages()
    assert len(st) == 1, f"one stage for CPU and GPU (--build-arg GPU=1), not {sorted(st)}"
    lines = next(iter(st.values()))
    setup = lines.index("RUN make setup")
    copied_before = []
    for line in lines[:setup]:
        if line.startswith("COPY"):
            copied_before += [p for p in line.split()[1:-1] if not p.startswith("--")]
    # nothing the code changes: lock files, pyproject, the Makefile, the system set-up script
    assert sorted(copied_before) == sorted(["scripts/install-system-deps.sh", "Makefile", "pyproject.toml",
                                            "requirements.lock", "requirements-gpu.lock",
                                            "scripts/install-system-deps.sh"])
    # CPU by default; GPU=1 makes `make setup` install requirements-gpu.lock; set after the shared layers
    arg, env = lines.index("ARG GPU=0"), lines.index("ENV GPU=${GPU}")
    assert max(i for i, line in enumerate(lines) if line.startswith("COPY") and i < setup) < arg < env < setup
    source = next(i for i, line in enumerate(lines) if re.fullmatch(r"COPY (--chown=\S+ )?\. \.", line))
    assert setup < source, "`make setup` must come before the source COPY"
    assert lines[-1] == 'CMD ["make", "run"]'
    volume = next(line for line in lines if line.startswith("VOLUME"))
    assert sorted(re.findall(r'"([^"]+)"', volume)) == sorted(f"{WORKDIR}/{v}" for v in VOLUMES)
    assert any("dvc config --local core.no_scm true" in line for line in lines[source:])
    makefile = (REPO / "Makefile").read_text()
    assert "ifeq ($(GPU),1)" in makefile and "requirements-gpu.lock" in makefile


def test_docker_build_commands_in_the_docs_name_this_dockerfile():
    """No `--target` left over from the two-stage Dockerfile; the GPU image is `--build-arg GPU=1`."""
    for doc in ("Dockerfile", "README.md", "docs/orchestration.md"):
        for command in re.findall(r"docker build[^\n`]*", (REPO / doc).read_text()):
            assert "--target" not in command, f"{doc}: {command}"


def test_build_context_leaves_out_git_venv_and_results():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "data", "models", "metrics", "reports", ".dvc/cache", ".dvc/config.local"} <= ignored
    # what the image and its tests need must NOT be ignored
    assert not {".gitignore", "dvc.yaml", "dvc.lock", "params.yaml", "pipeline", "flows", "tests"} & ignored


def test_readme_docker_run_keeps_every_volume():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- docker-run -->\s*```(?:bash)?\n(.*?)```", readme, re.S)
    assert block, "README must have the docker-run block"
    mounts = [m.rstrip("\"") for m in re.findall(r"-v \S+:(\S+)", block.group(1))]
    assert sorted(mounts) == sorted(f"{WORKDIR}/{v}" for v in VOLUMES)


@pytest.mark.slow
def test_dvc_without_git_reuses_the_kept_volumes(data_workspace, tmp_path):
    """The image has no .git: DVC runs with core.no_scm. A second container starts from the image's dvc.lock with
    the volumes (data, models, metrics, reports, DVC cache) kept: nothing is trained or evaluated again."""
    ws = copy_workspace(data_workspace.path, tmp_path / "ws", **{"train.models": ["gaussian-nb"]})
    shutil.rmtree(ws / ".git")
    assert "not a git repository" in run_dvc("status", cwd=ws).stderr
    assert run_dvc("config", "--local", "core.no_scm", "true", cwd=ws).returncode == 0
    first = run_dvc("repro", cwd=ws)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (ws / "reports/comparison.md").exists() and (ws / "dvc.lock").exists()
    image_lock = {name: entry for name, entry in yaml.safe_load((ws / "dvc.lock").read_text())["stages"].items()
                  if name in ("fetch", "ingest", "validate")}   # the image ships dvc.lock for the data stages
    (ws / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": image_lock}, sort_keys=False))
    for gone in ("plots", "accuracy.json", ".dvc/tmp"):           # not in a volume: gone with the container
        path = ws / gone
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    second = run_dvc("repro", cwd=ws)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out
    assert "Running stage" not in out, out
    assert re.search(r"Stage 'train@gaussian-nb-42' is cached - skipping run", out)
    assert (ws / "accuracy.json").exists() and (ws / "plots/history/gaussian-nb/seed-42.csv").exists()
