"""Atomic writes and the few file formats stages exchange; nothing else writes outputs.

Every write goes to a temporary sibling and is renamed into place only when complete, so an
interrupted or failed stage never leaves a half-written output that a later stage could consume.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipeline.errors import PipelineError

# history.csv, one row per epoch: written by train, read by publish (scikit-learn models write one row).
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s")


def _umask_mode(base: int) -> int:
    """mkstemp/mkdtemp create private (0600/0700) paths; published outputs get the usual umask mode."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path next to `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _umask_mode(0o666))
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; swap it in for `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, _umask_mode(0o777))
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    """The one JSON encoder for stage outputs: NumPy scalars/arrays and paths as plain JSON values."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(target: str | os.PathLike, payload: Any) -> None:
    write_text(target, json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: file not found", hint="run the stage that produces it first (dvc repro)")
    return json.loads(path.read_text(encoding="utf-8"))


def save_arrays(target: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save named arrays as an uncompressed .npz (fast to load; the data are already small uint8)."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: file not found", hint="run the stage that produces it first (dvc repro)")
    # allow_pickle=False: a data file must never be able to execute code when loaded.
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise PipelineError(
            f"{path}: contains pickled objects or is corrupt; refusing to load it (allow_pickle=False): {exc}",
            hint="re-create it with the stage that produces it (dvc repro)") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def workspace_lock(root: str | os.PathLike = ".", name: str = ".pipeline.lock") -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on the workspace; fail fast if another run holds it."""
    path = Path(root) / name
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise PipelineError(
                f"the pipeline is already running in this workspace ({holder} holds {path})",
                hint="wait for that run to finish; to run in parallel, use a separate clone per worker",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()
