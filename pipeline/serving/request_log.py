"""The served-request log: each prediction's 28x28 input, class and confidence, as a bounded rolling Parquet log.

    monitoring/requests/part-<unix_ns>-<rows>.parquet   columns: time (timestamp[us, UTC]), model (string),
        version (int32, null when the model was not served from the registry), predicted (int8 class index),
        confidence (float32), image (binary: 784 uint8 pixels, row-major)

The service appends (RequestLog: buffered, one atomic part file per flush, the oldest parts deleted once the
log holds more than `max_rows`); `monitor` reads a time window back (read_window).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline import io

LOG_DIR = "monitoring/requests"
_PIXELS = 28 * 28


def _schema():
    import pyarrow as pa

    return pa.schema([("time", pa.timestamp("us", tz="UTC")), ("model", pa.string()), ("version", pa.int32()),
                      ("predicted", pa.int8()), ("confidence", pa.float32()), ("image", pa.binary(_PIXELS))])


def _parts(log_dir: Path) -> list[tuple[int, int, Path]]:
    """(start ns, rows, path) of every complete part file, oldest first."""
    out = []
    for path in log_dir.glob("part-*-*.parquet"):
        _, start, rows = path.stem.split("-")
        if start.isdigit() and rows.isdigit():
            out.append((int(start), int(rows), path))
    return sorted(out)


class RequestLog:
    """Thread-safe appender; flushes every `flush_rows` rows or `flush_s` seconds (checked on append) and on close."""

    def __init__(self, log_dir: str | os.PathLike, max_rows: int, flush_rows: int = 256, flush_s: float = 5.0):
        self.log_dir, self.max_rows = Path(log_dir), int(max_rows)
        self.flush_rows, self.flush_s = int(flush_rows), float(flush_s)
        self._lock = threading.Lock()
        self._rows: list[tuple] = []
        self._first = time.monotonic()

    def append(self, image: np.ndarray, model: str, version: int | None, predicted: int, confidence: float) -> None:
        pixels = np.ascontiguousarray(image, dtype=np.uint8).reshape(_PIXELS).tobytes()
        row = (datetime.now(timezone.utc), model, version, int(predicted), float(confidence), pixels)
        with self._lock:
            if not self._rows:
                self._first = time.monotonic()
            self._rows.append(row)
            due = len(self._rows) >= self.flush_rows or time.monotonic() - self._first >= self.flush_s
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, []
            if rows:
                self._write(rows)

    close = flush

    def _write(self, rows: list[tuple]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = list(zip(*rows))
        table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, _schema())], schema=_schema())
        self.log_dir.mkdir(parents=True, exist_ok=True)
        target = self.log_dir / f"part-{time.time_ns()}-{len(rows)}.parquet"
        with io.atomic_path(target) as tmp:
            pq.write_table(table, tmp)
        parts = _parts(self.log_dir)
        total = sum(n for _, n, _ in parts)
        for _, n, path in parts[:-1]:   # never the part just written
            if total <= self.max_rows:
                break
            path.unlink(missing_ok=True)
            total -= n


def read_window(log_dir: str | os.PathLike, since: datetime | None = None,
                until: datetime | None = None) -> dict[str, np.ndarray]:
    """Logged requests with since <= time < until (either bound optional), oldest first, as arrays:
    time (datetime64[us]), model, version (-1 = none), predicted, confidence, images (N, 28, 28) uint8."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = [p for _, _, p in _parts(Path(log_dir))]
    tables = []
    for path in paths:
        try:
            tables.append(pq.read_table(path, schema=_schema()))
        except FileNotFoundError:   # rolled away between listing and reading
            continue
    table = pa.concat_tables(tables) if tables else _schema().empty_table()
    when = table.column("time").to_numpy().astype("datetime64[us]")
    keep = np.ones(len(when), dtype=bool)
    if since is not None:
        keep &= when >= np.datetime64(since.astimezone(timezone.utc).replace(tzinfo=None), "us")
    if until is not None:
        keep &= when < np.datetime64(until.astimezone(timezone.utc).replace(tzinfo=None), "us")
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(when[idx], kind="stable")]
    images = np.frombuffer(b"".join(table.column("image").to_pylist()), dtype=np.uint8) if len(table) else \
        np.zeros(0, np.uint8)
    return {"time": when[idx],
            "model": np.asarray(table.column("model").to_pylist(), dtype=object)[idx],
            "version": table.column("version").fill_null(-1).to_numpy().astype(np.int32)[idx],
            "predicted": table.column("predicted").to_numpy().astype(np.int8)[idx],
            "confidence": table.column("confidence").to_numpy().astype(np.float32)[idx],
            "images": images.reshape(-1, 28, 28)[idx]}
