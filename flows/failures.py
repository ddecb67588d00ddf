"""How a failed DVC call becomes a typed failure, and which failures are retried: one home for the serial
flow (flows.pipeline_flow), the stage loop (flows.scheduler) and the Dask workers (flows.parallel).

Only failures that can be transient are retried (classify_failure: a DVC lock held elsewhere, a process killed
by a signal, the network); bad input (exit 2), an exception in stage code and a timeout are not: they fail the
same way every time. A data-validation failure (exit 3, ValidationFailed's code) is terminal.
"""

from __future__ import annotations

import re

from pipeline.errors import ValidationFailed

VALIDATION_EXIT_CODE = ValidationFailed("").exit_code
LOG_TAIL = 40   # output lines a failure message carries


class StageFailed(RuntimeError):
    """A stage's command (or DVC itself) failed. Retried only when `transient` (see classify_failure)."""

    def __init__(self, stage: str, returncode: int, tail: str, transient: bool = False, why: str = ""):
        super().__init__(f"stage '{stage}' failed (dvc exit {returncode}; {why or 'not retried'}):\n{tail}")
        self.stage, self.returncode, self.tail, self.transient, self.why = stage, returncode, tail, transient, why

    def __reduce__(self):   # picklable: a failure raised on a Dask worker travels back to the flow
        return type(self), (self.stage, self.returncode, self.tail, self.transient, self.why)


class StageTimedOut(StageFailed):
    """The stage ran longer than its timeout (params.yaml `orchestration.stage_timeout_s`) and was stopped."""


class ValidationGateFailed(RuntimeError):
    """The data-quality gate rejected the data. Terminal: never retried."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"data validation failed in stage '{stage}' (terminal, not retried):\n{reason}")
        self.stage, self.reason = stage, reason

    def __reduce__(self):
        return type(self), (self.stage, self.reason)


# What DVC or the system print when a failure may pass on retry: another process holds a lock, the process
# was killed by a signal (e.g. the OOM killer while other work ran), the network hiccuped.
_TRANSIENT = re.compile(r"Unable to acquire lock|is busy, it is being blocked by|exited with -\d+|"
                        r"Temporary failure in name resolution|Connection (reset|refused)|timed out|"
                        r"Too many open files|Resource temporarily unavailable")


def tail(lines: list[str]) -> str:
    """The last LOG_TAIL output lines, as a failure message carries them."""
    return "\n".join(lines[-LOG_TAIL:])


def stage_exit_code(lines: list[str]) -> int | None:
    """The stage command's exit code as DVC reports it (`... exited with 3`), or None when DVC did not say."""
    found = re.search(r"exited with (-?\d+)", "\n".join(lines))
    return int(found.group(1)) if found else None


def classify_failure(lines: list[str]) -> tuple[bool, str]:
    """(transient?, why) for a failed `dvc repro`. Never transient: bad input (a stage exit 2), the data gate
    (exit 3), an exception in stage code (a traceback): those fail the same way every time."""
    text = "\n".join(lines)
    code = stage_exit_code(lines)
    if code == 2:
        return False, "bad input or settings (exit 2): not retried"
    if code == VALIDATION_EXIT_CODE:
        return False, "rejected by the data gate (exit 3): not retried"
    if "Traceback (most recent call last)" in text:
        return False, "an exception in stage code: not retried"
    match = _TRANSIENT.search(text)
    if match:
        return True, f"may be transient ({match.group(0)}): retried"
    return False, "not known to be transient: not retried"


def step_failed(stage: str, returncode: int, lines: list[str], step: str, classify: bool = True) -> StageFailed:
    """The failure of a DVC call around a stage (`step`: "pulling its inputs from the DVC remote", ...).

    classify: retried when its output looks transient (on a Dask worker, where Prefect retries the task);
    without it the coordinator reports it as it is, since nothing there would retry it.
    """
    if not classify:
        return StageFailed(stage, returncode, tail(lines), why=f"{step} failed")
    transient, why = classify_failure(lines)
    return StageFailed(stage, returncode, tail(lines), transient=transient, why=f"{step} failed; {why}")


def is_validation_failure(returncode: int, lines: list[str]) -> bool:
    """DVC exits non-zero and reports the stage command's exit code as `exited with 3`."""
    return returncode != 0 and stage_exit_code(lines) == VALIDATION_EXIT_CODE


def _validation_reason(lines: list[str]) -> str:
    """The CLI's `error [stage]: ...` paragraph (what failed and how to fix it), else the output tail."""
    start = next((i for i, line in enumerate(lines) if re.match(r"error \[[\w@.-]+\]:", line)), None)
    if start is None:
        return tail(lines)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("ERROR: ")), len(lines))
    return "\n".join(lines[start:end])


def raise_for_failure(stage: str, returncode: int, status: str, lines: list[str], timeout_s: float | None,
                      log) -> None:
    """Raise the typed failure of a `dvc repro` of `stage` (timeout, data gate, other); nothing on success."""
    if status == "timed out":
        raise StageTimedOut(stage, returncode, tail(lines),
                            why=f"stopped after its {timeout_s:g} s timeout (orchestration.stage_timeout_s): "
                                "not retried")
    if returncode == 0:
        return
    if is_validation_failure(returncode, lines):
        reason = _validation_reason(lines)
        log.error("validation gate rejected the data (terminal, no retry):\n%s", reason)
        raise ValidationGateFailed(stage, reason)
    transient, why = classify_failure(lines)
    log.error("stage '%s' failed: %s", stage, why)
    raise StageFailed(stage, returncode, tail(lines), transient=transient, why=why)


def retry_if_transient(task, task_run, state) -> bool:
    """Prefect's retry condition: only a StageFailed that classify_failure called transient is retried."""
    try:
        state.result()
    except StageFailed as exc:
        return exc.transient
    except Exception:
        return False
    return False


def failure_of(name: str, state) -> BaseException:
    """The exception a finished, not completed Prefect state of stage `name` carries."""
    try:
        state.result()
    except BaseException as exc:   # noqa: BLE001 - the flow re-raises the first one
        return exc
    return RuntimeError(f"stage '{name}' ended in state {state.type.value}")


def failed_status(error: BaseException) -> str:
    """A failed stage's status in the run's outcomes."""
    return "failed (validation)" if isinstance(error, ValidationGateFailed) else "failed"
