"""Section 9: serving cnn-ours, ONNX Runtime vs Keras: batch-1 latency of the two predictors, then
`python -m pipeline serve` (the champion, ONNX-backed vs `--backend keras`) under a bounded loopback load of
1, 8 and 32 concurrent clients (asyncio + httpx, PNG uploads of official test images): requests/s, p50, p99.

The client runs on the same machine as the service: on 2 cores it competes with it for CPU, so the figures are
a lower bound of what the service does alone. The champion is registered in a scratch registry (the workspace's
own registry/ and monitoring/ are not touched); cnn-ours is exported to ONNX there when the workspace has no
export of this very model file.
"""

from __future__ import annotations

import asyncio
import io as _stdio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.data import test_arrays
from benchmarks.harness import Row, Section, log, median

MODEL = "cnn-ours"
CLIENTS = (1, 8, 32)
LATENCY_CALLS, WARMUP_CALLS = 300, 20


def _model_dir(workspace: Path) -> Path | None:
    found = sorted((workspace / "models" / MODEL).glob("seed-*/model.keras"))
    return found[0].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = _stdio.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


async def _load(url: str, bodies: list[bytes], clients: int, seconds: float, warmup_s: float) -> dict[str, float]:
    """`clients` concurrent loops of POST /predict for warmup_s + seconds; figures over the last `seconds`."""
    import httpx

    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from, end = start + warmup_s, start + warmup_s + seconds

    async def client_loop(worker: int) -> None:
        nonlocal errors
        i = worker
        # One client (one keep-alive connection) per simulated user: a shared pool of 32 connections serves
        # its waiters unevenly, which shows up as a client-made p99.
        async with httpx.AsyncClient(timeout=60) as client:
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                reply = await client.post(f"{url}/predict", files={"file": ("item.png", bodies[i % len(bodies)],
                                                                            "image/png")})
                t1 = time.perf_counter()
                if t0 >= measure_from:
                    latencies.append(t1 - t0)
                    errors += reply.status_code != 200
                i += clients

    await asyncio.gather(*(client_loop(w) for w in range(clients)))
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "requests": len(ms), "errors": errors, "req_s": len(ms) / seconds,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def _serve(workspace: Path, root: Path, backend: str, seed: int) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "pipeline", "serve", "--port", str(port), "--seed", str(seed),
           "--workspace", str(root), "--backend", backend]
    proc = subprocess.Popen(cmd, cwd=workspace, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while True:
        try:
            default = httpx.get(f"{url}/models", timeout=2).json()["default"]
            if default.get("model") == MODEL:
                return proc, url
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"serve ({backend}) did not start: {proc.stderr.read()[-2000:]}")
        time.sleep(0.3)


def run(workspace: Path, repeats: int, scratch: Path, seconds: float = 8.0, warmup_s: float = 1.5) -> Section:
    s = Section("serving", "9. serving cnn-ours (ONNX Runtime vs Keras)")
    model_dir = _model_dir(workspace)
    if model_dir is None:
        s.skipped = f"no trained {MODEL} in {workspace / 'models' / MODEL}/seed-<seed>/model.keras"
        return s
    from pipeline.metrics import batch1_latency
    from pipeline.models import registry
    from pipeline.params import load_params, section
    from pipeline.serving import releases
    from pipeline.serving.export import META_FILE, ONNX_FILE, export_model
    from pipeline.serving.serve import ServeParams
    from pipeline.serving.served import matching_export, onnx_predictor

    seed = int(model_dir.name.split("-")[1])
    x, _, source = test_arrays(workspace)
    threads = section(ServeParams, "serve", load_params(workspace / "params.yaml")).onnx_threads
    export_dir = workspace / "exports" / MODEL / model_dir.name
    if matching_export(model_dir, export_dir) is None:
        log(f"serving: exporting {model_dir} to ONNX (no export of this model file in {export_dir})")
        export_dir = scratch / "serving-export"
        export_model(MODEL, model_dir, export_dir, x[:1000], max_abs_diff=1e-5)

    keras, onnx = registry.load_predictor(model_dir), onnx_predictor(export_dir / ONNX_FILE, threads)
    lat: dict[str, list[float]] = {"onnx": [], "keras": []}
    p90: dict[str, list[float]] = {"onnx": [], "keras": []}
    for i in range(repeats):
        for label, fn in (("onnx", onnx), ("keras", keras)):
            log(f"serving: batch-1 latency, {label} repeat {i + 1}/{repeats}")
            figures = batch1_latency(fn, x, LATENCY_CALLS, WARMUP_CALLS)
            lat[label].append(figures["median_ms"])
            p90[label].append(figures["p90_ms"])
    s.rows.append(Row("batch-1 latency (median)", median(lat["onnx"]), median(lat["keras"]), "ms", "lower",
                      "ONNX Runtime", "Keras (load_predictor)"))

    root = scratch / "serving-registry"
    version = releases.register(root, MODEL, seed, model_dir, extra_files={
        ONNX_FILE: export_dir / ONNX_FILE, META_FILE: export_dir / META_FILE})
    releases.set_alias(root, releases.CHAMPION, version.number, model=MODEL, seed=seed)
    bodies = [_png(img) for img in x[:64]]
    load: dict[str, list[dict[str, float]]] = {}
    for backend in ("auto", "keras"):
        proc, url = _serve(workspace, root, backend, seed)
        try:
            load[backend] = []
            for clients in CLIENTS:
                log(f"serving: {backend} service, {clients} client(s), {seconds:g} s")
                load[backend].append(asyncio.run(_load(url, bodies, clients, seconds, warmup_s)))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    for o, k in zip(load["auto"], load["keras"]):
        n = o["clients"]
        s.rows += [Row(f"{n} client(s): requests/s", o["req_s"], k["req_s"], "req/s", "higher",
                       "ONNX-backed service", "Keras-backed service"),
                   Row(f"{n} client(s): p50 latency", o["p50_ms"], k["p50_ms"], "ms", "lower",
                       "ONNX-backed service", "Keras-backed service"),
                   Row(f"{n} client(s): p99 latency", o["p99_ms"], k["p99_ms"], "ms", "lower",
                       "ONNX-backed service", "Keras-backed service")]
    s.raw = {"model_dir": str(model_dir), "onnx": str(export_dir / ONNX_FILE), "onnx_threads": threads,
             "test_data": source, "batch1_median_ms": lat, "batch1_p90_ms": p90, "load": load,
             "load_average_1_5_15": os.getloadavg(), "cpus": os.cpu_count()}
    errors = sum(r["errors"] for rows in load.values() for r in rows)
    s.notes.append(
        f"{MODEL} from {model_dir} (flip-averaged prediction: {registry.predicts_flip_averaged(model_dir)}, in both). "
        f"Batch-1: median of {LATENCY_CALLS} calls after {WARMUP_CALLS} warm-up calls, median over {repeats} "
        f"repeat(s); ONNX Runtime with serve.onnx_threads = {threads}. Service: `python -m pipeline serve` with "
        f"{MODEL} as the champion (requests without ?model=), default backend (ONNX Runtime) vs --backend keras; "
        f"each level {seconds:g} s after {warmup_s:g} s of warm-up, closed-loop clients (asyncio + httpx) on the "
        f"same machine ({os.cpu_count()} CPUs), PNG uploads of 64 official test images; non-200 replies: {errors}. "
        f"Load average at the end (1/5/15 min): {', '.join(f'{v:.2f}' for v in os.getloadavg())}.")
    return s
