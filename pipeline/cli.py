"""The one CLI: `python -m pipeline <stage> [options]`; dvc.yaml calls exactly these commands.

Each stage module exposes `add_cli(parser)` (its arguments) and `cli(args)` (parse -> call core -> write).
Modules are imported lazily so that `python -m pipeline ingest` never pays for TensorFlow.
A PipelineError becomes a one-paragraph message on stderr and a non-zero exit, never a bare traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from pipeline.errors import PipelineError
from pipeline.io import workspace_lock

# stage name -> (module, one-line help)
STAGES = {
    "fetch": ("pipeline.data.fetch", "materialise the Kaggle-layout CSVs from IDX files, CSVs or a URL"),
    "ingest": ("pipeline.data.ingest", "CSV -> typed uint8 Parquet (pyarrow)"),
    "validate": ("pipeline.data.validate.stage", "Great Expectations data-quality gate on the Parquet files"),
    "convert": ("pipeline.data.convert", "validated Parquet -> model-ready arrays"),
    "images": ("pipeline.data.images", "optional PNG tree images/<split>/<class>/<index>.png"),
    "split": ("pipeline.data.split", "stratified, seeded train/validation split"),
    "train": ("pipeline.training.train", "train one registered model"),
    "evaluate": ("pipeline.training.evaluate", "evaluate one trained model on the official test set"),
    "publish": ("pipeline.publish", "comparison tables (ours vs published) and plots"),
    "profile": ("pipeline.data.profile", "rebuild the data gate's reference profile from the official files"),
    "predict": ("pipeline.serving.predict", "predict images, a directory, a Kaggle CSV or an NPZ with a trained model"),
    "export": ("pipeline.serving.export", "export a trained Keras model to ONNX, checked against Keras on test images"),
    "serve": ("pipeline.serving.serve", "HTTP service: POST /predict, GET /models, and a page to try a model on an image"),
    "promote": ("pipeline.serving.promote", "after a run: make its best model the registry's champion unless it is "
                                            "significantly worse (records the decision)"),
    "monitor": ("pipeline.serving.monitor", "compare the service's logged requests of a time window with the training "
                                            "data and test set; exit 3 when a limit is crossed"),
}
# Commands that only read the workspace: they run beside a `dvc repro` (serve for hours) without its lock.
# monitor writes only its own monitoring/report.* (atomically), which no stage reads.
READ_ONLY = frozenset({"predict", "serve", "monitor"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="stage", metavar="<stage>", required=True)
    for name, (module, help_text) in STAGES.items():
        stage_parser = sub.add_parser(name, help=help_text, description=help_text)
        stage_parser.set_defaults(_module=module)
        stage_parser.add_argument("--params", default=argparse.SUPPRESS, help="params file (default: params.yaml)")
        # Each stage's own arguments are added on demand (see main) to keep imports lazy.
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    stage = next((a for a in argv if a in STAGES), None)
    if stage is not None:
        module = importlib.import_module(STAGES[stage][0])
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        module.add_cli(subparsers.choices[stage])
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        # One stage at a time per workspace: a second invocation fails fast instead of racing on outputs.
        if args.stage in READ_ONLY:
            importlib.import_module(args._module).cli(args)
        else:
            with workspace_lock("."):
                importlib.import_module(args._module).cli(args)
    except PipelineError as exc:
        print(f"error [{args.stage}]: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"error [{args.stage}]: interrupted; outputs were left as they were before this run", file=sys.stderr)
        return 130
    print(f"{args.stage}: done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0
