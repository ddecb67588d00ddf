"""`python -m flows run|watch|serve|monitor`: one pipeline run, one dataset check, the long-running service, or one
check of what the model service saw.

Exit codes: 0 success; 3 the data-quality gate rejected the data (terminal), or (monitor) the served inputs crossed
a limit; 1 any other failure; 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.errors import PipelineError

import flows  # noqa: F401  (sets the Prefect/DVC environment defaults before prefect is imported)
from flows.failures import ValidationGateFailed


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workspace", type=Path, default=Path(os.getcwd()),
                       help="repository root with dvc.yaml/params.yaml (default: current directory)")
        p.add_argument("--target", dest="targets", action="append", metavar="STAGE",
                       help="run only this stage and what it depends on (repeatable; default: every stage)")

    run = sub.add_parser("run", help="run the DVC pipeline once (one Prefect task per stage)")
    common(run)
    run.add_argument("--retries", type=int, default=2, help="retries for transient stage failures (default: 2)")
    run.add_argument("--force", action="store_true", help="re-run stages even when DVC has them cached")
    run.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                     help="run independent stages at the same time on a local Dask cluster of N worker processes "
                          "(default: 1, one stage at a time in this checkout; docs/orchestration.md)")
    run.add_argument("--dask-address", metavar="tcp://HOST:PORT",
                     help="use the Dask scheduler at this address (dask-jobqueue, dask-kubernetes, `dask scheduler`) "
                          "instead of a local cluster")

    watch = sub.add_parser("watch", help="check the data source; run the pipeline if it changed")
    common(watch)
    watch.add_argument("--once", action="store_true", help="check once and exit (default: loop every --every s)")
    watch.add_argument("--every", type=float, default=1800.0, help="seconds between checks without --once")

    serve = sub.add_parser("serve", help="serve deployments: scheduled watcher + event-triggered pipeline")
    common(serve)
    when = serve.add_mutually_exclusive_group()
    when.add_argument("--cron", help='cron schedule of the dataset check (default: params.yaml orchestrate.cron, '
                                     'else "*/30 * * * *")')
    when.add_argument("--interval", type=float, metavar="S", help="check the dataset every S seconds instead")
    serve.add_argument("--no-check-now", dest="check_now", action="store_false",
                       help="do not check the dataset right after start-up")

    monitor = sub.add_parser("monitor", help="compare the service's logged requests with the training data "
                                             "(python -m pipeline monitor as a flow; exit 3 on an alert)")
    monitor.add_argument("--workspace", type=Path, default=Path(os.getcwd()),
                         help="repository root with params.yaml and monitoring/requests (default: current directory)")
    start = monitor.add_mutually_exclusive_group()
    start.add_argument("--window-hours", type=float,
                       help="the H hours before --until (default: params.yaml monitor.window_hours)")
    start.add_argument("--since", help="window start, ISO 8601 (naive = UTC)")
    monitor.add_argument("--until", help="window end, ISO 8601 (default: now)")
    return parser


def _monitor(workspace: Path, args) -> int:
    from flows.monitor import ALERT_EXIT_CODE, ALERT_STATE, monitor_flow   # Prefect loads lazily

    state = monitor_flow(workspace=str(workspace), window_hours=args.window_hours, since=args.since,
                         until=args.until, return_state=True)
    if state.is_completed():
        return 0
    print(f"error [monitor]: {state.message}", file=sys.stderr)
    if state.name == ALERT_STATE:
        return ALERT_EXIT_CODE
    error = state.result(raise_on_failure=False)
    return error.exit_code if isinstance(error, PipelineError) else 1


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, ValidationGateFailed):
        return 3
    if isinstance(exc, PipelineError):
        return exc.exit_code
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workspace = args.workspace.resolve()
    try:
        if args.command == "monitor":
            return _monitor(workspace, args)
        if args.command == "run":
            from flows.pipeline_flow import pipeline_flow   # Prefect loads lazily

            pipeline_flow(workspace=str(workspace), targets=args.targets, retries=args.retries, force=args.force,
                          workers=args.workers, dask_address=args.dask_address)
        elif args.command == "watch":
            import time

            from flows.watcher import watcher_flow   # Prefect loads lazily

            if args.once:
                watcher_flow(workspace=str(workspace), mode="run", targets=args.targets)
                return 0
            while True:   # a failed check or run is logged and retried at the next tick
                try:
                    watcher_flow(workspace=str(workspace), mode="run", targets=args.targets)
                except Exception as exc:
                    print(f"error [watch]: {exc}", file=sys.stderr)
                time.sleep(args.every)
        else:
            from flows.deployments import serve   # Prefect loads lazily

            serve(workspace, cron=args.cron, interval=args.interval, targets=args.targets, check_now=args.check_now)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the flow's logs already hold the details
        print(f"error [{args.command}]: {exc}", file=sys.stderr)
        return _exit_code(exc)
    return 0
