"""Content fingerprint of the data source and its persisted state. The source is this project's params.yaml
`fetch.source`; in any other DVC project (no `fetch.source`), its data sources as DVC declares them
(flows.dag.data_sources: what `dvc add` tracks, and stage dependencies outside the project).

- local directory (IDX .gz / CSV files): SHA-256 over the sorted relative file names and their contents;
  a file whose (size, mtime) match the last seen fingerprint reuses its recorded content hash (cheap).
- http(s) URL of a mirror: HEAD of each official IDX file -> ETag / Last-Modified / Content-Length.
- another project's sources: the same per file (a directory file by file), HEAD for a URL.
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
from pipeline.params import FetchParams, load_params, section

from flows import STATE_DIR
from flows.dag import data_sources

STATE_FILE = "fingerprint.json"
DEFAULT_TIMEOUT_S = 30.0   # HEAD requests for another project's URL sources


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


def _fetch_source(workspace: str | os.PathLike) -> tuple[str, float] | None:
    """configured_source where params.yaml has a `fetch.source` (this project), else None."""
    path = Path(workspace) / "params.yaml"
    fetch = (load_params(path) if path.exists() else {}).get("fetch")
    return configured_source(workspace) if isinstance(fetch, dict) and "source" in fetch else None


def watched_sources(workspace: str | os.PathLike) -> tuple[list[str], float]:
    """What the watcher fingerprints: [`fetch.source`] where params.yaml has one (this project; its section is
    checked as strictly as ever), else the DVC project's data sources. Raises PipelineError when there is none."""
    own = _fetch_source(workspace)
    if own is not None:
        return [own[0]], own[1]
    sources = data_sources(workspace)
    if not sources:
        raise PipelineError(f"{workspace}: no data source to watch (no params.yaml `fetch.source`, nothing "
                            "tracked with `dvc add`, no stage dependency outside the project)",
                            hint="`dvc add` the data, or declare the external path as a stage dependency "
                                 "(docs/orchestration.md, 'Any DVC project')")
    return sources, DEFAULT_TIMEOUT_S


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
        files[rel] = _file_entry(path, cached.get(rel))
        digest.update(f"{rel}\0{files[rel]['sha256']}\n".encode())
    if not files:
        raise PipelineError(f"fetch.source {str(directory)!r} holds no files",
                            hint="install dataset-fashion-mnist or copy the IDX files / CSVs there")
    return {"kind": "dir", "source": str(directory), "digest": digest.hexdigest(), "files": files, "at": _now()}


def _file_entry(path: Path, old: dict[str, Any] | None) -> dict[str, Any]:
    """size, mtime and SHA-256 of `path`; the hash recorded in `old` is reused when size and mtime match."""
    st = path.stat()
    old = old or {}
    if old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns and old.get("sha256"):
        sha = old["sha256"]
    else:
        sha = io.sha256_file(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}


def _head(url: str, timeout_s: float, offline_hint: str) -> dict[str, Any]:
    """ETag, Last-Modified and Content-Length of `url` (a HEAD request)."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            headers = resp.headers
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PipelineError(f"cannot fingerprint {url}: HEAD request failed ({reason})", hint=offline_hint) from None
    found = {k.lower(): headers.get(k) for k in ("ETag", "Last-Modified", "Content-Length")}
    if not any(found.values()):
        raise PipelineError(f"{url}: the server sent no ETag, Last-Modified or Content-Length",
                            hint="changes there cannot be detected; use a local copy of the data instead")
    return found


def fingerprint_url(base_url: str, timeout_s: float) -> dict[str, Any]:
    base = base_url if base_url.endswith("/") else base_url + "/"
    files: dict[str, dict[str, Any]] = {}
    hint = ("this machine may be offline; the watcher needs the mirror to be reachable for a URL source. "
            "Offline, set fetch.source to a local directory (e.g. /usr/share/datasets/fashion-mnist)")
    for stems in IDX_NAMES.values():
        for stem in stems:
            files[f"{stem}.gz"] = _head(base + f"{stem}.gz", timeout_s, hint)
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"kind": "url", "source": base, "digest": digest, "files": files, "at": _now()}


def fingerprint_sources(sources: list[str], previous: dict[str, Any] | None = None,
                        timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Another DVC project's data sources (absolute paths: files or directories, or URLs), file by file."""
    label = ", ".join(sources)
    cached = (previous.get("files") or {}) if previous and previous.get("kind") == "sources" \
        and previous.get("source") == label else {}
    files: dict[str, dict[str, Any]] = {}
    for source in sources:
        if source.startswith(("http://", "https://")):
            files[source] = _head(source, timeout_s, "this machine may be offline; the watcher needs the URL "
                                                     "to be reachable")
            continue
        root = Path(source)
        if not root.exists():
            raise PipelineError(f"data source {source} does not exist",
                                hint="restore it, or correct the `.dvc` file or stage dependency that names it")
        for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]:
            files[path.as_posix()] = _file_entry(path, cached.get(path.as_posix()))
    # content only: a file touched but not changed keeps its digest
    digest = hashlib.sha256(json.dumps({k: v.get("sha256", v) for k, v in files.items()}, sort_keys=True).encode())
    return {"kind": "sources", "source": label, "digest": digest.hexdigest(), "files": files, "at": _now()}


def compute(workspace: str | os.PathLike, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fingerprint of `workspace`'s data source (watched_sources); `previous` (same source) enables the
    stat cache."""
    own = _fetch_source(workspace)
    if own is not None:
        source, timeout_s = own
        if source.startswith(("http://", "https://")):
            return fingerprint_url(source, timeout_s)
        return fingerprint_dir(Path(source), previous)
    sources, timeout_s = watched_sources(workspace)
    return fingerprint_sources(sources, previous, timeout_s)


def changed(current: dict[str, Any], last_success: dict[str, Any] | None) -> bool:
    if not last_success:
        return True
    return (current.get("source"), current.get("digest")) != (last_success.get("source"), last_success.get("digest"))
