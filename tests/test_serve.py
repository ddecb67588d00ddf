"""serve: the HTTP API with FastAPI's test client, and the page in headless Chromium (a real uvicorn server)."""

from __future__ import annotations

import dataclasses
import io as _stdio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import io
from pipeline.models import registry
from pipeline.schema import CLASS_NAMES
from pipeline.serving.serve import create_app
from tests._trained import MODELS, SEED
from tests.conftest import REPO
from tests.test_predict import as_photo, png_bytes

with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # starlette asks for httpx2 instead of httpx; httpx works
    from fastapi.testclient import TestClient

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def ws(trained) -> Path:
    return trained


@pytest.fixture(scope="module")
def client(ws, fmnist) -> TestClient:
    app = create_app(ws / "models", ws / "metrics", ws / "reports", seed=SEED, max_upload_bytes=200_000,
                     test_images=fmnist["test"][0][:10])
    return TestClient(app)


def upload(client, data: bytes, *, model: str | None = "cnn-dropout-1", name="shoe.png", content_type="image/png"):
    url = "/predict" + (f"?model={model}" if model else "")
    return client.post(url, files={"file": (name, data, content_type)})


def test_models_lists_every_trained_model_with_its_test_accuracy(client, ws):
    body = client.get("/models").json()
    assert body["seed"] == SEED
    rows = {m["name"]: m for m in body["models"]}
    assert set(rows) == set(MODELS)
    for name, row in rows.items():
        metrics = io.read_json(ws / "metrics" / name / f"seed-{SEED}.json")["test"]
        assert row["test_accuracy"] == metrics["accuracy"]
        assert row["ci95"] == [metrics["accuracy_ci95_low"], metrics["accuracy_ci95_high"]]
        assert row["family"] == registry.get(name).family
    accs = [m["test_accuracy"] for m in body["models"]]
    assert accs == sorted(accs, reverse=True)


def test_predict_an_uploaded_photo(client, ws, fmnist):
    x = fmnist["test"][0]
    reply = upload(client, png_bytes(as_photo(x[0])))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"] == "cnn-dropout-1" and body["inverted"] is True and body["input"] == "shoe.png"
    assert [t["class"] for t in body["top3"]][0] == body["predicted"] and len(body["top3"]) == 3
    assert body["predicted"] in CLASS_NAMES
    seen = np.asarray(Image.open(_stdio.BytesIO(__import__("base64").b64decode(body["model_input"].split(",")[1]))))
    assert seen.shape == (28, 28)
    probs = registry.load_predictor(ws / "models" / "cnn-dropout-1" / f"seed-{SEED}")(seen[None])[0]
    assert body["predicted"] == CLASS_NAMES[int(probs.argmax())]
    assert body["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
    # without ?model= the most accurate model answers
    best = client.get("/models").json()["models"][0]["name"]
    assert upload(client, png_bytes(as_photo(x[1])), model=None).json()["model"] == best


@pytest.mark.parametrize("kwargs, status, text", [
    ({"model": "no-such-model"}, 404, "not a registered model; available: "),
    ({"model": "svc"}, 404, "`svc`: registered but not trained here"),
    ({"content_type": "text/plain", "name": "notes.txt"}, 415, "content type `text/plain`"),
    ({"data": b"GIF89a but not really"}, 422, "not an image Pillow can read"),
    ({"data": b"\0" * 300_000}, 413, "upload too large"),
])
def test_predict_refuses_bad_requests_clearly(client, fmnist, kwargs, status, text):
    data = kwargs.pop("data", None) or png_bytes(as_photo(fmnist["test"][0][2]))
    reply = upload(client, data, **kwargs)
    assert reply.status_code == status and text in reply.json()["detail"], reply.text


def test_upload_within_the_content_length_but_over_the_file_limit_is_refused(ws):
    app = create_app(ws / "models", ws / "metrics", None, seed=SEED, max_upload_bytes=1000)
    reply = upload(TestClient(app), b"\x89PNG" + b"\0" * 5000)   # 5 kB < 1 kB + multipart allowance
    assert reply.status_code == 413


def test_page_reports_and_samples(client):
    page = client.get("/")
    assert page.status_code == 200 and "Drop an image here" in page.text and 'href="/report"' in page.text
    # Before the first prediction the result (two images) is hidden: author CSS such as `display:flex` would
    # otherwise override the `hidden` attribute and show two broken-image placeholders.
    assert '<div id="result" hidden>' in page.text and "[hidden]{display:none!important}" in page.text
    assert "<img" not in page.text   # images are created with their source (an empty <img> shows as broken)
    assert client.get("/samples/3.png").headers["content-type"] == "image/png"
    assert client.get("/samples/99.png").status_code == 404
    assert client.get("/reports/../params.yaml").status_code == 404
    report = client.get("/report")   # the page's link: publish's comparison report
    assert report.status_code == 200 and "<title>Fashion-MNIST: ours vs published</title>" in report.text
    for m in client.get("/models").json()["models"]:
        card = client.get(m["model_card"])
        assert card.status_code == 200 and card.text.startswith(f"# Model card: {m['name']}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(ws, tmp_path_factory):
    """`python -m pipeline serve` on a free port, as a user starts it (its registry and request log in a
    workspace of its own: the shared `trained` workspace stays read-only)."""
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    workspace = tmp_path_factory.mktemp("serve-workspace")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--port", str(port),
                             "--workspace", str(workspace)], cwd=ws, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"serve did not start: {proc.stdout.read()}")
        time.sleep(0.3)
    yield Server(f"http://127.0.0.1:{port}", workspace, proc)
    proc.terminate()
    proc.wait(timeout=20)


