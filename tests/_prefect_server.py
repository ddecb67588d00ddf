"""The test run's one real `prefect server start` (conftest's session fixture `real_prefect_server`): a free loopback
port, its own PREFECT_HOME, shared by every xdist worker (a file lock and an info file in a directory the run's main
process made), bounded waits, and a clean stop of its process group when the run ends."""

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
    """Poll `check()` until it returns something truthy; fail with `what` at `deadline` or if a process died.

    A request to a server that does not answer in time (a busy machine: the server's SQLite writes queue behind
    the other tests) is "not yet", not a failure; the deadline still bounds the wait and the last such error is
    reported with it."""
    import httpx

    last_error = None
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode} while waiting for {what}")
        try:
            value = check()
        except httpx.TransportError as exc:
            value, last_error = None, exc
        if value:
            return value
        time.sleep(every)   # poll interval, not a synchronisation: the loop waits on check()
    pytest.fail(f"timed out waiting for {what}" + (f" (last request error: {last_error!r})" if last_error else ""))


def healthy(api_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


class ServerProcess:
    """The server's process seen from any test process (it may be another worker's child): poll() is None while
    it runs, as Popen.poll() is."""

    def __init__(self, pid: int):
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            state = "Z"
        if state in ("Z", "X"):     # gone, or a zombie nobody reaped yet
            self.returncode = self.returncode if self.returncode is not None else -1
        return self.returncode


@dataclasses.dataclass(frozen=True)
class RealServer:
    api_url: str
    env: dict[str, str]     # the environment a client process of this server runs with (dvc_env + Prefect's)
    process: ServerProcess
    log: Path


def _client_env(root: Path, api_url: str) -> dict[str, str]:
    from tests.conftest import REPO

    env = dvc_env(PREFECT_HOME=str(root / "prefect-home"), PREFECT_API_URL=api_url,
                  PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_SERVER_UI_ENABLED="false",
                  PREFECT_RUNNER_POLL_FREQUENCY="1", PREFECT_LOGGING_LEVEL="INFO", PYTHONPATH=str(REPO))
    env.pop("PREFECT_PROFILES_PATH", None)
    return env


INFO = "real-prefect-server.json"


def shared_real_prefect_server(shared: Path, startup_s: float = 120) -> RealServer:
    """The test run's one `prefect server start` on 127.0.0.1 (a free port, PREFECT_HOME under `shared`): started
    by the first test process that asks (under a file lock, so xdist workers share it), found by the others in
    `shared`/real-prefect-server.json. stop_shared_real_prefect_server stops it when the whole run ends."""
    import fcntl
    import json

    shared.mkdir(parents=True, exist_ok=True)
    with open(shared / "real-prefect-server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # released when the file closes
        info = shared / INFO
        if info.exists():
            known = json.loads(info.read_text())
            server = RealServer(known["api_url"], _client_env(shared, known["api_url"]), ServerProcess(known["pid"]),
                                Path(known["log"]))
            if server.process.poll() is None and healthy(server.api_url):
                return server
            pytest.fail(f"the run's real Prefect server (pid {known['pid']}) is gone; its log: {known['log']}")
        port = free_port()
        api_url = f"http://127.0.0.1:{port}/api"
        env = _client_env(shared, api_url)
        log = shared / "server.log"
        with open(log, "wb") as out:
            prefect = str(Path(sys.executable).parent / "prefect")   # the venv's, beside this interpreter
            proc = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                                    env=env, cwd=shared, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _STARTED[proc.pid] = proc
        info.write_text(json.dumps({"api_url": api_url, "pid": proc.pid, "log": str(log)}))
        try:
            wait_for("the Prefect server's /health", lambda: healthy(api_url), time.monotonic() + startup_s,
                     {"prefect server": proc})
        except BaseException:
            print("----- prefect server log (tail) -----\n" + log.read_text(errors="replace")[-6000:])
            raise
        return RealServer(api_url, env, ServerProcess(proc.pid), log)


_STARTED: dict[int, subprocess.Popen] = {}   # servers this process started (it reaps them when it stops them)


def stop_shared_real_prefect_server(shared: Path) -> None:
    """Stop the run's real Prefect server, if one was started (the run's last step: conftest's pytest_unconfigure
    in the process that is not an xdist worker)."""
    import json

    info = shared / INFO
    if not info.exists():
        return
    pid = json.loads(info.read_text())["pid"]
    if pid in _STARTED:
        stop_group(_STARTED.pop(pid))
        return
    process = ServerProcess(pid)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)   # poll interval: the server is not this process's child, so it cannot wait() on it
        if process.poll() is not None:
            return


FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def state_type(run: dict) -> str:
    return (run.get("state") or {}).get("type", "")


class ServerApi:
    """The few REST calls the end-to-end tests read a real server with (plain httpx: no Prefect client settings
    in the test process). The timeout is generous: on a loaded 2-core machine the server's SQLite writes queue."""

    def __init__(self, url: str):
        import httpx

        self.http = httpx.Client(base_url=url, timeout=60)

    def deployment_id(self, flow: str, name: str) -> str | None:
        resp = self.http.get(f"/deployments/name/{flow}/{name}")
        return resp.json()["id"] if resp.status_code == 200 else None

    def flow_runs(self, deployment_id: str) -> list[dict]:
        resp = self.http.post("/flow_runs/filter", json={
            "flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC",
            "limit": 200})
        resp.raise_for_status()
        return resp.json()

    def finished_runs(self, deployment_id: str, n: int) -> list[dict] | None:
        """Every run of the deployment once at least `n` of them are in a final state, else None."""
        runs = self.flow_runs(deployment_id)
        return runs if sum(state_type(r) in FINAL_STATES for r in runs) >= n else None

    def artifacts(self, flow_run_id: str) -> dict[str, dict]:
        resp = self.http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
        resp.raise_for_status()
        return {a["key"]: a for a in resp.json()}

    def log_messages(self, flow_run_id: str) -> list[str]:
        resp = self.http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                                    "sort": "TIMESTAMP_ASC", "limit": 200})
        resp.raise_for_status()
        return [entry["message"] for entry in resp.json()]

    def events(self, name: str, resource: str) -> list[dict]:
        from datetime import datetime, timezone

        resp = self.http.post("/events/filter", json={
            "filter": {"event": {"name": [name]}, "resource": {"id": [resource]},
                       "occurred": {"since": "2000-01-01T00:00:00Z", "until": datetime.now(timezone.utc).isoformat()}},
            "limit": 50})
        resp.raise_for_status()
        return resp.json()["events"]
