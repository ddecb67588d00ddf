"""How this project starts `dvc` (and `python -m flows`) in a subprocess: the one home of the executable lookup
and the environment, for the flows, the benchmarks and the tests.

Stage commands call plain `python`, so the interpreter running us must come first on PATH, or DVC would run
them with whatever `python` the shell finds. DVC's analytics are turned off here because this may run offline
(CI=true does not turn them off).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

# Prefect's console log handler wraps lines at the terminal width (80 without a terminal); a flow's log read
# back from a pipe (tests, benchmarks) needs each line whole.
WIDE_COLUMNS = "1000"


def dvc_executable() -> str:
    """The `dvc` next to this interpreter (the venv's), else the one on PATH."""
    candidate = Path(sys.executable).parent / "dvc"
    return str(candidate) if candidate.exists() else (shutil.which("dvc") or "dvc")


def dvc_env(*, pythonpath: str | os.PathLike | None = None, **extra: str) -> dict[str, str]:
    """This process's environment for a `dvc` subprocess: this interpreter's bin dir first on PATH, DVC
    analytics off, TensorFlow's C++ logging quiet unless set.

    pythonpath: a source tree that stage commands must import `pipeline` from (prepended to PYTHONPATH), for a
    workspace that is not the repository. extra: further variables, set last.
    """
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def flow_env(**extra: str) -> dict[str, str]:
    """dvc_env for a `python -m flows` subprocess whose log is read back line by line (WIDE_COLUMNS)."""
    return dvc_env(**{"COLUMNS": WIDE_COLUMNS, **extra})
