"""Notifications: `notify(workspace, event, subject, body)` sends through the Prefect notification block named in
params.yaml `notify.block` ("<block-type-slug>/<block-name>", as prefect.blocks.core.Block.load takes it); null,
or no `notify` section (another DVC project), logs the message only. A failing notification is a warning in the
log, never a failed flow.

Events and where they are sent from (docs/production.md, "Notifications"):
    gate-rejected   flows.pipeline_flow's failure hook, when the data gate rejected the data (the failed checks)
    run-failed      flows.pipeline_flow's failure / crash hooks, for any other failure
    promotion       flows.pipeline_flow, after the promotion step (old -> new champion, the evidence)
    monitor-alert   flows.monitor, when the served inputs crossed a limit (what drifted)
Hooks + a block rather than Prefect automations: the messages carry evidence only the flow process holds (the gate's
failed checks apart from other failures, the promotion record, the monitor's findings), and one params.yaml key
configures every event. docs/production.md says where an automation still helps (a killed flow process).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.params import load_params, section

EVENTS = ("gate-rejected", "run-failed", "promotion", "monitor-alert")
SECTION = "notify"
PREFIX = "fmnist-pipeline"


@dataclass(frozen=True)
class NotifyParams:
    """params.yaml `notify` (every key required: params.yaml is the one home of the value)."""
    block: str | None   # "<block-type-slug>/<block-name>", or None: log only

    def __post_init__(self):
        if self.block is not None and (self.block.count("/") != 1 or not all(self.block.split("/"))):
            raise PipelineError(f"params.yaml: notify.block must be \"<block-type-slug>/<block-name>\" or null, "
                                f"got {self.block!r}", hint="e.g. custom-webhook/fmnist-alerts (prefect block ls)")


def _logger():
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:   # outside a flow or task run (e.g. called from a script)
        return logging.getLogger("flows.notify")


def notify_block(workspace: str | Path) -> str | None:
    """params.yaml `notify.block` of the workspace; None without a params.yaml or a `notify` section."""
    path = Path(workspace) / "params.yaml"
    params = load_params(path) if path.exists() else {}
    return section(NotifyParams, SECTION, params, path=path).block if SECTION in params else None


def notify(workspace: str | Path, event: str, subject: str, body: str) -> bool:
    """Send (subject, body) about `event` through the configured block; True when sent. Never raises."""
    log = _logger()
    try:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r} (known: {', '.join(EVENTS)})")
        block = notify_block(workspace)
    except Exception as exc:   # a notification must never fail the flow
        log.warning("notification %r not sent: %s", event, exc)
        return False
    subject = f"[{event}] {subject}"
    if block is None:
        log.info("notification (notify.block is null: log only): %s\n%s", subject, body)
        return False
    try:
        import prefect.blocks.notifications  # noqa: F401  (registers the notification block types for load)
        from prefect.blocks.core import Block

        Block.load(block).notify(body=body, subject=subject)
    except Exception as exc:   # a notification must never fail the flow
        log.warning("notification %r through block %s failed: %s: %s", event, block, type(exc).__name__, exc)
        return False
    log.info("notification %r sent through block %s: %s", event, block, subject)
    return True


# ------------------------------------------------------------------------------ messages (pure)
def gate_rejected_message(stage: str, reason: str, workspace: str | Path) -> tuple[str, str]:
    return (f"{PREFIX}: the data gate rejected the data (stage {stage})",
            f"Workspace: {workspace}\nThe data-quality gate (stage {stage}) rejected the data; nothing downstream "
            f"ran. Failed checks:\n\n{reason}\n")


def run_failed_message(flow_run_name: str, state_name: str, message: str | None,
                       workspace: str | Path) -> tuple[str, str]:
    return (f"{PREFIX}: run {flow_run_name} {state_name.lower()}",
            f"Workspace: {workspace}\nFlow run {flow_run_name} ended in state {state_name}:\n\n"
            f"{message or '(no message)'}\n")


def monitor_alert_message(report: dict[str, Any], workspace: str | Path) -> tuple[str, str]:
    from pipeline.serving.monitor import alert_summary   # monitor pulls in scipy: only for this message

    win = report["window"]
    return (f"{PREFIX}: served inputs drifted ({len(report['alerts'])} limit(s) crossed)",
            f"Workspace: {workspace}\nWindow {win['since']} to {win['until']}, {report['requests']} requests. "
            f"What drifted:\n{alert_summary(report)}\n\nReport: monitoring/report.md\n")
