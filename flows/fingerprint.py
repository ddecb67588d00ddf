"""Content fingerprint of the configured data source (params.yaml `fetch.source`) and its persisted state.

- local directory (IDX .gz / CSV files): SHA-256 over the sorted relative file names and their contents;
  a file whose (size, mtime) match the last seen fingerprint reuses its recorded content hash (cheap).
- http(s) URL of a mirror: HEAD of each official IDX file -> ETag / Last-Modified / Content-Length.
State lives in `<workspace>/.prefect-state/fingerprint.json` (written atomically): `last_success` is the
fingerprint of the data the last SUCCESSFUL pipeline run processed; `last_seen` only feeds the stat cache.
Not about deciding or running anything: see flows.watcher.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline import io
from pipeline.data.fetch import IDX_NAMES
from pipeline.errors import PipelineError
from pipeline.params import FetchParams, section

from flows import STATE_DIR

STATE_FILE = "fingerprint.json"


def state_path(workspace: str | os.PathLike) -> Path:
    return Path(workspace) / STATE_DIR / STATE_FILE


def load_state(workspace: str | os.PathLike) -> dict[str, Any]:
    """The persisted state, or {} when there is none (or it is unreadable: then everything counts as changed)."""
    path = state_path(workspace)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(workspace: str | os.PathLike, **updates: Any) -> dict[str, Any]:
    state = load_state(workspace)
    state.update(updates)
    io.write_json(state_path(workspace), state)
    return state


def configured_source(workspace: str | os.PathLike) -> tuple[str, float]:
    """`fetch.source` (relative paths resolved against the workspace, as DVC runs there) and `fetch.timeout_s`."""

    params = section(FetchParams, "fetch", path=Path(workspace) / "params.yaml")
    source = params.source
    if not source.startswith(("http://", "https://")):
        source = str((Path(workspace) / source).resolve())
    return source, float(params.timeout_s)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def fingerprint_dir(directory: Path, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    if not directory.is_dir():
        raise PipelineError(f"fetch.source {str(directory)!r} is not a directory",
                            hint="point params.yaml fetch.source at the directory of IDX files or CSVs")
    cached = {}
    if previous and previous.get("kind") == "dir" and previous.get("source") == str(directory):
        cached = previous.get("files") or {}
    files: dict[str, dict[str, Any]] = {}
    digest = hashlib.sha256()
    paths = sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in paths:
        rel = path.relative_to(directory).as_posix()
        st = path.stat()
        old = cached.get(rel) or {}
        if old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns and old.get("sha256"):
            sha = old["sha256"]
        else:
            sha = io.sha256_file(path)
        files[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
        digest.update(f"{rel}\0{sha}\n".encode())
    if not files:
        raise PipelineError(f"fetch.source {str(directory)!r} holds no files",
                            hint="install dataset-fashion-mnist or copy the IDX files / CSVs there")
    return {"kind": "dir", "source": str(directory), "digest": digest.hexdigest(), "files": files, "at": _now()}


def fingerprint_url(base_url: str, timeout_s: float) -> dict[str, Any]:

    base = base_url if base_url.endswith("/") else base_url + "/"
    files: dict[str, dict[str, Any]] = {}
    for stems in IDX_NAMES.values():
        for stem in stems:
            url = base + f"{stem}.gz"
            request = urllib.request.Request(url, method="HEAD")
            try:
                with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                    headers = resp.headers
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise PipelineError(
                    f"cannot fingerprint {url}: HEAD request failed ({reason})",
                    hint="this machine may be offline; the watcher needs the mirror to be reachable for a URL "
                         "source. Offline, set fetch.source to a local directory "
                         "(e.g. /usr/share/datasets/fashion-mnist)",
                ) from None
            files[f"{stem}.gz"] = {k.lower(): headers.get(k) for k in ("ETag", "Last-Modified", "Content-Length")}
            if not any(files[f"{stem}.gz"].values()):
                raise PipelineError(f"{url}: the server sent no ETag, Last-Modified or Content-Length",
                                    hint="changes on this mirror cannot be detected; use a local directory source")
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"kind": "url", "source": base, "digest": digest, "files": files, "at": _now()}


def compute(workspace: str | os.PathLike, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fingerprint of `workspace`'s configured source; `previous` (same source) enables the stat cache."""
    source, timeout_s = configured_source(workspace)
    if source.startswith(("http://", "https://")):
        return fingerprint_url(source, timeout_s)
    return fingerprint_dir(Path(source), previous)


def changed(current: dict[str, Any], last_success: dict[str, Any] | None) -> bool:
    if not last_success:
        return True
    return (current.get("source"), current.get("digest")) != (last_success.get("source"), last_success.get("digest"))