@dataclasses.dataclass(frozen=True)
class Server:
    url: str
    workspace: Path
    proc: subprocess.Popen


def _chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", "--hide-scrollbars", f"--user-data-dir={cwd / 'chrome-profile'}",
                           "--virtual-time-budget=20000", "--window-size=1000,760", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (`scripts/install-system-deps.sh --test`, "
                                             "which `make test` runs, installs it)")
def test_page_in_headless_chromium_shows_the_top_3_and_shutdown_writes_the_request_log(server, tmp_path):
    import httpx

    from pipeline.serving.request_log import LOG_DIR, read_window

    url = f"{server.url}/?model=cnn-dropout-1&sample=0"
    dom = _chromium("--dump-dom", url, cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    sample = httpx.get(f"{server.url}/samples/0.png").content
    expected = httpx.post(f"{server.url}/predict?model=cnn-dropout-1",
                          files={"file": ("official test image 0.png", sample, "image/png")}).json()
    top1 = re.search(r'<h2 id="top1">([^<]*)</h2>', dom.stdout)
    assert top1 and top1.group(1).startswith(expected["predicted"]), dom.stdout[-3000:]
    rows = re.findall(r"<tr><td>([^<]+)</td>", dom.stdout)
    assert rows == [t["class"] for t in expected["top3"]]
    assert 'href="/report"' in dom.stdout
    shot = tmp_path / "page.png"
    proc = _chromium(f"--screenshot={shot}", url, cwd=tmp_path)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    image = np.asarray(Image.open(shot).convert("L"))
    assert image.shape == (760, 1000) and image.std() > 10   # a rendered page, not a blank one
    if os.environ.get("SERVE_SCREENSHOT"):
        shutil.copy(shot, os.environ["SERVE_SCREENSHOT"])
    # uvicorn's shutdown (SIGTERM) flushes the request log: the page's two predictions and ours
    server.proc.terminate()
    server.proc.wait(timeout=20)   # uvicorn re-raises SIGTERM after its graceful shutdown: status -15
    log = read_window(server.workspace / LOG_DIR)
    assert list(log["model"]) == ["cnn-dropout-1"] * 3 and list(log["version"]) == [-1] * 3
    assert [CLASS_NAMES[i] for i in log["predicted"]] == [expected["predicted"]] * 3
