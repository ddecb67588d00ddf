"""The model registry: numbered, immutable versions of trained models and the aliases that point at them.

    registry/versions/v0001/      a copy of models/<name>/seed-<seed>/ (plus model.onnx when exported) and
                                  version.json: number, model, seed, family, registered_at, and free metadata
    registry/aliases.json         {"champion": {"version": 3, "since": "...", "record": "promotions/..."}}
    registry/promotions/*.json    one record per promote decision (pipeline.serving.promote writes them)

MLflow's semantics (versions + a `champion` alias) on plain files, because a version must survive the next
`dvc repro` (which rewrites models/) and a scheduled run must promote without committing to git (GTO's versions
are git tags on commits: docs/production.md says why it is not used). Writes are atomic: a version directory
appears whole or not at all; aliases.json is replaced in one rename, so a reader (the service's hot reload)
sees the old champion or the new one, never a mixture.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline import io
from pipeline.errors import PipelineError

REGISTRY_DIR = "registry"
VERSION_FILE = "version.json"
ALIASES_FILE = "aliases.json"
CHAMPION = "champion"
_VERSION_DIR = re.compile(r"^v(\d{4,})$")


@dataclass(frozen=True)
class Version:
    """One registered version: its number, what it is, and the directory holding its files."""
    number: int
    model: str
    seed: int
    path: Path
    meta: dict[str, Any]

    @property
    def label(self) -> str:
        return f"v{self.number} ({self.model}, seed {self.seed})"


def registry_dir(root: str | os.PathLike) -> Path:
    return Path(root) / REGISTRY_DIR


def _read_version(path: Path) -> Version:
    try:
        meta = io.read_json(path / VERSION_FILE)
        return Version(int(meta["number"]), str(meta["model"]), int(meta["seed"]), path, meta)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PipelineError(f"{path / VERSION_FILE}: not a readable registry version ({exc})",
                            hint="the registry is written only by `python -m pipeline promote`; "
                                 "restore the directory from a backup or remove it") from None


def versions(root: str | os.PathLike) -> list[Version]:
    """Every registered version, oldest first."""
    base = registry_dir(root) / "versions"
    if not base.is_dir():
        return []
    found = [_read_version(p) for p in base.iterdir() if p.is_dir() and _VERSION_DIR.match(p.name)]
    return sorted(found, key=lambda v: v.number)


def get(root: str | os.PathLike, number: int) -> Version:
    path = registry_dir(root) / "versions" / f"v{number:04d}"
    if not (path / VERSION_FILE).is_file():
        known = ", ".join(f"v{v.number}" for v in versions(root)) or "none"
        raise PipelineError(f"registry version v{number} does not exist in {registry_dir(root)} (registered: {known})")
    return _read_version(path)


def register(root: str | os.PathLike, model: str, seed: int, model_dir: Path,
             extra_files: dict[str, Path] | None = None, meta: dict[str, Any] | None = None) -> Version:
    """Copy model_dir (and extra_files, by target name) into the next version; return it.

    Callers serialise registrations (promote runs under the workspace lock); the rename still refuses to
    overwrite a version another process created first.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise PipelineError(f"cannot register {model} (seed {seed}): {model_dir} does not exist",
                            hint=f"train it first: dvc repro train@{model}-{seed}")
    existing = versions(root)
    number = existing[-1].number + 1 if existing else 1
    target = registry_dir(root) / "versions" / f"v{number:04d}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_dir(target.with_name(f".{target.name}.staged")) as tmp:
        shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
        for name, source in (extra_files or {}).items():
            shutil.copy2(source, tmp / name)
        record = {**(meta or {}), "number": number, "model": model, "seed": seed,
                  "registered_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        io.write_json(tmp / VERSION_FILE, record)
    staged = target.with_name(f".{target.name}.staged")
    try:
        os.rename(staged, target)   # fails if target exists: never overwrite a version
    except OSError:
        shutil.rmtree(staged, ignore_errors=True)
        raise PipelineError(f"registry version {target.name} was created by another process meanwhile",
                            hint="run promote again") from None
    return _read_version(target)


def aliases(root: str | os.PathLike) -> dict[str, Any]:
    path = registry_dir(root) / ALIASES_FILE
    if not path.exists():
        return {}
    try:
        data = io.read_json(path)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: unreadable ({exc})") from None
    return data if isinstance(data, dict) else {}


def set_alias(root: str | os.PathLike, alias: str, number: int, **info: Any) -> None:
    """Point `alias` at version `number` (which must exist), in one atomic rename."""
    get(root, number)
    current = aliases(root)
    current[alias] = {**info, "version": number,
                      "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    io.write_json(registry_dir(root) / ALIASES_FILE, current)


def champion(root: str | os.PathLike) -> Version | None:
    """The version the `champion` alias points at, or None before the first promotion."""
    entry = aliases(root).get(CHAMPION)
    return None if entry is None else get(root, int(entry["version"]))


def aliases_stamp(root: str | os.PathLike) -> tuple[int, int] | None:
    """A cheap change marker for aliases.json (mtime_ns, inode): a server polls it to hot-reload the champion."""
    try:
        st = (registry_dir(root) / ALIASES_FILE).stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_ino)
