"""serve: a small HTTP service over the trained models (FastAPI; `python -m pipeline serve` runs it with uvicorn).

    python -m pipeline serve [--host 127.0.0.1] [--port 8000] [--seed 42] [--workspace .] [--backend auto|keras]

    GET  /                     a page: drop an image (or try an official test image), see the top 3
    GET  /models               the models trained in models/<name>/seed-<seed>/ with their test accuracy and 95% CI,
                               and `default`: which model answers without ?model= and `why` ("champion vN" or
                               "most accurate (no champion yet)"; `error` when the champion cannot be loaded:
                               `model` is then the previous champion, still answering, or null when none was)
    POST /predict?model=NAME   multipart `file` (PNG, JPEG, GIF, BMP, WebP, TIFF) -> JSON: `model`, `version`
                               (registry version, null when served from models/), `backend`, the class, its
                               probability, the top 3, `inverted`, and the 28x28 input (a PNG data URL).
                               Without `model`: the registry's champion, else the most accurate trained model.
    GET  /samples/{i}.png      official test image i (when started with --test), for the page's "try" button
    GET  /reports/...          the comparison report and model cards (reports/), read-only

Refusals: an upload over `serve.max_upload_mb` 413 (before it is read), no Content-Length 411, not an image
415/422, an unknown or untrained model 404, a champion that cannot be loaded 503 when no earlier champion was loaded
(else that one keeps answering; named models always do).
Models load once, through ONNX Runtime where a checked export of that model file exists, else the registry's
safe loader; the champion is hot-reloaded (`serve.reload_poll_s`) and every prediction is appended to
<workspace>/monitoring/requests by a writer thread (pipeline.serving.served): the one thing serve writes.
docs/production.md, "Serving the champion". `create_app` is pure (no I/O until start-up or a request).
"""

from __future__ import annotations

import base64
import contextlib
import io as _stdio
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import anyio
import numpy as np
# Module level, not inside create_app: FastAPI resolves the endpoints' annotations (postponed by
# `from __future__ import annotations`) in this module's namespace.
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from pipeline import io
from pipeline.data.convert import load_test_set
from pipeline.errors import PipelineError
from pipeline.models import registry
from pipeline.params import load_params, section
from pipeline.runs import output_paths, run_dir, seed_of
from pipeline.schema import CLASS_NAMES
from pipeline.serving import releases
from pipeline.serving.predict import Prediction, read_picture, record
from pipeline.serving.request_log import LOG_DIR, RequestLog
from pipeline.serving.served import KERAS, ChampionWatcher, LogWriter, Served, load_served, locked, matching_export

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp", "image/tiff",
                         "image/x-ms-bmp"})
MULTIPART_OVERHEAD = 16 * 1024   # form boundaries and part headers around the file itself


@dataclass(frozen=True)
class ServeParams:
    """params.yaml `serve` (required: params.yaml is the one home of the value)."""
    max_upload_mb: float
    reload_poll_s: float    # how often the service checks registry/aliases.json for a new champion
    onnx_threads: int       # ONNX Runtime intra-op threads per request
    log_max_rows: int       # rows the request log (monitoring/requests) keeps; the oldest parts roll away

    def __post_init__(self):
        if not 0 < self.max_upload_mb <= 100:
            raise PipelineError(f"params.yaml: serve.max_upload_mb must lie in (0, 100], got {self.max_upload_mb}")
        if not 0.05 <= self.reload_poll_s <= 3600:
            raise PipelineError(f"params.yaml: serve.reload_poll_s must lie in [0.05, 3600] seconds, "
                                f"got {self.reload_poll_s}")
        if isinstance(self.onnx_threads, bool) or not 1 <= self.onnx_threads <= 256:
            raise PipelineError(f"params.yaml: serve.onnx_threads must be an integer in [1, 256], "
                                f"got {self.onnx_threads}")
        if isinstance(self.log_max_rows, bool) or not 1 <= self.log_max_rows <= 100_000_000:
            raise PipelineError(f"params.yaml: serve.log_max_rows must be an integer in [1, 100000000], "
                                f"got {self.log_max_rows}")


