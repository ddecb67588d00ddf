"""The process environment Prefect (and DVC, TensorFlow in stage subprocesses) read: the one home of those defaults.

configure_environment() only fills in variables the user has not set (os.environ.setdefault), so a user's own
setting always wins. It must run before prefect is imported; importing `flows` runs it (flows/__init__.py).
"""

from __future__ import annotations

import os


def configure_environment() -> None:
    # This machine may be offline (no telemetry), and the ephemeral API server can take longer to start on a small
    # machine than Prefect's default limit allows.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
