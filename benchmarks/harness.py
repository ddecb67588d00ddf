"""Measurement plumbing shared by the sections: fresh-process runs with peak RSS, medians, result rows,
progress lines, scratch space and the report."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    """One compared figure. ratio = ours / alternative (for 'lower is better' figures < 1 means we win)."""

    metric: str
    ours: float
    alternative: float
    unit: str
    better: str  # "lower" | "higher"
    ours_label: str = "ours"
    alternative_label: str = "alternative"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.ours / self.alternative if self.alternative else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Section:
    key: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "skipped": self.skipped, "seconds": self.seconds,
                "rows": [r.to_dict() for r in self.rows], "notes": self.notes, "raw": self.raw}


def log(msg: str) -> None:
    """A progress line on stderr (stdout carries the result table)."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="fmnist-bench-"))


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def run_worker(task: str, path: str | Path, timeout: float = 600) -> dict[str, Any]:
    """Run `python -m benchmarks.worker TASK PATH` in a fresh process, reaped with os.wait4.

    Adds `process_wall_s` (spawn to exit, imports included) and `process_peak_rss` (the kernel's
    ru_maxrss of exactly that child, bytes) to the worker's own JSON line.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker", task, str(path)], cwd=REPO, env=env,
                                stdout=out, stderr=err, text=True)
        deadline = started + timeout
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise TimeoutError(f"worker {task} ran over {timeout} s")
            time.sleep(0.01)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"worker {task} failed ({proc.returncode}): {stderr.strip()[-500:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    result["process_peak_rss"] = rusage.ru_maxrss * 1024  # Linux: KiB
    return result


def run_cmd(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 3600) -> tuple[float, int, str]:
    """Run a command; return (wall seconds, exit code, combined output)."""
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return time.perf_counter() - started, proc.returncode, proc.stdout + proc.stderr


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                            "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}
    try:
        with open("/proc/meminfo") as fh:
            info["mem_total_kib"] = int(fh.readline().split()[1])
    except OSError:
        pass
    return info


def _fmt(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 2**20:,.0f} MiB"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "img/s":
        return f"{value:,.0f} img/s"
    return f"{value:g} {unit}"


def render_table(sections: list[Section]) -> str:
    lines = ["| section | metric | ours | alternative | ratio ours/alt | better |",
             "|---|---|---|---|---|---|"]
    for s in sections:
        if s.skipped:
            lines.append(f"| {s.title} | skipped: {s.skipped} | | | | |")
            continue
        for r in s.rows:
            ratio = f"{r.ratio:.3f}" if r.ratio is not None else "n/a"
            lines.append(f"| {s.title} | {r.metric} | {r.ours_label}: {_fmt(r.ours, r.unit)} | "
                         f"{r.alternative_label}: {_fmt(r.alternative, r.unit)} | {ratio} | {r.better} |")
    return "\n".join(lines)


def render_markdown(sections: list[Section], meta: dict[str, Any]) -> str:
    parts = ["# Benchmarks", "",
             f"`python -m benchmarks` — {meta['started']}, median of {meta['repeats']} repeat(s) per figure, "
             f"{meta['environment'].get('cpus')} CPU(s), load average at start "
             f"{', '.join(f'{x:.1f}' for x in meta['environment'].get('load_average_at_start', ()))}. "
             "Ratio = ours / alternative: for times and memory (lower is better) below 1 means ours wins; for "
             "throughput (higher is better) above 1 means ours wins. Raw figures: `benchmarks.json` beside this "
             "file. "
             "On a shared machine, compare only figures from one run.", "",
             render_table(sections), ""]
    for s in sections:
        parts.append(f"## {s.title}")
        parts.append("")
        if s.skipped:
            parts.append(f"Skipped: {s.skipped}")
        for note in s.notes:
            # Table lines and blank lines are markdown of their own; everything else is a bullet.
            parts.append(note.strip() if note.lstrip().startswith("|") or not note.strip() else f"- {note}")
        parts.append("")
    return "\n".join(parts)


def render_console(sections: list[Section]) -> str:
    width = max([len(r.metric) for s in sections for r in s.rows] + [10])
    out = [f"{'section':<26} {'metric':<{width}} {'ours':>14} {'alternative':>14} {'ratio':>7}"]
    for s in sections:
        if s.skipped:
            out.append(f"{s.title[:26]:<26} skipped: {s.skipped}")
            continue
        for r in s.rows:
            ratio = f"{r.ratio:.3f}" if r.ratio is not None else "n/a"
            out.append(f"{s.title[:26]:<26} {r.metric:<{width}} {_fmt(r.ours, r.unit):>14} "
                       f"{_fmt(r.alternative, r.unit):>14} {ratio:>7}")
    return "\n".join(out)
