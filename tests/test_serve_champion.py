"""serve and the registry: the champion answers by default (ONNX Runtime for a Keras model), the fallback without
one, a champion that cannot be loaded (503, or the previous one keeps answering), hot reload under concurrent
requests, and the request log (and its writer falling behind).

The registry lives in tmp_path (releases.register + set_alias, as promote writes it) over the `trained`
workspace's tiny real models, read-only; the ONNX file is the session's one export of cnn-ours.
"""

from __future__ import annotations

import base64
import io as _stdio
import shutil
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.models import registry
from pipeline.params import section
from pipeline.schema import CLASS_NAMES
from pipeline.serving import releases
from pipeline.serving.export import META_FILE, ONNX_FILE
from pipeline.serving.request_log import LOG_DIR, RequestLog, read_window
from pipeline.serving.serve import ServeParams, create_app
from pipeline.serving.served import ONNX, LogWriter, matching_export, onnx_predictor
from tests._trained import SEED
from tests.conftest import shipped_section
from tests.test_predict import png_bytes

with warnings.catch_warnings():
    warnings.simplefilter("ignore")   # starlette asks for httpx2 instead of httpx; httpx works
    from fastapi.testclient import TestClient


def make_champion(root: Path, trained: Path, model: str, onnx_dir: Path | None = None) -> releases.Version:
    """Register models/<model>/seed-42 (with its ONNX export when given) and point `champion` at it."""
    extra = {} if onnx_dir is None else {ONNX_FILE: onnx_dir / ONNX_FILE, META_FILE: onnx_dir / META_FILE}
    version = releases.register(root, model, SEED, trained / "models" / model / f"seed-{SEED}", extra_files=extra)
    releases.set_alias(root, releases.CHAMPION, version.number, model=model, seed=SEED)
    return version


def app_for(trained: Path, root: Path, **kwargs):
    return create_app(trained / "models", trained / "metrics", None, seed=SEED, max_upload_bytes=200_000,
                      registry_root=root, exports_dir=trained / "exports",
                      request_log=RequestLog(root / LOG_DIR, max_rows=1000), **kwargs)


def post(client, image: np.ndarray, model: str | None = None):
    return client.post("/predict" + (f"?model={model}" if model else ""),
                       files={"file": ("item.png", png_bytes(image), "image/png")})


def seen_image(body: dict) -> np.ndarray:
    return np.asarray(Image.open(_stdio.BytesIO(base64.b64decode(body["model_input"].split(",")[1]))))


def test_the_champion_answers_by_default_through_onnx_runtime_and_every_request_is_logged(
        trained, cnn_ours_export, tmp_path, fmnist):
    make_champion(tmp_path, trained, "cnn-ours", cnn_ours_export.path)
    x = fmnist["test"][0]
    with TestClient(app_for(trained, tmp_path)) as client:   # `with`: start-up and shutdown (the log's flush) run
        default = client.get("/models").json()["default"]
        assert default == {"model": "cnn-ours", "version": 1, "seed": SEED, "backend": ONNX, "why": "champion v1"}
        bodies = [post(client, x[i]).json() for i in range(3)]
        named = post(client, x[3], model="gaussian-nb")
        assert named.status_code == 200
        bodies.append(named.json())
    assert [(b["model"], b["version"], b["backend"]) for b in bodies] == \
        [("cnn-ours", 1, ONNX)] * 3 + [("gaussian-nb", None, "scikit-learn")]
    # what ONNX Runtime answered is what the Keras model predicts for the image it saw
    keras = registry.load_predictor(trained / "models" / "cnn-ours" / f"seed-{SEED}")
    probs = keras(np.stack([seen_image(b) for b in bodies[:3]]))
    assert [b["predicted"] for b in bodies[:3]] == [CLASS_NAMES[i] for i in probs.argmax(1)]
    assert [b["probability"] for b in bodies[:3]] == pytest.approx(probs.max(1).tolist(), abs=1e-5)

    log = read_window(tmp_path / LOG_DIR)
    assert list(log["model"]) == ["cnn-ours"] * 3 + ["gaussian-nb"]
    assert list(log["version"]) == [1, 1, 1, -1]     # -1: not served from the registry
    assert np.array_equal(log["images"], np.stack([seen_image(b) for b in bodies]))
    assert [CLASS_NAMES[i] for i in log["predicted"]] == [b["predicted"] for b in bodies]
    assert log["confidence"] == pytest.approx([b["probability"] for b in bodies], abs=1e-6)


