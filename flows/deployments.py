"""Deployments served by `python -m flows serve`: a scheduled watcher + an event-triggered pipeline.

- `fmnist-dataset-watcher/scheduled`: the watcher in "event" mode on a cron or interval schedule;
- `fmnist-pipeline/on-dataset-change`: the pipeline, started by a DeploymentEventTrigger on
  `fmnist.dataset.changed` events for this workspace only (concurrency limit 1: DVC cannot share a checkout);
- `fmnist-monitor/scheduled`: the monitoring flow (flows.monitor) on params.yaml `monitor.cron`, where the
  workspace's params.yaml has a `monitor` section (server mode only: the ephemeral ticker runs the watcher only).
Against a Prefect server (PREFECT_API_URL set) the server's scheduler creates the watcher's runs.
In ephemeral mode Prefect has no scheduler (event triggers do work), so this process ticks the watcher
itself on the same schedule. Not about what a run does: see flows.pipeline_flow / flows.watcher.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pipeline.params import load_params, section
from pipeline.serving.monitor import MonitorParams

from flows import DATASET_CHANGED_EVENT
from flows.pipeline_flow import pipeline_flow
from flows.watcher import resource_id, watcher_flow

DEFAULT_CRON = "*/30 * * * *"
log = logging.getLogger("flows.serve")


def schedule_from_params(workspace: Path) -> dict[str, Any]:
    """Optional params.yaml section `orchestrate: {cron: "...", interval_s: N}`; {} when absent."""
    import yaml

    path = workspace / "params.yaml"
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    section = params.get("orchestrate") if isinstance(params, dict) else None
    if not isinstance(section, dict):
        return {}
    out: dict[str, Any] = {}
    if section.get("cron"):
        out["cron"] = str(section["cron"])
    if section.get("interval_s"):
        out["interval"] = float(section["interval_s"])
    return out


def build_deployments(workspace: Path, cron: str | None = None, interval: float | None = None,
                      targets: list[str] | None = None) -> list:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    ws = str(workspace)
    schedule = {"interval": timedelta(seconds=interval)} if interval else {"cron": cron or DEFAULT_CRON}
    watcher = watcher_flow.to_deployment(
        name="scheduled", parameters={"workspace": ws, "mode": "event", "targets": targets},
        description="Fingerprint the data source; emit fmnist.dataset.changed when it changed.", **schedule)
    trigger = DeploymentEventTrigger(
        name="dataset-changed", expect={DATASET_CHANGED_EVENT},
        match={"prefect.resource.id": resource_id(ws)},
        parameters={"workspace": ws, "targets": targets})
    pipeline = pipeline_flow.to_deployment(
        name="on-dataset-change", parameters={"workspace": ws, "targets": targets}, triggers=[trigger],
        concurrency_limit=1, description="The DVC pipeline, one task per stage; runs when the dataset changed.")
    monitor_cron = monitor_schedule(workspace)
    if monitor_cron is None:
        return [watcher, pipeline]
    from flows.monitor import monitor_flow   # imports the monitor's report code: only where it is scheduled

    monitor = monitor_flow.to_deployment(
        name="scheduled", parameters={"workspace": ws}, cron=monitor_cron, concurrency_limit=1,
        description="Compare the service's logged requests with the training data; fails as Alert on drift.")
    return [watcher, pipeline, monitor]


def monitor_schedule(workspace: Path) -> str | None:
    """params.yaml `monitor.cron` (validated), or None when the workspace has no `monitor` section."""
    path = workspace / "params.yaml"
    params = load_params(path) if path.exists() else {}
    return section(MonitorParams, "monitor", params, path=path).cron if "monitor" in params else None


def _next_time(cron: str | None, interval: float | None, after: datetime) -> datetime:
    if interval:
        return after + timedelta(seconds=interval)
    from prefect.server.schemas.schedules import CronSchedule

    dates = asyncio.run(CronSchedule(cron=cron or DEFAULT_CRON).get_dates(n=1, start=after + timedelta(seconds=1)))
    return dates[0]


def _local_ticker(workspace: Path, cron: str | None, interval: float | None, targets, stop: threading.Event) -> None:
    """Ephemeral mode: run the watcher (event mode) on the schedule from this process."""

    while not stop.is_set():
        now = datetime.now(timezone.utc)
        due = _next_time(cron, interval, now)
        log.info("next dataset check at %s", due.isoformat(timespec="seconds"))
        if stop.wait(max(0.0, (due - now).total_seconds())):
            return
        try:
            watcher_flow(workspace=str(workspace), mode="event", targets=targets)
        except Exception as exc:  # keep ticking: one failed check must not stop the service
            log.error("dataset check failed: %s", exc)


def serve(workspace: Path, cron: str | None = None, interval: float | None = None,
          targets: list[str] | None = None, check_now: bool = True) -> None:
    from prefect.settings import PREFECT_API_URL

    workspace = workspace.resolve()
    if not cron and not interval:
        configured = schedule_from_params(workspace)
        cron, interval = configured.get("cron"), configured.get("interval")
    deployments = build_deployments(workspace, cron, interval, targets)
    stop = threading.Event()
    ephemeral = not PREFECT_API_URL.value()
    if ephemeral:
        # The runner executes each flow run in a child process; without an API URL every child would start
        # its own throw-away server and lose its run. Start the local server once and hand its URL down.
        from prefect.server.api.server import SubprocessASGIServer
        from prefect.settings import temporary_settings

        server = SubprocessASGIServer()
        server.start()
        os.environ["PREFECT_API_URL"] = server.api_url
        log.warning("ephemeral mode: local Prefect API at %s for this process only; it has no scheduler, so "
                    "this process runs the dataset check on its schedule itself", server.api_url)
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            _serve(workspace, deployments, cron, interval, targets, check_now, ephemeral=True, stop=stop)
        return
    _serve(workspace, deployments, cron, interval, targets, check_now, ephemeral=False, stop=stop)


def _serve(workspace: Path, deployments: list, cron, interval, targets, check_now: bool, *, ephemeral: bool,
           stop: threading.Event) -> None:
    from prefect import serve as prefect_serve

    if check_now or ephemeral:
        def tick() -> None:
            if check_now:
                try:
                    watcher_flow(workspace=str(workspace), mode="event", targets=targets)
                except Exception as exc:
                    log.error("dataset check failed: %s", exc)
            if ephemeral:
                _local_ticker(workspace, cron, interval, targets, stop)
        # Give the runner a moment to register the triggered deployment before the first event.
        starter = threading.Timer(15.0 if check_now else 0.0, tick)
        starter.daemon = True
        starter.start()
    try:
        # Ephemeral: the server is this process's child and stops with it, so there is nothing to pause.
        prefect_serve(*deployments, limit=1, pause_on_shutdown=not ephemeral)
    finally:
        stop.set()
