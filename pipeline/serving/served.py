"""What `serve` predicts with: a model's fastest faithful backend, the champion with hot reload, the log writer.

    load_served(model_dir, onnx, threads)  ONNX Runtime when a checked ONNX export of THIS model file exists (Keras
                                           models: the registry version's model.onnx, or the run's export whose
                                           model.json names the model file's SHA-256), else the registry's loader
                                           (Keras, or scikit-learn's skops file)
    ChampionWatcher                        the registry's champion, reloaded by a background poller when
                                           registry/aliases.json changes: the new model is loaded fully, then one
                                           reference is swapped, so a request in flight finishes on the old one;
                                           a new champion that cannot be loaded leaves the old one serving (the
                                           error is reported, the load retried on every poll)
    LogWriter                              RequestLog appends on a thread of its own (a request only enqueues, into
                                           a bounded queue: when the writer falls behind, rows are dropped and
                                           counted, never waited for)
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.models import registry
from pipeline.serving import releases
from pipeline.serving.export import META_FILE, ONNX_FILE
from pipeline.serving.request_log import RequestLog

ONNX, KERAS, SKLEARN = "onnxruntime", "keras", "scikit-learn"


@dataclass(frozen=True)
class Served:
    """A loaded model: predict(uint8 (N,28,28)) -> probabilities (N,10), and what it is."""
    model: str
    version: int | None      # registry version number; None when served from models/
    seed: int
    backend: str             # onnxruntime | keras | scikit-learn
    predict: Callable[[np.ndarray], np.ndarray]


def onnx_predictor(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """ONNX Runtime over an export (pipeline.serving.export's contract: input pixel/255, (N,28,28,1))."""
    import onnxruntime as ort   # heavy: only when an ONNX model is served

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:   # onnxruntime raises its own exception types for a corrupt or missing file
        raise PipelineError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {exc})") from None
    name = session.get_inputs()[0].name

    def predict(x: np.ndarray) -> np.ndarray:   # InferenceSession.run is thread-safe: no lock
        return np.asarray(session.run(None, {name: registry.preprocess("keras", x)})[0], dtype=np.float32)
    return predict


