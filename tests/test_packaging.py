"""The README's two commands, the Makefile, .ci/run and the Dockerfile must agree (Docker can't run here)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _apt_packages(text: str) -> set[str]:
    pkgs: set[str] = set()
    # Only real install commands (a line that runs apt-get install), not messages that mention it.
    for match in re.finditer(r"^(?!.*echo).*apt-get install ([^\n&]*)", text, re.M):
        pkgs |= {tok for tok in match.group(1).split() if re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", tok)}
    return pkgs


def test_readme_names_exactly_the_two_setup_commands():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- setup-commands -->\s*```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert block, "README must have the setup-commands block"
    commands = [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]
    assert commands == ["make run", "make test"]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def test_dockerfile_installs_what_make_setup_installs():
    docker = (REPO / "Dockerfile").read_text()
    # The same Debian packages as `make setup`: the image runs the set-up script itself, as root, before the
    # non-root USER (Docker adds only git/make, which a clone needs).
    assert re.search(r"^COPY scripts/install-system-deps\.sh (\S+)$", docker, re.M)
    script = re.search(r"^COPY scripts/install-system-deps\.sh (\S+)$", docker, re.M).group(1)
    assert re.search(rf"^ && {re.escape(script)} \\$", docker, re.M)
    assert docker.index(script + " \\") < docker.index("\nUSER ")
    assert _apt_packages(docker) <= {"git", "make"}
    # Python deps come from the same Makefile target the README's commands depend on.
    assert re.search(r"^RUN make setup$", docker, re.M)
    assert 'CMD ["make", "run"]' in docker
    assert re.search(r"^USER (?!root)\w+", docker, re.M), "the image must run as a non-root user"
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^run: setup$", makefile, re.M) and re.search(r"^test: setup test-deps$", makefile, re.M)
    assert "-c requirements.lock" in makefile


def test_dependencies_are_pinned_and_locked():
    pyproject = (REPO / "pyproject.toml").read_text()
    lock = {line.split("==")[0].lower().replace("_", "-"): line.split("==")[1].strip()
            for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line}
    for dep in re.findall(r'^\s+"([A-Za-z0-9_.\-]+)==([^"]+)"', pyproject, re.M):
        name, version = dep[0].lower().replace("_", "-"), dep[1]
        assert lock.get(name) == version, f"{name}=={version} in pyproject but {lock.get(name)} in requirements.lock"


def _make_dry_run(target: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    proc = subprocess.run(["make", "-n", target, "VENV=venv-dry-run", "GPU=0"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_make_run_installs_only_what_the_pipeline_needs_and_make_test_adds_the_browser():
    run, test, check = (_make_dry_run(t) for t in ("run", "test", "check"))
    for recipe in (run, test, check):
        assert re.search(r"^PYTHON=\S+ scripts/install-system-deps\.sh$", recipe, re.M), recipe
    assert "install-system-deps.sh --test" not in run
    assert "install-system-deps.sh --test" in test and "install-system-deps.sh --test" in check
    assert re.search(r'pytest -q -n 2 -m "not slow"$', check, re.M) and re.search(r"pytest -q( -n \d+)?( --durations=\d+)?$", test, re.M)
    script = (REPO / "scripts/install-system-deps.sh").read_text()
    assert "python3.11-venv" in script and "chromium" in script
