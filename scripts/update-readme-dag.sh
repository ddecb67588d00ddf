#!/usr/bin/env bash
# Regenerate the DAG in README.md, between its `<!-- dag:begin ... -->` and `<!-- dag:end -->` markers, from
# `dvc dag --md` (a Mermaid flowchart of dvc.yaml as expanded with the current params.yaml).
# Run it after changing dvc.yaml or params.yaml `train.models`/`train.seeds`; `make readme-dag` calls it.
# tests/test_readme.py fails while the README's copy differs from what this script would write.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_BIN="$PWD/${VENV:-.venv}/bin"
if [ -x "$VENV_BIN/dvc" ]; then export PATH="$VENV_BIN:$PATH"; fi
export DVC_NO_ANALYTICS=1
DAG="$(dvc dag --md)"
export DAG
python3 - <<'PY'
import os
import re
from pathlib import Path

readme = Path("README.md")
text = readme.read_text(encoding="utf-8")
pattern = re.compile(r"(<!-- dag:begin[^\n]*-->\n)(.*?)(<!-- dag:end -->)", re.S)
if not pattern.search(text):
    raise SystemExit("README.md: no <!-- dag:begin --> ... <!-- dag:end --> markers")
new = pattern.sub(lambda m: m.group(1) + os.environ["DAG"].strip() + "\n" + m.group(3), text, count=1)
if new != text:
    readme.write_text(new, encoding="utf-8")
    print("README.md: DAG updated")
else:
    print("README.md: DAG already up to date")
PY
