"""Progress for long work: a heartbeat for calls that report nothing themselves (a scikit-learn fit), and a
progress line with a time estimate for work done in batches (predictions).

Lines go to stderr, one per report (no carriage returns), so they show in a terminal, in `dvc repro`'s output
and in the Prefect logs alike. Short work prints nothing: the first report comes after `every_s` seconds.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable, Iterator

DEFAULT_EVERY_S = 10.0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


@contextlib.contextmanager
def heartbeat(label: str, every_s: float | None = None, say: Callable[[str], None] = _say) -> Iterator[None]:
    """While the block runs, say `<label>: still running, <elapsed>` every `every_s` seconds.

    For calls that cannot report progress themselves; it gives no estimate, because nothing tells how far the
    call has got."""
    every_s = every_s or DEFAULT_EVERY_S
    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not done.wait(every_s):
            say(f"{label}: still running, {_duration(time.monotonic() - started)} elapsed")

    thread = threading.Thread(target=beat, name=f"heartbeat {label}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class BatchProgress:
    """`update(n)` after each batch; says `<label>: done/total <unit>, <elapsed> elapsed, about <eta> left` at
    most every `every_s` seconds, the estimate from the rate so far."""

    def __init__(self, label: str, total: int, unit: str = "images", every_s: float | None = None,
                 say: Callable[[str], None] = _say):
        self.label, self.total, self.unit, self.say = label, int(total), unit, say
        self.every_s = DEFAULT_EVERY_S if every_s is None else every_s
        self.done = 0
        self.started = self.last = time.monotonic()

    def update(self, n: int) -> None:
        self.done += int(n)
        now = time.monotonic()
        if now - self.last < self.every_s or self.done >= self.total:
            return
        self.last = now
        elapsed = now - self.started
        left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        self.say(f"{self.label}: {self.done:,}/{self.total:,} {self.unit}, {_duration(elapsed)} elapsed, "
                 f"about {_duration(left)} left")