def trained_models(models_dir: Path, metrics_dir: Path, seed: int) -> list[dict[str, Any]]:
    """Registered models trained under models_dir for `seed`, most accurate first, with their test accuracy."""

    rows = []
    for name in registry.names():
        if not (run_dir(models_dir, name, seed) / "train.json").exists():
            continue
        spec = registry.get(name)
        metrics_path = output_paths(metrics_dir, name, seed)["metrics"]
        test = io.read_json(metrics_path)["test"] if metrics_path.exists() else None
        rows.append({"name": name, "family": spec.family, "source": spec.source, "seed": seed,
                     "test_accuracy": None if test is None else test["accuracy"],
                     "ci95": None if test is None else [test["accuracy_ci95_low"], test["accuracy_ci95_high"]],
                     "test_images": None if test is None else test["n"],
                     "model_card": f"/reports/model-cards/{name}.md"})
    return sorted(rows, key=lambda r: (-(r["test_accuracy"] or -1.0), r["name"]))


def png_data_url(image: np.ndarray) -> str:
    from PIL import Image

    buf = _stdio.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class _Predictors:
    """Trained models by name (models/<name>/seed-<seed>), each loaded once (thread-safe), ONNX Runtime when the
    run's export (exports/<name>/seed-<seed>) is of this very model file."""

    def __init__(self, models_dir: Path, exports_dir: Path | None, seed: int, *, threads: int, use_onnx: bool,
                 loader: Callable[[Path], Callable] | None):
        self.models_dir, self.exports_dir, self.seed = models_dir, exports_dir, seed
        self.threads, self.use_onnx, self.loader = threads, use_onnx, loader
        self._lock = threading.Lock()
        self._loaded: dict[str, Served] = {}

    def loaded(self, name: str) -> Served | None:
        return self._loaded.get(name)

    def get(self, name: str) -> Served:
        with self._lock:
            if name not in self._loaded:
                model_dir = run_dir(self.models_dir, name, self.seed)
                if self.loader is not None:   # tests inject a loader
                    served = Served(name, None, self.seed, "custom", locked(self.loader(model_dir)))
                else:
                    export = None if self.exports_dir is None else run_dir(self.exports_dir, name, self.seed)
                    served = load_served(name, None, self.seed, model_dir, onnx=matching_export(model_dir, export),
                                         threads=self.threads, use_onnx=self.use_onnx)
                self._loaded[name] = served
            return self._loaded[name]


def _safe_model_name(name: str) -> str:
    """A ?model= value fit to name in a message (fuzzers send NUL bytes and megabyte names)."""
    return name if len(name) <= 80 and name.isprintable() else repr(name[:80]) + ("..." if len(name) > 80 else "")