def test_without_a_champion_the_most_accurate_model_answers_and_says_why(trained, tmp_path, fmnist):
    client = TestClient(app_for(trained, tmp_path))
    body = client.get("/models").json()
    best = body["models"][0]["name"]
    assert body["default"] == {"model": best, "version": None, "seed": SEED, "why": "most accurate (no champion yet)"}
    reply = post(client, fmnist["test"][0][0]).json()
    assert (reply["model"], reply["version"]) == (best, None)


def test_a_champion_that_cannot_be_loaded_is_503_and_named_models_still_work(trained, tmp_path, fmnist):
    version = make_champion(tmp_path, trained, "gaussian-nb")
    (version.path / registry.SKOPS_FILE).write_bytes(b"not a skops file")
    client = TestClient(app_for(trained, tmp_path))
    reply = post(client, fmnist["test"][0][0])
    assert reply.status_code == 503, reply.text
    assert "champion v1 (gaussian-nb) cannot be loaded" in reply.json()["detail"]
    assert "?model=NAME" in reply.json()["detail"]
    default = client.get("/models").json()["default"]
    assert default["model"] is None and default["why"] == "champion v1" and "cannot be loaded" in default["error"]
    named = post(client, fmnist["test"][0][0], model="gaussian-nb")
    assert named.status_code == 200 and named.json()["version"] is None


def test_a_new_champion_that_cannot_be_loaded_leaves_the_previous_one_answering_and_says_why(
        trained, tmp_path, fmnist, capsys):
    make_champion(tmp_path, trained, "gaussian-nb")
    client = TestClient(app_for(trained, tmp_path))   # no `with`, no poller: watcher.refresh() is what a poll does
    watcher = client.app.state.watcher
    x = fmnist["test"][0]
    assert post(client, x[0]).json()["version"] == 1
    broken = make_champion(tmp_path, trained, "gaussian-nb")   # v2, promoted, then its file damaged
    skops = broken.path / registry.SKOPS_FILE
    good = skops.read_bytes()
    skops.write_bytes(b"not a skops file")
    for i in range(3):   # the poll that sees the promotion, then two that retry the load
        watcher.refresh()
        reply = post(client, x[1 + i])
        assert reply.status_code == 200, reply.text
        assert (reply.json()["model"], reply.json()["version"]) == ("gaussian-nb", 1)
    default = client.get("/models").json()["default"]
    assert (default["model"], default["version"], default["why"]) == ("gaussian-nb", 1, "champion v1")
    assert default["error"].startswith("champion v2 (gaussian-nb) cannot be loaded: ")
    assert "; still serving v1" in default["error"].splitlines()[0]
    logged = capsys.readouterr().err
    assert logged.count("cannot be loaded") == 1 and f"serve: {default['error']}\n" in logged   # once, not per poll

    releases.set_alias(tmp_path, releases.CHAMPION, 1, model="gaussian-nb", seed=SEED)   # rolled back: no error
    watcher.refresh()
    default = client.get("/models").json()["default"]
    assert (default["version"], "error" in default) == (1, False)
    releases.set_alias(tmp_path, releases.CHAMPION, 2, model="gaussian-nb", seed=SEED)   # promoted again, still broken
    watcher.refresh()
    assert post(client, x[4]).json()["version"] == 1 and "error" in client.get("/models").json()["default"]

    skops.write_bytes(good)   # repaired, not promoted again: the next poll's retry loads it
    assert watcher.refresh()
    assert post(client, x[5]).json()["version"] == 2
    assert "error" not in client.get("/models").json()["default"]


