"""The monitoring flow: `python -m pipeline monitor --json` in the workspace, its report as the `fmnist-monitoring`
markdown artifact, a `monitor-alert` notification and a Failed state named "Alert" when a limit was crossed.

A subprocess, like every stage and the promotion step: the workspace's own code and params.yaml decide, and the
flow process stays free of scipy/matplotlib. Exit 3 of the command is the alert (its report is on stdout);
any other non-zero exit is an error (missing log, no reference profile), reported with the command's message.
Scheduled by flows.deployments (`fmnist-monitor/scheduled`, params.yaml `monitor.cron`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from pipeline.errors import PipelineError, ValidationFailed
from pipeline.serving.monitor import REPORT_DIR

from flows.dvc_calls import dvc_env
from flows.notify import monitor_alert_message, notify

ARTIFACT_KEY = "fmnist-monitoring"
ALERT_STATE = "Alert"
ALERT_EXIT_CODE = ValidationFailed("").exit_code


def run_monitor_command(ws: Path, window_hours: float | None = None, since: str | None = None,
                        until: str | None = None) -> tuple[int, dict[str, Any] | None, str]:
    """(exit code, report or None, stderr) of `python -m pipeline monitor --json` in `ws`."""
    cmd = [sys.executable, "-m", "pipeline", "monitor", "--json"]
    for flag, value in (("--window-hours", window_hours), ("--since", since), ("--until", until)):
        if value is not None:
            cmd += [flag, str(value)]
    proc = subprocess.run(cmd, cwd=ws, env=dvc_env(), capture_output=True, text=True)
    report = json.loads(proc.stdout) if proc.returncode in (0, ALERT_EXIT_CODE) and proc.stdout.strip() else None
    return proc.returncode, report, proc.stderr.strip()


@flow(name="fmnist-monitor", log_prints=True)
def monitor_flow(workspace: str | None = None, window_hours: float | None = None, since: str | None = None,
                 until: str | None = None):
    """Monitor the served requests of a window (default: params.yaml monitor.window_hours before now)."""
    log = get_run_logger()
    ws = Path(workspace or os.getcwd()).resolve()
    code, report, stderr = run_monitor_command(ws, window_hours, since, until)
    if report is None:
        message = stderr or f"python -m pipeline monitor exited {code}"
        log.error("%s", message)
        return Failed(message=message, data=PipelineError(message, exit_code=code or 1))
    markdown = (ws / REPORT_DIR / "report.md").read_text(encoding="utf-8")
    create_markdown_artifact(markdown=markdown, key=ARTIFACT_KEY,
                             description=f"Served inputs vs training data: {report['verdict']}")
    log.info("monitor: %s (%s)", report["verdict"], report["why"])
    if code == ALERT_EXIT_CODE:
        notify(ws, "monitor-alert", *monitor_alert_message(report, ws))
        message = "served inputs drifted:\n" + "\n".join(a["message"] for a in report["alerts"])
        log.error("%s", message)
        return Failed(name=ALERT_STATE, message=message, data=report)
    return report
