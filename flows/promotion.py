"""The promotion step after a successful whole-DAG run: `python -m pipeline promote --json` in the workspace, its
record as a Prefect markdown artifact, and the record handed back to the flow.

A subprocess, like every stage, so that Keras (loaded to re-evaluate a Keras champion or export a promoted Keras
model to ONNX) never enters the flow process. It runs only where params.yaml has a `promote` section (another
DVC project has none). A refused challenger is a decision (exit 0), not a failure; promote's own errors (missing
inputs) fail the run with promote's message.
pipeline_flow sends `promotion_message(record)` as the `promotion` notification (flows/notify.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from pipeline.errors import PipelineError
from pipeline.params import load_params

from flows.dvc_calls import dvc_env

SECTION = "promote"
ARTIFACT_KEY = "fmnist-promotion"


class PromotionFailed(PipelineError):
    """`python -m pipeline promote` exited non-zero: its stderr says why (missing inputs, a bad setting)."""


def wants_promotion(ws: Path) -> bool:
    path = ws / "params.yaml"
    return path.exists() and SECTION in load_params(path)


def _pct(m: dict[str, Any]) -> str:
    return f"{100 * m['accuracy']:.2f}% (95% CI {100 * m['ci95'][0]:.2f}-{100 * m['ci95'][1]:.2f}%)"


def promotion_markdown(record: dict[str, Any]) -> str:
    """The record for a person (pure): decision, reason, both models on the same images, McNemar, the rule."""
    ch, champ, test, rule = record["challenger"], record["champion"], record["mcnemar"], record["rule"]
    before, after = record["champion_before"], record["champion_after"]
    out = [f"# Promotion: {record['decision'].upper()}", "", record["reason"][0].upper() + record["reason"][1:] + ".",
           "", f"Champion: {'none' if before is None else f'v{before}'} -> {'none' if after is None else f'v{after}'}",
           "", "| role | model | seed | version | test accuracy | correct / images | champion re-evaluated |",
           "|---|---|---|---|---|---|---|",
           f"| challenger | {ch['model']} | {ch['seed']} | {ch['version'] or ''} | {_pct(ch)} | "
           f"{ch['correct']} / {ch['n']} | |"]
    if champ:
        out.append(f"| champion | {champ['model']} | {champ['seed']} | {champ['version']} | {_pct(champ)} | "
                   f"{champ['correct']} / {champ['n']} | {'yes' if champ['re_evaluated'] else 'no'}: "
                   f"{champ['why']} |")
    out.append("")
    if test:
        out += [f"Exact McNemar on the same {ch['n']} images: {test['b_challenger_right_champion_wrong']} only the "
                f"challenger gets right, {test['c_challenger_wrong_champion_right']} only the champion; "
                f"p = {test['p_exact']:.3g}.", ""]
    out += [f"Rule: refused below {rule['min_accuracy']:g} test accuracy or when significantly worse "
            f"(exact McNemar p < {rule['alpha']:g} and a lower accuracy); candidates: {', '.join(rule['candidates'])}.",
            f"Test set: `{record['test_set']['path']}`, SHA-256 `{record['test_set']['sha256']}`.",
            f"Record: `registry/{record['record']}`."]
    return "\n".join(out) + "\n"


def promotion_message(record: dict[str, Any]) -> tuple[str, str]:
    """(subject, body) for a notification about this decision (pure): what flows/notify.py will send."""
    ch = record["challenger"]
    subject = f"fmnist-pipeline: {ch['model']} (seed {ch['seed']}) {record['decision']}"
    return subject, promotion_markdown(record)


def run_promote(ws: Path, timeout_s: float | None = None) -> dict[str, Any]:
    """`python -m pipeline promote --json` in `ws` with this interpreter (the stages' environment): the record."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", "promote", "--json"], cwd=ws, env=dvc_env(),
                          capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise PromotionFailed(proc.stderr.strip() or f"python -m pipeline promote exited {proc.returncode}")
    return json.loads(proc.stdout)


@task(name="promote", persist_result=False)
def promote_task(workspace: str, timeout_s: float | None = None) -> dict[str, Any]:
    """Decide on the run's best model; publish the record as the `fmnist-promotion` artifact; return it."""
    log = get_run_logger()
    record = run_promote(Path(workspace), timeout_s)
    log.info("promotion: %s (%s); record registry/%s", record["decision"], record["reason"], record["record"])
    create_markdown_artifact(markdown=promotion_markdown(record), key=ARTIFACT_KEY,
                             description=f"Promotion decision (registry/{record['record']})")
    return record