def locked(predict: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Serialise calls: a Keras model object is not re-entrant."""
    lock = threading.Lock()

    def call(x: np.ndarray) -> np.ndarray:
        with lock:
            return np.asarray(predict(x))
    return call


def matching_export(model_dir: Path, export_dir: Path | None) -> Path | None:
    """export_dir/model.onnx when its model.json says it was exported from model_dir's model file as it is now."""
    if export_dir is None or not (export_dir / ONNX_FILE).is_file() or not (export_dir / META_FILE).is_file():
        return None
    try:
        source = io.read_json(export_dir / META_FILE).get("source_sha256")
    except (OSError, ValueError):
        return None
    keras_file = model_dir / registry.KERAS_FILE
    return export_dir / ONNX_FILE if keras_file.is_file() and source == io.sha256_file(keras_file) else None


def load_served(model: str, version: int | None, seed: int, model_dir: Path, *, onnx: Path | None,
                threads: int, use_onnx: bool = True) -> Served:
    """Load a model for serving: ONNX Runtime when `onnx` is given (and use_onnx), else the registry's loader."""
    if use_onnx and onnx is not None:
        return Served(model, version, seed, ONNX, onnx_predictor(onnx, threads))
    predict = registry.load_predictor(model_dir)
    family = KERAS if (Path(model_dir) / registry.KERAS_FILE).is_file() else SKLEARN
    return Served(model, version, seed, family, locked(predict) if family == KERAS else predict)


class ChampionWatcher:
    """The registry's champion as a Served model (or why there is none), swapped atomically on a new champion.

    `current()` is what a request reads: (Served | None, error | None, number) from one reference. `refresh()` loads
    a new champion fully before it replaces that reference; the poller thread calls it every `poll_s` seconds. A new
    champion that fails to load does not replace a working one: the old one keeps answering, `error` says why the
    new one does not, and every poll retries the load (the files may be repaired without a new promotion).
    """

    def __init__(self, root: Path, *, threads: int, poll_s: float, use_onnx: bool = True, log=None):
        self.root, self.threads, self.poll_s, self.use_onnx = Path(root), threads, poll_s, use_onnx
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self._state: tuple[Served | None, str | None, int | None] = (None, None, None)  # served, error, number
        self._stamp: object = "unread"
        self._failed: int | None = None   # the champion version whose load failed (retried, logged once)
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self) -> tuple[Served | None, str | None, int | None]:
        """(the champion served, why the registry's champion is not served, the served version number).

        (None, error, N): champion vN cannot be loaded and none was served before it; (served, error, M): vM still
        answers while the newer champion cannot be loaded; all None: no champion yet."""
        if self._stamp == "unread":   # first use without a poller (tests, or before start-up finished)
            self.refresh()
        return self._state

    def loaded(self) -> Served | None:
        """The champion when it is loaded, without reading the registry (None: ask current())."""
        return self._state[0] if self._stamp != "unread" else None

    def refresh(self) -> bool:
        """Reload when aliases.json changed (or retry a champion that failed to load); True when the state changed."""
        with self._refresh_lock:
            stamp = releases.aliases_stamp(self.root)
            if stamp == self._stamp and self._failed is None:
                return False
            self._stamp = stamp
            try:
                version = releases.champion(self.root)
            except PipelineError as exc:
                self._failed = None
                self._state = (None, f"the registry's champion cannot be read: {exc}", None)
                self.log(f"serve: {self._state[1]}")
                return True
            if version is None:
                self._failed = None
                changed = self._state != (None, None, None)
                self._state = (None, None, None)
                return changed
            served, error, number = self._state
            if number == version.number and served is not None:
                self._failed = None
                if error is None:
                    return False   # aliases.json rewritten, same champion
                self._state = (served, None, number)   # the failed champion was demoted: back to the served one
                self.log(f"serve: champion v{number} ({served.model}) is the registry's champion again")
                return True
            try:
                onnx = version.path / ONNX_FILE
                new = load_served(version.model, version.number, version.seed, version.path,
                                  onnx=onnx if onnx.is_file() else None, threads=self.threads,
                                  use_onnx=self.use_onnx)
            except (PipelineError, OSError, ValueError) as exc:
                error = f"champion v{version.number} ({version.model}) cannot be loaded: {exc}"
                if served is not None:   # a working champion beats a 503: keep it until the new one loads
                    what, newline, hint = error.partition("\n")   # a PipelineError's hint stays the last line
                    self._state = (served, f"{what}; still serving v{number}{newline}{hint}", number)
                else:
                    self._state = (None, error, version.number)
                first, self._failed = self._failed != version.number, version.number
                if first:   # retried on every poll: say it once per version, not once per poll
                    self.log(f"serve: {self._state[1]}")
                return first
            self._failed = None
            self._state = (new, None, version.number)   # one assignment: the swap
            self.log(f"serve: the default model is now champion v{version.number} ({version.model}, "
                     f"seed {version.seed}, {new.backend})")
            return True

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._poll, name="champion-poller", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.refresh()
            except Exception as exc:   # the poller must outlive one bad read (e.g. a file removed meanwhile)
                self.log(f"serve: champion reload failed ({type(exc).__name__}: {exc})")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class LogWriter:
    """Appends to a RequestLog on its own thread; flushes every `flush_s` seconds and on close.

    A request never waits for the disk: at most `max_queued` rows wait for the writer (give or take the requests
    enqueueing at that very moment); beyond that a row is dropped and counted in `dropped`, and stderr says so at
    most once every `warn_every_s` seconds, and once more at close.
    """

    _CLOSE = object()

    def __init__(self, log: RequestLog, flush_s: float = 5.0, *, max_queued: int = 8192,
                 warn_every_s: float = 60.0, warn=None):
        self.log, self.flush_s = log, flush_s
        self.max_queued, self.warn_every_s = int(max_queued), warn_every_s
        self.warn = warn or (lambda message: print(message, file=sys.stderr))
        self.dropped = 0
        # Unbounded SimpleQueue, the bound checked in put: close's sentinel always gets in, never waits for room
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._drop_lock = threading.Lock()
        self._warned_at: float | None = None
        self._thread: threading.Thread | None = None

    def put(self, image: np.ndarray, model: str, version: int | None, predicted: int, confidence: float) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
                    self._thread.start()
        if self._queue.qsize() >= self.max_queued:
            self._drop()
            return
        self._queue.put((image, model, version, predicted, confidence))

    def _drop(self) -> None:
        with self._drop_lock:
            self.dropped += 1
            now = time.monotonic()
            if self._warned_at is not None and now - self._warned_at < self.warn_every_s:
                return
            self._warned_at, dropped = now, self.dropped
        self.warn(f"serve: request log is behind; dropped {dropped} requests so far (monitoring sees fewer images)")

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self.flush_s)
            except queue.Empty:
                self._safely(self.log.flush)
                continue
            if item is self._CLOSE:
                break
            self._safely(lambda: self.log.append(*item))
        self._safely(self.log.flush)

    def _safely(self, action) -> None:
        try:
            action()
        except Exception as exc:   # a full disk must not stop the service: say so, keep serving
            self.warn(f"serve: request log write failed ({type(exc).__name__}: {exc})")

    def close(self) -> None:
        """Write everything enqueued so far (uvicorn's shutdown calls this)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(self._CLOSE)
            thread.join()
        else:
            self._safely(self.log.flush)
        if self.dropped:
            self.warn(f"serve: request log dropped {self.dropped} requests in all (the writer fell behind)")
