"""dvc.yaml's stage declarations as written (templates such as `${...}` left unexpanded), read with plain YAML.

For code that needs a stage's command words or declared outputs without DVC: the stage CLI (a path option that
a hand-run stage omits) and flows.dag (where a stage writes). DVC's own index (flows.dag) is what expands
`foreach`/`matrix`; this reader does not, by design: it answers "what does dvc.yaml say", cheaply.
"""

from __future__ import annotations

import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

OUTPUT_KINDS = ("outs", "metrics", "plots")


@lru_cache(maxsize=None)
def _stages(path: Path, mtime_ns: int) -> dict[str, dict[str, Any]]:
    import yaml

    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages") or {}


def stages(dvc_file: str | Path) -> dict[str, dict[str, Any]]:
    """stage name -> its definition in `dvc_file` (cached per file and modification time)."""
    path = Path(dvc_file).resolve()
    return _stages(path, path.stat().st_mtime_ns)


def outputs(dvc_file: str | Path) -> dict[str, dict[str, tuple[str, ...]]]:
    """stage -> {"outs"|"metrics"|"plots": the paths declared, as written}."""
    return {name: {kind: tuple(next(iter(e)) if isinstance(e, dict) else str(e)
                               for e in (definition or {}).get(kind) or [])
                   for kind in OUTPUT_KINDS}
            for name, definition in stages(dvc_file).items()}


def command(dvc_file: str | Path, stage: str) -> str:
    """The stage's `cmd` as one string ("" when the stage or its command is absent)."""
    cmd = (stages(dvc_file).get(stage) or {}).get("cmd", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def command_option(stage: str, option: str, dvc_file: str | Path = "dvc.yaml") -> Path:
    """The path dvc.yaml's `stage` command passes as `option`, for a hand-run stage that omits it.

    dvc.yaml is the one home of the pipeline's paths, so the CLI reads them from there instead of repeating them.
    """
    dvc_file = Path(dvc_file)
    if not dvc_file.exists():
        raise PipelineError(f"{option} not given, and {dvc_file} (where the {stage} stage's paths live) not found",
                            hint=f"pass {option}, or run from the repository root")
    words = shlex.split(command(dvc_file, stage))
    at = words.index(option) + 1 if option in words else len(words)
    if at >= len(words) or "${" in words[at]:
        raise PipelineError(f"{dvc_file}: the {stage} stage's command passes no fixed {option}",
                            hint=f"pass {option}")
    return Path(words[at])