class HeldLog(RequestLog):
    """A RequestLog whose append waits for `release`: a writer stuck on a slow disk."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entered, self.release = threading.Event(), threading.Event()

    def append(self, *row):
        self.entered.set()
        self.release.wait()
        super().append(*row)


def test_a_request_log_writer_that_falls_behind_drops_and_counts_rows_and_never_blocks_a_request(fmnist, tmp_path):
    x = fmnist["test"][0][:12]
    log = HeldLog(tmp_path / LOG_DIR, max_rows=1000)
    said: list[str] = []
    writer = LogWriter(log, max_queued=3, warn_every_s=float("inf"), warn=said.append)
    try:
        writer.put(x[0], "gaussian-nb", 1, 0, 0.5)
        assert log.entered.wait(60)   # the writer holds row 0 in append: its queue is empty again

        def requests():
            for i in range(1, 12):
                writer.put(x[i], "gaussian-nb", 1, i, 0.5)
        thread = threading.Thread(target=requests)
        thread.start()
        thread.join(timeout=60)   # a bound against a hang: put must return at once
        assert not thread.is_alive(), "put waited for a writer that is behind"
        assert writer.dropped == 8   # rows 1-3 queued, 4-11 dropped
        assert said == ["serve: request log is behind; dropped 1 requests so far (monitoring sees fewer images)"]
    finally:
        log.release.set()
    writer.close()
    assert said[1:] == ["serve: request log dropped 8 requests in all (the writer fell behind)"]
    written = read_window(tmp_path / LOG_DIR)   # close wrote exactly the rows that were not dropped
    assert np.array_equal(written["images"], x[:4])
    assert list(written["predicted"]) == [0, 1, 2, 3]


def test_a_new_champion_is_served_without_a_restart_and_no_request_fails(trained, cnn_ours_export, tmp_path, fmnist):
    make_champion(tmp_path, trained, "gaussian-nb")
    images = fmnist["test"][0][:16]
    stop, promoted = threading.Event(), threading.Event()
    seen_after_promotion: list[int] = []

    def client_loop(client, worker: int) -> list[tuple[int, int | None]]:
        out = []
        i = worker
        while not stop.is_set():
            reply = post(client, images[i % len(images)])
            version = reply.json().get("version") if reply.status_code == 200 else None
            out.append((reply.status_code, version))
            if promoted.is_set() and version == 2:
                seen_after_promotion.append(worker)
            i += 4
        return out

    with TestClient(app_for(trained, tmp_path, reload_poll_s=0.05)) as client, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client_loop, client, w) for w in range(4)]
        make_champion(tmp_path, trained, "cnn-ours", cnn_ours_export.path)   # as promote does, while requests run
        promoted.set()
        deadline = time.monotonic() + 120   # a guard against a hang, not a timing assertion
        while len(set(seen_after_promotion)) < 4 and time.monotonic() < deadline:   # every client saw v2
            time.sleep(0.01)
        stop.set()
        results = [f.result() for f in futures]
    for per_client in results:
        assert all(status == 200 for status, _ in per_client), per_client
        versions = [v for _, v in per_client]
        assert set(versions) <= {1, 2} and versions[-1] == 2
        assert versions == sorted(versions)      # once a client got v2, never v1 again
    assert any(v == 1 for r in results for _, v in r)   # requests ran before the swap too


def test_onnx_runtime_matches_keras_within_1e_5(trained, cnn_ours_export, fmnist, tmp_path):
    model_dir = trained / "models" / "cnn-ours" / f"seed-{SEED}"
    x = fmnist["test"][0][:500]
    p_onnx = onnx_predictor(cnn_ours_export.path / ONNX_FILE, threads=1)(x)
    p_keras = registry.load_predictor(model_dir)(x)
    assert np.array_equal(p_onnx.argmax(1), p_keras.argmax(1))
    assert np.max(np.abs(p_onnx - p_keras)) <= 1e-5
    # a run's export is used only when it was exported from this very model file
    assert matching_export(model_dir, cnn_ours_export.path) == cnn_ours_export.path / ONNX_FILE
    stale = shutil.copytree(cnn_ours_export.path, tmp_path / "stale")
    (stale / META_FILE).write_text((stale / META_FILE).read_text().replace('"source_sha256": "', '"source_sha256": "0'))
    assert matching_export(model_dir, stale) is None


@pytest.mark.parametrize("key, value, message", [
    ("reload_poll_s", 0, "serve.reload_poll_s must lie in [0.05, 3600]"),
    ("onnx_threads", 0, "serve.onnx_threads must be an integer in [1, 256]"),
    ("log_max_rows", 0, "serve.log_max_rows must be an integer in [1, 100000000]"),
])
def test_serve_params_are_checked(key, value, message):
    with pytest.raises(PipelineError, match=message.replace("[", r"\[").replace("]", r"\]")):
        section(ServeParams, "serve", {"serve": shipped_section("serve", **{key: value})})