def create_app(models_dir: Path | str, metrics_dir: Path | str, reports_dir: Path | str | None, *, seed: int,
               max_upload_bytes: int, test_images: np.ndarray | None = None,
               loader: Callable[[Path], Callable] | None = None, registry_root: Path | str | None = None,
               exports_dir: Path | str | None = None, request_log: RequestLog | None = None,
               onnx_threads: int = 1, reload_poll_s: float = 1.0, use_onnx: bool = True):
    """The FastAPI app over models_dir/<name>/seed-<seed>/, metrics_dir and (registry_root given) the registry's
    champion, which answers requests without ?model=. Pure: no I/O until start-up (the lifespan starts the
    champion poller) or a request; request_log given: each prediction is appended on a writer thread."""

    models_dir, metrics_dir = Path(models_dir), Path(metrics_dir)
    predictors = _Predictors(models_dir, None if exports_dir is None else Path(exports_dir), seed,
                             threads=onnx_threads, use_onnx=use_onnx, loader=loader)
    watcher = None if registry_root is None else ChampionWatcher(Path(registry_root), threads=onnx_threads,
                                                                 poll_s=reload_poll_s, use_onnx=use_onnx)
    writer = None if request_log is None else LogWriter(request_log)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if watcher is not None:
            watcher.start()
        try:
            yield
        finally:   # uvicorn's shutdown: stop polling, write the requests logged so far
            if watcher is not None:
                watcher.stop()
            if writer is not None:
                writer.close()

    app = FastAPI(title="Fashion-MNIST models", version="1", lifespan=lifespan,
                  description="Predict Fashion-MNIST classes with the pipeline's trained models.")
    app.state.watcher, app.state.request_log_writer = watcher, writer

    def default_model() -> dict[str, Any]:
        """Which model answers without ?model=, and why: the champion, else the most accurate trained one."""
        if watcher is not None:
            served, error, number = watcher.current()
            if served is not None:   # with `error`: a newer champion cannot be loaded, this one still answers
                return {"model": served.model, "version": number, "seed": served.seed, "backend": served.backend,
                        "why": f"champion v{number}", "served": served, **({"error": error} if error else {})}
            if error is not None:
                return {"model": None, "version": number, "why": f"champion v{number}", "error": error}
        available = trained_models(models_dir, metrics_dir, seed)
        if not available:
            return {"model": None, "version": None, "why": "most accurate (no champion yet)",
                    "error": f"no trained model in {models_dir} (seed {seed}): run `dvc repro` first"}
        return {"model": available[0]["name"], "version": None, "seed": seed, "why": "most accurate (no champion yet)"}

    @app.middleware("http")
    async def bounded_upload(request: Request, call_next):
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse({"detail": "a Content-Length header is required"}, status_code=411)
            if not length.isdigit() or int(length) > max_upload_bytes + MULTIPART_OVERHEAD:
                return JSONResponse({"detail": f"upload too large: at most {max_upload_bytes:,} bytes"},
                                    status_code=413)
        return await call_next(request)

    @app.get("/models")
    def models() -> dict[str, Any]:
        default = {k: v for k, v in default_model().items() if k != "served"}
        return {"seed": seed, "default": default, "models": trained_models(models_dir, metrics_dir, seed)}

    def loaded_fast_model(model: str | None) -> Served | None:
        """The model that would answer, when it is loaded and predicts in about a millisecond (not Keras)."""
        if model is None:
            served = None if watcher is None else watcher.loaded()
        else:
            served = predictors.loaded(model)
        return served if served is not None and served.backend != KERAS else None

    @app.post("/predict")
    async def predict(file: UploadFile = File(...), model: str | None = Query(None)) -> dict[str, Any]:
        # A loaded ONNX Runtime or scikit-learn model answers in under a millisecond: on the event loop, without
        # the hop to a worker thread (measured: ~7% more requests/s at 32 clients). Keras (tens of ms), model
        # loading and the fallback's file reads run on a worker thread.
        fast = loaded_fast_model(model)
        if fast is not None:
            return answer(file, model, fast)
        return await anyio.to_thread.run_sync(answer, file, model, None)

    def answer(file: UploadFile, model: str | None, fast: Served | None) -> dict[str, Any]:
        if model is None and fast is not None:
            served, name = fast, fast.model
        elif model is None:
            default = default_model()
            if default["model"] is None:
                raise HTTPException(503, f"the default model ({default['why']}) cannot answer: {default['error']}; "
                                         "name a trained model with ?model=NAME (GET /models lists them)")
            served = default.get("served")
            name = default["model"]
        else:
            served, name = None, model
            if name not in registry.names() or not (run_dir(models_dir, name, seed) / "train.json").exists():
                available = [m["name"] for m in trained_models(models_dir, metrics_dir, seed)]
                known = "registered but not trained here" if name in registry.names() else "not a registered model"
                raise HTTPException(404, f"model `{_safe_model_name(name)}`: {known}; available: "
                                         f"{', '.join(available) or 'none'}")
        content_type = (file.content_type or "").split(";")[0].strip().lower()
        if content_type not in IMAGE_TYPES:
            raise HTTPException(415, f"`{_safe_model_name(file.filename or '')}` has content type "
                                     f"`{_safe_model_name(content_type) or 'none'}`; "
                                     f"send an image: {', '.join(sorted(IMAGE_TYPES))}")
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload too large: at most {max_upload_bytes:,} bytes")
        item = read_picture(file.filename or "upload", _stdio.BytesIO(data))
        if item.image is None:
            raise HTTPException(422, f"`{_safe_model_name(item.input)}`: {item.error}")
        try:
            if served is None:
                served = predictors.get(name)
            probs = served.predict(item.image[None])[0]
        except PipelineError as exc:   # e.g. a model file that cannot be loaded safely
            raise HTTPException(503, f"model `{name}` cannot be loaded: {exc}") from None
        if writer is not None:
            writer.put(item.image, served.model, served.version, int(np.argmax(probs)), float(np.max(probs)))
        return {"model": served.model, "version": served.version, "seed": served.seed, "backend": served.backend,
                **record(Prediction(item, probs)), "model_input": png_data_url(item.image)}

    @app.get("/samples/{index}.png")
    def sample(index: int) -> Response:
        if test_images is None or not 0 <= index < len(test_images):
            raise HTTPException(404, "no such test image (start the service with --test data/processed/test.npz)")
        from PIL import Image

        buf = _stdio.BytesIO()
        Image.fromarray(test_images[index]).resize((112, 112), Image.Resampling.NEAREST).save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")

    @app.get("/report")
    def report() -> RedirectResponse:
        return RedirectResponse("/reports/comparison.html")

    @app.get("/reports/{path:path}")
    def reports(path: str) -> Response:
        missing = HTTPException(404, f"reports/{_safe_model_name(path)}: not found (the publish stage writes "
                                     "reports/)")
        if reports_dir is None or "\0" in path or len(path) > 1024:
            raise missing   # a NUL byte or an over-long path cannot name a report (and would make Path raise)
        root = Path(reports_dir).resolve()
        try:
            target = (root / path).resolve()
            found = root in target.parents and target.is_file()
        except (OSError, ValueError):   # e.g. a path component longer than the file system allows
            raise missing from None
        if not found:
            raise missing
        media = "text/plain; charset=utf-8" if target.suffix == ".md" else None   # browsers show it inline
        return FileResponse(target, media_type=media)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.replace("__SAMPLES__", str(0 if test_images is None else len(test_images))) \
                   .replace("__MAX_MB__", f"{max_upload_bytes / 1024 / 1024:g}") \
                   .replace("__CLASSES__", ", ".join(CLASS_NAMES))

    return app


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Fashion-MNIST: try a model</title>
<style>
body{font-family:system-ui,sans-serif;max-width:860px;margin:1.5em auto;padding:0 1em;color:#222}
#drop{border:3px dashed #888;border-radius:10px;padding:2em;text-align:center;background:#fafafa;cursor:pointer}
#drop.over{background:#e8f0ff;border-color:#36c}
#result{display:flex;gap:1.5em;margin-top:1.2em;align-items:flex-start}
[hidden]{display:none!important}
#result img{width:140px;height:140px;object-fit:contain;border:1px solid #ccc;background:#000}
#seen{image-rendering:pixelated}
.bar{background:#36c;height:1em;display:inline-block;vertical-align:middle;margin-right:.4em}
table{border-collapse:collapse}td{padding:3px 8px}
.err{color:#b00;font-weight:600}.note{color:#555;font-size:.9em}
</style></head><body>
<h1>Fashion-MNIST: try a model</h1>
<p>Model: <select id="model"></select> <span id="acc" class="note"></span>
 &middot; <a id="card" href="#">model card</a> &middot; <a href="/report">comparison report</a></p>
<div id="drop">Drop an image here, or click to choose one (PNG/JPEG, at most __MAX_MB__ MB)
<input id="file" type="file" accept="image/*" hidden></div>
<p class="note" id="try"></p>
<div id="status" class="note"></div>
<div id="result" hidden>
 <figure id="orig-fig"><figcaption class="note">your image</figcaption></figure>
 <figure id="seen-fig"><figcaption class="note">what the model sees (28x28)</figcaption></figure>
 <div><h2 id="top1"></h2><table id="top3"></table><p id="inv" class="note"></p></div>
</div>
<p class="note">Classes: __CLASSES__. Pictures are converted like Fashion-MNIST: grey, item light on black,
 centred (inverted when the background is light).</p>
<script>
const $ = id => document.getElementById(id);
const samples = __SAMPLES__;
let models = [], defaultModel = null;
function pct(p){ return (100*p).toFixed(1) + '%'; }
function showModel(){
  const name = $('model').value || (defaultModel && defaultModel.model);
  const m = models.find(m => m.name === name); if(!m) return;
  $('acc').textContent = m.test_accuracy === null ? 'not evaluated yet' :
    'test accuracy ' + pct(m.test_accuracy) + ' (95% CI ' + pct(m.ci95[0]) + '-' + pct(m.ci95[1]) + ')';
  $('card').href = m.model_card;
}
// Images are created with their source: an img element without one renders as a broken-image placeholder.
function showImage(id, alt, src){
  let img = $(id);
  if(!img){ img = document.createElement('img'); img.id = id; img.alt = alt; $(id + '-fig').prepend(img); }
  else if(img.src.startsWith('blob:')) URL.revokeObjectURL(img.src);
  img.src = src;
}
async function predict(blob, name){
  $('status').textContent = 'predicting ' + name + ' ...';
  const form = new FormData(); form.append('file', blob, name);
  const chosen = $('model').value;   // '' = the default model (the champion)
  const r = await fetch('/predict' + (chosen ? '?model=' + encodeURIComponent(chosen) : ''), {method: 'POST', body: form});
  const j = await r.json();
  if(!r.ok){ $('status').innerHTML = ''; const e = document.createElement('span'); e.className = 'err';
    e.textContent = 'error ' + r.status + ': ' + j.detail; $('status').appendChild(e);
    $('result').hidden = true; return; }
  $('status').textContent = j.model + (j.version === null ? '' : ' v' + j.version) + ' (seed ' + j.seed + '): ' + name;
  showImage('orig', 'your image', URL.createObjectURL(blob)); showImage('seen', 'what the model sees', j.model_input);
  $('top1').textContent = j.predicted + ' (' + pct(j.probability) + ')';
  $('top3').innerHTML = '';
  for(const t of j.top3){ const tr = document.createElement('tr');
    tr.innerHTML = '<td></td><td><span class="bar"></span></td>';
    tr.children[0].textContent = t.class; tr.querySelector('.bar').style.width = (200*t.probability) + 'px';
    tr.children[1].append(pct(t.probability)); $('top3').appendChild(tr); }
  $('inv').textContent = j.inverted ? 'The background was light: the picture was inverted.' : '';
  $('result').hidden = false;
}
async function trySample(i){
  const r = await fetch('/samples/' + i + '.png');
  await predict(await r.blob(), 'official test image ' + i + '.png');
}
async function init(){
  const j = await (await fetch('/models')).json(); models = j.models; defaultModel = j.default;
  if(!models.length){
    $('status').innerHTML = '<span class="err">No trained models: run dvc repro first.</span>'; return; }
  if(j.default.model){ const o = document.createElement('option'); o.value = '';
    o.textContent = 'default: ' + j.default.model + ' (' + j.default.why + ')'; $('model').appendChild(o); }
  for(const m of models){ const o = document.createElement('option'); o.value = m.name;
    o.textContent = m.name + (m.test_accuracy === null ? '' : ' (' + pct(m.test_accuracy) + ')');
    $('model').appendChild(o); }
  const q = new URLSearchParams(location.search);
  if(q.get('model')) $('model').value = q.get('model');
  $('model').onchange = showModel; showModel();
  if(samples){ $('try').innerHTML = 'Or <a href="#" id="rand">try a random official test image</a>.';
    $('rand').onclick = e => { e.preventDefault(); trySample(Math.floor(Math.random()*samples)); }; }
  if(q.get('sample') !== null && samples) await trySample(parseInt(q.get('sample')));
}
const drop = $('drop');
drop.onclick = () => $('file').click();
$('file').onchange = e => { const f = e.target.files[0]; if(f) predict(f, f.name); };
drop.ondragover = e => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = e => { e.preventDefault(); drop.classList.remove('over');
  const f = e.dataTransfer.files[0]; if(f) predict(f, f.name); };
init();
</script></body></html>
"""


# ------------------------------------------------------------------------------ CLI
def add_cli(parser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=None, help="which runs (default: the first of train.seeds)")
    # Path defaults kept on purpose: this command is run by hand (README), also where no dvc.yaml is; they are
    # the paths dvc.yaml gives the stages that write these inputs (tests/test_params.py keeps them equal).
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics"))
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument("--exports", type=Path, default=Path("exports"),
                        help="ONNX exports (exports/<model>/seed-<seed>): served with ONNX Runtime when present")
    parser.add_argument("--test", type=Path, default=Path("data/processed/test.npz"),
                        help="official test images for the page's 'try' link (skipped when absent)")
    parser.add_argument("--workspace", type=Path, default=Path("."),
                        help="holds registry/ (the champion answers requests without ?model=) and "
                             "monitoring/requests (the request log this service writes)")
    parser.add_argument("--backend", choices=("auto", "keras"), default="auto",
                        help="auto: ONNX Runtime where a checked ONNX export exists; keras: never ONNX Runtime "
                             "(to compare the two)")


def cli(args) -> None:
    import uvicorn

    raw = load_params(args.params)
    params = section(ServeParams, "serve", raw)
    seed = seed_of(raw, args.seed)
    test_images = None
    if args.test is not None and args.test.exists():
        test_images = load_test_set(args.test)[0]
    log_dir = args.workspace / LOG_DIR
    app = create_app(args.models_dir, args.metrics, args.reports, seed=seed,
                     max_upload_bytes=int(params.max_upload_mb * 1024 * 1024), test_images=test_images,
                     registry_root=args.workspace, exports_dir=args.exports,
                     request_log=RequestLog(log_dir, max_rows=params.log_max_rows),
                     onnx_threads=params.onnx_threads, reload_poll_s=params.reload_poll_s,
                     use_onnx=args.backend == "auto")
    found = trained_models(args.models_dir, args.metrics, seed)
    champion = releases.champion(args.workspace)
    default = f"champion v{champion.number} ({champion.model}, seed {champion.seed})" if champion else \
        f"{found[0]['name'] if found else 'none'}: most accurate (no champion yet in {args.workspace / 'registry'})"
    print(f"serve: {len(found)} trained model(s) (seed {seed}): {', '.join(m['name'] for m in found) or 'none'}; "
          f"default model: {default}; new champions are picked up every {params.reload_poll_s:g} s; requests are "
          f"logged to {log_dir}; http://{args.host}:{args.port}/", file=sys.stderr)
    import socket

    try:  # uvicorn reports a taken port as a log line and sys.exit(1): say it clearly first
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as exc:
        raise PipelineError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
                            hint="pick another --port, or stop the process using it") from None
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
