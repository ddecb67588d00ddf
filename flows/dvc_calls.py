"""Every `dvc` subprocess the flows start, and how: the executable, its environment, streaming its output to a
log, timeouts and Ctrl-C. The flows, the benchmarks and the tests all start DVC through this module.

Stage commands call plain `python`, so the interpreter running us must come first on PATH, or DVC would run
them with whatever `python` the shell finds. DVC's analytics are turned off here because this may run offline
(CI=true does not turn them off).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

# Prefect's console log handler wraps lines at the terminal width (80 without a terminal); a flow's log read
# back from a pipe (tests, benchmarks) needs each line whole.
WIDE_COLUMNS = "1000"

_DVC_LOCK = threading.Lock()   # one DVC call at a time in this process, whatever the task runner
RUNNING_GROUPS: set[int] = set()   # process groups of the DVC commands running now (flows.parallel stops them)


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


def _clean(line: str) -> str:
    return line.rstrip("\n").split("\r")[-1].rstrip()   # keep only the final state of progress-bar lines


# DVC's git/push reminders after every stage: noise in a flow's logs.
_DVC_HINTS = ("To track the changes with git", "git add ", "To enable auto staging", "dvc config core.autostage",
              "Use `dvc push`")


def _level(line: str) -> int:
    stripped = line.strip()
    if stripped.startswith(_DVC_HINTS):
        return logging.DEBUG
    if re.match(r"(error \[[\w@.-]+\]:|ERROR:)", stripped):
        return logging.ERROR
    return logging.INFO


def run_dvc(workspace: Path, args: list[str], log=None, timeout_s: float | None = None,
            env: dict[str, str] | None = None, finish_on_interrupt: bool = False,
            exclusive: bool = True) -> tuple[int, list[str], bool]:
    """Run `dvc <args>` in `workspace`, streaming its output lines to `log`: (exit code, lines, timed out?).

    exclusive: one DVC call at a time in this process (a workspace takes one DVC command at a time; a Dask
    worker running stages in separate directories passes False). The command gets its own process group, so that a timeout stops
    DVC and the stage command it started together. On Ctrl-C (KeyboardInterrupt here) the group gets SIGINT
    (DVC stops the stage command and records nothing) and is waited for; with `finish_on_interrupt` (a short
    bookkeeping call such as recording a finished stage) it is left to finish instead, so that no stage is
    half-recorded. Either way the interrupt is re-raised.
    """
    lines: list[str] = []
    timed_out = threading.Event()
    with _DVC_LOCK if exclusive else contextlib.nullcontext():
        proc = subprocess.Popen([dvc_executable(), *args], cwd=workspace, env=env or dvc_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                errors="replace", start_new_session=True)
        RUNNING_GROUPS.add(proc.pid)
        timer = None
        if timeout_s:
            def stop() -> None:
                timed_out.set()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            timer = threading.Timer(timeout_s, stop)
            timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = _clean(raw)
                if not line:
                    continue
                lines.append(line)
                if log is not None:
                    log.log(_level(line), line)
            returncode = proc.wait()
        except KeyboardInterrupt:
            if not finish_on_interrupt:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
            proc.wait()
            raise
        finally:
            RUNNING_GROUPS.discard(proc.pid)
            if timer is not None:
                timer.cancel()
    return returncode, lines, timed_out.is_set()


def repro_status(stage: str, lines: list[str]) -> str:
    """What `dvc repro` did with `stage`: "ran", "restored" (from DVC's run cache) or "cached" (unchanged)."""
    text = "\n".join(lines)
    if re.search(rf"Running stage '{re.escape(stage)}'", text):
        return "ran"
    if re.search(rf"Stage '{re.escape(stage)}' is cached - skipping run", text):
        return "restored"
    if re.search(rf"(Stage )?'{re.escape(stage)}' didn't change, skipping", text):   # a `.dvc` file: no "Stage"
        return "cached"
    return "ran"


def run_dvc_stage(workspace: Path, stage: str, log=None, force: bool = False, timeout_s: float | None = None,
                  pull: bool = False, env: dict[str, str] | None = None, finish_on_interrupt: bool = False,
                  exclusive: bool = True) -> tuple[int, str, list[str]]:
    """Run `dvc repro --single-item <stage>` in `workspace`; stream its output lines to `log`.

    Returns (exit code, "ran" | "restored" | "cached" | "timed out", output lines): "restored" when DVC's run
    cache held an earlier run with the same inputs and checked its outputs out instead of running the command.
    pull: `--pull`, i.e. also look for that earlier run (and its outputs) on the default DVC remote.
    """
    args = ["repro", "--single-item", stage] + (["--force"] if force else []) + (["--pull"] if pull else [])
    returncode, lines, timed_out = run_dvc(workspace, args, log=log, timeout_s=timeout_s, env=env,
                                           finish_on_interrupt=finish_on_interrupt, exclusive=exclusive)
    if timed_out:
        return returncode, "timed out", lines
    return returncode, repro_status(stage, lines), lines


def stale_stages(workspace: Path) -> set[str] | None:
    """Stages `dvc status` reports as changed (deps, params, code or outputs differ from dvc.lock).

    None when DVC cannot tell (non-zero exit, unparsable output): every stage then goes through
    `dvc repro`, which is always correct, only slower.
    """
    with _DVC_LOCK:
        proc = subprocess.run([dvc_executable(), "status", "--json"], cwd=workspace, env=dvc_env(),
                              capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        return None
    try:
        report = json.loads(proc.stdout.strip() or "{}")
    except json.JSONDecodeError:
        return None
    # Keys are DVC addresses, as flows.dag names stages: `name`, `sub/dvc.yaml:name`, `data.dvc`.
    return {name.removeprefix("dvc.yaml:") for name in report} if isinstance(report, dict) else None
