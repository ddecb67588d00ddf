"""The README cannot go stale: its DAG is `dvc dag`'s own output, and its links point at files that exist.

The DAG block sits between `<!-- dag:begin ... -->` and `<!-- dag:end -->`; `make readme-dag`
(scripts/update-readme-dag.sh) rewrites it. Measurements live in docs/results/, not in the README.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import REPO, dvc_env, run_dvc

README = REPO / "README.md"
DAG_BLOCK = re.compile(r"<!-- dag:begin[^\n]*-->\n(.*?)<!-- dag:end -->", re.S)


def readme() -> str:
    return README.read_text(encoding="utf-8")


def dvc_dag_md(cwd: Path = REPO) -> str:
    proc = run_dvc("dag", "--md", cwd=cwd, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def test_readme_dag_is_the_current_dvc_dag():
    block = DAG_BLOCK.search(readme())
    assert block, "README must hold the DAG between <!-- dag:begin --> and <!-- dag:end -->"
    assert block.group(1).strip() == dvc_dag_md(), (
        "README's DAG differs from `dvc dag --md`: run `make readme-dag` (scripts/update-readme-dag.sh)")


def test_readme_dag_names_every_stage_of_the_default_model_set():
    """A sanity check of the generated graph itself: every matrix item of the shipped params is a node."""
    import yaml

    block = DAG_BLOCK.search(readme()).group(1)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    nodes = set(re.findall(r'node\d+\["([^"]+)"\]', block))
    for stage in ("fetch", "ingest", "validate", "convert", "split", "publish"):
        assert stage in nodes
    for model in params["train"]["models"]:
        for seed in params["train"]["seeds"]:
            assert {f"train@{model}-{seed}", f"evaluate@{model}-{seed}"} <= nodes


def test_update_script_is_idempotent_on_a_current_readme(tmp_path):
    """The regeneration script leaves an up-to-date README byte-identical (run on a copy, not the real one)."""
    for name in ("README.md", "dvc.yaml", "params.yaml"):
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_bytes((REPO / ".dvc" / "config").read_bytes())
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "update-readme-dag.sh"
    script.write_bytes((REPO / "scripts" / "update-readme-dag.sh").read_bytes())
    script.chmod(0o755)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    env = dvc_env()
    before = (tmp_path / "README.md").read_bytes()
    # Make the copy's README stale, then regenerate it: the result must be the committed README.
    stale = DAG_BLOCK.sub("<!-- dag:begin (stale) -->\nold graph\n<!-- dag:end -->", before.decode(), count=1)
    (tmp_path / "README.md").write_text(stale, encoding="utf-8")
    proc = subprocess.run([str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    regenerated = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert DAG_BLOCK.search(regenerated).group(1) == DAG_BLOCK.search(before.decode()).group(1)
    proc = subprocess.run([str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "already up to date" in proc.stdout


def test_readme_links_point_at_existing_files():
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        assert (REPO / target).exists(), f"README links to a missing file: {target}"


def test_readme_has_the_user_sections_and_no_measurement_history():
    text = readme()
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings == ["What it is", "Set-up: the two commands", "The DAG", "Code map", "Configuration", "Models",
                        "How to add a model", "Results", "Failure behaviour", "Orchestration",
                        "Running it in production", "Experiments"]
    assert "docs/results/report/comparison.md" in text and "docs/results/HISTORY.md" in text
    # History (commits, before/after timings, older runs' figures) belongs in docs/results/, not here.
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    assert not re.search(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b", prose), "the README cites a commit"
    assert not re.search(r"\d+(\.\d+)? ?% (against|vs)", text), "the README repeats the report's numbers"
    assert "../shared" not in text
