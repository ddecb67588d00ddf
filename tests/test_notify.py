"""Notifications (flows/notify.py) through a real Prefect notification block, against the session's real
`prefect server start` (conftest.real_prefect_server) and a webhook receiver on loopback (tests/_webhook.py).

Each event comes from the real place it is wired: the pipeline flow's failure hook (the data gate rejecting the
shared workspace's real data under a stricter class-share tolerance; a bad `orchestration` setting) and the monitoring flow on
inverted official test images. The promotion message (old -> new, with the evidence) is checked where the loop
produces it, in tests/test_loop.py.
"""

from __future__ import annotations

import contextlib
import logging
import uuid

import pytest
from _webhook import WebhookReceiver
from conftest import copy_workspace, set_params

from flows.notify import notify
from pipeline.serving.request_log import LOG_DIR, RequestLog

WAIT_S = 60      # a bound on each wait for a post (so a lost message fails), not a speed requirement


@contextlib.contextmanager
def on_server(api_url: str):
    """Prefect calls in this block (flows, blocks) go to the real server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


@pytest.fixture(scope="module")
def webhook(real_prefect_server):
    """(receiver, block) : a CustomWebhookNotificationBlock saved on the real server, posting to the receiver."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    name = f"fmnist-alerts-{uuid.uuid4().hex[:8]}"
    with WebhookReceiver() as hook, on_server(real_prefect_server.api_url):
        CustomWebhookNotificationBlock(name="fmnist tests", url=hook.url,
                                       json_data={"subject": "{{subject}}", "body": "{{body}}"}).save(name)
        yield hook, f"{CustomWebhookNotificationBlock.get_block_type_slug()}/{name}"


@pytest.fixture
def hook(webhook, real_prefect_server):
    receiver, _ = webhook
    receiver.clear()
    with on_server(real_prefect_server.api_url):
        yield receiver


def workspace(template, tmp_path, block, **changes):
    return copy_workspace(template, tmp_path / "ws", **{"notify.block": block, **changes})


def test_gate_rejection_sends_the_failed_checks(data_workspace, webhook, hook, tmp_path):
    from flows.pipeline_flow import pipeline_flow

    ws = workspace(data_workspace.path, tmp_path, webhook[1], **{"validate.class_share_tolerance": 0.0001})
    state = pipeline_flow(workspace=str(ws), targets=["validate"], retry_delay_s=0, return_state=True)
    assert state.is_failed()
    (post,) = hook.wait(1, WAIT_S)
    assert post["subject"].startswith("[gate-rejected]") and "validate" in post["subject"]
    assert "class share(s) outside" in post["body"] and str(ws) in post["body"]   # the failed check


def test_a_failed_run_sends_run_failed_with_the_error(data_workspace, webhook, hook, tmp_path):
    from flows.pipeline_flow import pipeline_flow

    ws = workspace(data_workspace.path, tmp_path, webhook[1], **{"orchestration.stage_timeout_s": {"train": 1}})
    state = pipeline_flow(workspace=str(ws), return_state=True)
    assert state.is_failed()
    (post,) = hook.wait(1, WAIT_S)
    assert post["subject"].startswith("[run-failed]")
    assert "orchestration.stage_timeout_s" in post["body"], post["body"]


def test_monitor_alert_names_what_drifted(models_workspace, fmnist, webhook, hook, tmp_path):
    from flows.monitor import monitor_flow

    ws = workspace(models_workspace.path, tmp_path, webhook[1])
    x, y = fmnist["test"]
    log = RequestLog(ws / LOG_DIR, max_rows=10_000, flush_rows=1000)
    for image, label in zip(255 - x[:1000], y[:1000]):       # inverted official test images
        log.append(image, "gaussian-nb", None, int(label), 0.9)
    log.close()
    state = monitor_flow(workspace=str(ws), return_state=True)
    assert state.is_failed() and state.name == "Alert"
    (post,) = hook.wait(1, WAIT_S)
    assert post["subject"].startswith("[monitor-alert]")
    assert "pixel_js" in post["body"] and "predicted class" in post["body"] and "> limit" in post["body"]


def test_no_block_logs_only_and_a_broken_block_is_a_warning(tmp_path, webhook, hook, caplog):
    (tmp_path / "params.yaml").write_text("notify:\n  block: null\n")
    with caplog.at_level(logging.INFO, logger="flows.notify"):
        assert notify(tmp_path, "run-failed", "a subject", "a body") is False
    assert any("log only" in r.getMessage() and "a body" in r.getMessage() for r in caplog.records)

    set_params(tmp_path, **{"notify.block": "custom-webhook/no-such-block"})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flows.notify"):
        assert notify(tmp_path, "run-failed", "a subject", "a body") is False   # never raises
    assert any("no-such-block" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert hook.posts == [], "notify returns after sending: nothing was sent by the calls above"

    set_params(tmp_path, **{"notify.block": webhook[1]})
    assert notify(tmp_path, "run-failed", "sent", "now") is True
    assert hook.wait(1, WAIT_S) == [{"subject": "[run-failed] sent", "body": "now"}]
