"""A real `prefect server start` for tests (conftest's session fixture `real_prefect_server`): a free loopback port,
its own PREFECT_HOME, bounded waits, and a clean stop of its process group."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.dvc_calls import dvc_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen | None) -> None:
    """SIGINT, then SIGTERM, then SIGKILL to the process group `proc` leads (it was started in its own session)."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for(what: str, check, deadline: float, procs: dict[str, subprocess.Popen], every: float = 1.0):
    """Poll `check()` until it returns something truthy; fail with `what` at `deadline` or if a process died."""
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode} while waiting for {what}")
        value = check()
        if value:
            return value
        time.sleep(every)   # poll interval, not a synchronisation: the loop waits on check()
    pytest.fail(f"timed out waiting for {what}")


def healthy(api_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@dataclasses.dataclass(frozen=True)
class RealServer:
    api_url: str
    env: dict[str, str]     # the environment a client process of this server runs with (dvc_env + Prefect's)
    process: subprocess.Popen
    log: Path


@contextlib.contextmanager
def real_prefect_server(root: Path, startup_s: float = 120):
    """`prefect server start` on 127.0.0.1 (a free port, PREFECT_HOME under `root`); yields a RealServer."""
    from tests.conftest import REPO

    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = dvc_env(PREFECT_HOME=str(root / "prefect-home"), PREFECT_API_URL=api_url,
                  PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_SERVER_UI_ENABLED="false",
                  PREFECT_RUNNER_POLL_FREQUENCY="1", PREFECT_LOGGING_LEVEL="INFO", PYTHONPATH=str(REPO))
    env.pop("PREFECT_PROFILES_PATH", None)
    log = root / "server.log"
    server = None
    try:
        with open(log, "wb") as out:
            prefect = str(Path(sys.executable).parent / "prefect")   # the venv's, beside this interpreter
            server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-ui"], env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        wait_for("the Prefect server's /health", lambda: healthy(api_url), time.monotonic() + startup_s,
                 {"prefect server": server})
        yield RealServer(api_url, env, server, log)
    except BaseException:
        if log.exists():
            print("----- prefect server log (tail) -----\n" + log.read_text(errors="replace")[-6000:])
        raise
    finally:
        stop_group(server)
