"""The committed results (docs/results/report/) and the inputs they are rebuilt from (docs/results/run/).

    python -m scripts.results update   after `dvc repro`: snapshot this workspace's publish inputs into
                                       docs/results/run/, then rebuild docs/results/report/ from them (`make results`)
    python -m scripts.results render --out DIR
                                       rebuild the report from the committed snapshot into DIR (what
                                       tests/test_results.py compares with docs/results/report/)

The snapshot keeps the workspace layout of exactly what dvc.yaml's publish stage reads: params.yaml, the
metrics JSON and the true/predicted labels of every run (the class probabilities are left out: publish does not
read them), each run's train.json and history.csv, the split's class counts and the data gate's report. The one
large input, the official test set, is rebuilt from the IDX files (Debian's dataset-fashion-mnist, or
$FMNIST_IDX_DIR) and must carry the labels the predictions were scored against. The report is rendered by
dvc.yaml's own publish command, run in a scratch copy of the snapshot.
"""

from __future__ import annotations

import argparse
import contextlib
import io as stdio
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
SNAPSHOT = RESULTS / "run"
REPORT = RESULTS / "report"
TEST_SET = Path("data/processed/test.npz")     # publish's --test, rebuilt from the official IDX files
IDX_DIR = Path(os.environ.get("FMNIST_IDX_DIR", "/usr/share/datasets/fashion-mnist"))


def publish_command(dvc_file: Path = REPO / "dvc.yaml") -> list[str]:
    """dvc.yaml's publish command as argv for `pipeline.cli.main` (without `python -m pipeline`)."""
    from pipeline import dvc_yaml

    words = shlex.split(dvc_yaml.command(dvc_file, "publish"))
    if words[:3] != ["python", "-m", "pipeline"]:
        raise SystemExit(f"error: {dvc_file}: the publish command is not `python -m pipeline publish ...`")
    return words[3:]


def option(argv: list[str], name: str) -> Path:
    return Path(argv[argv.index(name) + 1])


def snapshot(workspace: Path, dest: Path = SNAPSHOT) -> list[Path]:
    """Copy the publish inputs of `workspace`'s last run into `dest` (replaced whole); return the files written."""
    from pipeline import io
    from pipeline.errors import PipelineError
    from pipeline.runs import output_paths
    from pipeline.params import TrainParams, build, load_params
    from pipeline.runs import run_dir

    argv = publish_command(workspace / "dvc.yaml")
    train = build(TrainParams, load_params(workspace / "params.yaml")["train"], "train")
    metrics, models = option(argv, "--metrics"), option(argv, "--models-dir")
    copies = [Path("params.yaml"), option(argv, "--class-counts"), option(argv, "--validation-report")]
    labels = []
    for name in train.models:
        for seed in train.seeds:
            paths = output_paths(metrics, name, seed)
            copies += [paths["metrics"], run_dir(models, name, seed) / "train.json"]
            if (workspace / run_dir(models, name, seed) / "history.csv").exists():
                copies.append(run_dir(models, name, seed) / "history.csv")
            labels.append(paths["predictions"])
    missing = [str(p) for p in copies + labels if not (workspace / p).exists()]
    if missing:
        raise PipelineError(f"{workspace}: no complete run to snapshot ({', '.join(missing[:3])} missing)",
                            hint="run `dvc repro` (make run) first")
    written = []
    with io.atomic_dir(dest) as tmp:
        for rel in copies:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(workspace / rel, tmp / rel)
            written.append(dest / rel)
        for rel in labels:
            pred = io.load_arrays(workspace / rel)
            io.save_arrays(tmp / rel, y_true=pred["y_true"], y_pred=pred["y_pred"])
            written.append(dest / rel)
    return written


def render(out: Path, snapshot_dir: Path = SNAPSHOT) -> None:
    """Run dvc.yaml's publish command on the snapshot (in a scratch copy); put reports/ + the summary in `out`."""
    from pipeline import io
    from pipeline.cli import main
    from pipeline.data.fetch import load_idx_dir

    argv = publish_command()
    with tempfile.TemporaryDirectory(prefix="results-") as scratch:
        work = Path(scratch) / "ws"
        shutil.copytree(snapshot_dir, work)
        xt, yt = load_idx_dir(IDX_DIR)["test"]
        io.save_arrays(work / option(argv, "--test"), x=xt, y=yt)
        err = stdio.StringIO()
        with contextlib.chdir(work), contextlib.redirect_stderr(err):
            code = main(argv)
        if code != 0:
            raise SystemExit(f"error: publish failed on {snapshot_dir} (exit {code}):\n{err.getvalue()}")
        with io.atomic_dir(out) as tmp:
            shutil.copytree(work / option(argv, "--out"), tmp, dirs_exist_ok=True)
            summary = option(argv, "--summary")
            shutil.copyfile(work / summary, tmp / summary.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.results", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    update = sub.add_parser("update", help="snapshot this workspace's run, then rebuild docs/results/report/")
    update.add_argument("--workspace", type=Path, default=Path.cwd())
    rebuild = sub.add_parser("render", help="rebuild the report from the committed snapshot into --out")
    rebuild.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    from pipeline.errors import PipelineError

    try:
        if args.command == "update":
            files = snapshot(args.workspace.resolve())
            print(f"results: {len(files)} input files -> {SNAPSHOT.relative_to(REPO)}/", file=sys.stderr)
            render(REPORT)
            print(f"results: report -> {REPORT.relative_to(REPO)}/ (commit both)", file=sys.stderr)
        else:
            render(args.out)
            print(f"results: report -> {args.out}/", file=sys.stderr)
    except PipelineError as exc:
        print(f"error [results]: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
