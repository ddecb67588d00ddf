"""The GPU check: train the default set's CNNs for 3 seeds each on the real split, evaluate each on the official
test set, print one table. What `scripts/gpu-check.sh` runs on a lent GPU machine (JAX, no TensorFlow).

    KERAS_BACKEND=jax python scripts/gpu_check.py --idx DIR --work DIR [--out DIR] [--models ...] [--seeds ...]
        [--set KEY=VALUE ...] [--test-rows N] [--budget-s S]

- Data: the four official IDX files in --idx, checked by SHA-256 (pipeline.data.fetch.load_idx_dir), split as
  the split stage splits them (pipeline.data.split.stratified_split with params.yaml `split`), the official test
  set whole (--test-rows N: its first N images, for a dry run only).
- Training and evaluation: the stages' own CLIs (`python -m pipeline train` / `evaluate`: pipeline.cli.main), one
  after the other in this one process (one JAX start, no TensorFlow), with params.yaml plus the --set overrides
  (written to <work>/params.yaml). On a GPU, `train.gpu_variant: auto` trains cnn-ours' GPU variant.
- Order: model by model, cnn-ours (the one whose GPU accuracy is the open question) first, each model's seeds
  together; a budget cut then leaves cnn-ours' seeds whole and stops at the paper-A CNNs' last runs.
- Budget: no run starts after --budget-s seconds, and a run still going then is stopped (the table says so), so
  the table comes back from one 10-minute device call.
- Output: the table on stdout and in <work>/gpu-check.md and .json (rewritten after every run), copied to --out;
  each run's full log in <work>/logs/ (the last lines of a failed one are printed).

Columns: test accuracy on the official test set (flip-averaged where the model predicts so); training seconds
as train.json records them (model.fit of every epoch, the first epoch's compilation and per-epoch validation
included); images/s = epochs x training images / training seconds; the device train.json names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:   # the stage modules load lazily, after this script leaves the repository root
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from pipeline import io  # noqa: E402
from pipeline.cli import main as pipeline_main  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.params import TrainParams, build, load_params  # noqa: E402

DEFAULT_SEEDS = (42, 43, 44)
LOG_TAIL_LINES = 25


def log(msg: str) -> None:
    print(msg, flush=True)


def set_dotted(params: dict, key: str, value) -> None:
    node = params
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise PipelineError(f"--set {key}: `{part}` is not a section of params.yaml",
                                hint="use a dotted key of params.yaml, e.g. models.cnn-ours.epochs=1")
        node = node[part]
    if parts[-1] not in node:
        raise PipelineError(f"--set {key}: no such key in params.yaml",
                            hint="--set changes existing keys only (see params.yaml)")
    node[parts[-1]] = value


def parse_set(items: list[str]) -> list[tuple[str, object]]:
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise PipelineError(f"--set {item!r}: expected KEY=VALUE", hint="e.g. --set models.cnn-ours.epochs=1")
        out.append((key, yaml.safe_load(raw)))
    return out


def keras_models(params: dict) -> list[str]:
    """The Keras models of params.yaml `train.models` (the default set's CNNs), cnn-ours first."""
    from pipeline.models import registry   # after --set is read: no import cost for a bad override

    models = [m for m in params["train"]["models"] if registry.get(m).family == "keras"]
    return sorted(models, key=lambda m: m != "cnn-ours")


def prepare_data(idx: Path, work: Path, params: dict, test_rows: int | None) -> dict[str, int]:
    """data/split/{train,val}.npz and data/processed/test.npz under `work`, from the verified IDX files."""
    from pipeline.data.fetch import load_idx_dir   # pyarrow loads only when data are made
    from pipeline.data.split import stratified_split   # scikit-learn likewise

    data = load_idx_dir(idx)
    x, y = data["train"]
    xt, yt = data["test"]
    if test_rows:
        xt, yt = xt[:test_rows], yt[:test_rows]
    sp = params["split"]
    train_idx, val_idx = stratified_split(y, sp["train_size"], sp["val_size"], sp["seed"])
    io.save_arrays(work / "data" / "split" / "train.npz", x=x[train_idx], y=y[train_idx], index=train_idx)
    io.save_arrays(work / "data" / "split" / "val.npz", x=x[val_idx], y=y[val_idx], index=val_idx)
    io.save_arrays(work / "data" / "processed" / "test.npz", x=xt, y=yt)
    return {"train": len(train_idx), "val": len(val_idx), "test": len(yt)}


class OverBudget(KeyboardInterrupt):
    """Raised by the alarm inside a run: the stage CLI treats it as an interruption (exit 130, outputs as before)."""


def _alarm(signum, frame):
    raise OverBudget()


def run_stage(argv: list[str], log_path: Path, stop_at: float) -> int:
    """One `python -m pipeline ...` call in this process, its stdout and stderr to `log_path`; stopped at `stop_at`
    (time.monotonic()) by SIGALRM (exit status 130, as for an interrupted stage)."""
    try:
        return _run_stage(argv, log_path, stop_at)
    except OverBudget:   # the alarm went off just as the stage returned
        return 130


def _run_stage(argv: list[str], log_path: Path, stop_at: float) -> int:
    remaining = stop_at - time.monotonic()
    if remaining <= 1:
        return 130
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        print(f"$ python -m pipeline {' '.join(argv)}", flush=True)
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(max(1, int(remaining)))
        try:
            return pipeline_main(argv)
        except Exception as exc:   # a crash of one run (an XLA error, say) must not lose the others' table
            import traceback

            traceback.print_exc()
            print(f"error: {type(exc).__name__}: {exc}", flush=True)
            return 1
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def row_for(work: Path, model: str, seed: int, status: str) -> dict:
    row = {"model": model, "seed": seed, "status": status, "test_accuracy": None, "train_s": None,
           "images_per_s": None, "device": None, "backend": None, "epochs": None, "variant": None,
           "val_accuracy": None}
    train_json = work / "models" / model / f"seed-{seed}" / "train.json"
    metrics_json = work / "metrics" / model / f"seed-{seed}.json"
    if train_json.exists():
        meta = json.loads(train_json.read_text())
        n_train = len(io.load_arrays(work / "data" / "split" / "train.npz")["y"])
        row.update(train_s=meta["train_time_s"], device=meta["device"], backend=meta["backend"],
                   epochs=meta["epochs"], val_accuracy=meta["val_accuracy"],
                   variant="gpu" if meta.get("gpu_variant") else "base",
                   images_per_s=meta["epochs"] * n_train / meta["train_time_s"] if meta["train_time_s"] else None)
    if metrics_json.exists() and status == "ok":
        row["test_accuracy"] = json.loads(metrics_json.read_text())["test"]["accuracy"]
    return row


def _num(v, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def table(rows: list[dict]) -> str:
    """The one table: a row per run, then each model's mean and standard deviation over its finished seeds."""
    lines = ["| model | seed | test accuracy (%) | training s | images/s | device |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        name = r["model"] + (" (GPU variant)" if r["variant"] == "gpu" else "")
        acc = _num(None if r["test_accuracy"] is None else 100 * r["test_accuracy"], ".2f")
        if r["status"] != "ok":
            acc += f" ({r['status']})"
        lines.append(f"| {name} | {r['seed']} | {acc} | {_num(r['train_s'], '.1f')} | "
                     f"{_num(r['images_per_s'], ',.0f')} | {r['device'] or '—'} |")
    for model, s in summary(rows).items():
        std = "" if s["test_accuracy_std"] is None else f" ± {100 * s['test_accuracy_std']:.2f}"
        lines.append(f"| **{model}: mean of {s['seeds']} seed(s)** | — | {100 * s['test_accuracy_mean']:.2f}{std} | "
                     f"{s['train_s_mean']:.1f} | {s['images_per_s_mean']:,.0f} | {s['device']} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> dict[str, dict]:
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        done = [r for r in rows if r["model"] == model and r["status"] == "ok"]
        if not done:
            continue
        accs = [r["test_accuracy"] for r in done]
        out[model] = {
            "seeds": len(done), "test_accuracy_mean": statistics.fmean(accs),
            "test_accuracy_std": statistics.stdev(accs) if len(accs) > 1 else None,
            "train_s_mean": statistics.fmean(r["train_s"] for r in done),
            "train_s_max": max(r["train_s"] for r in done),
            "images_per_s_mean": statistics.fmean(r["images_per_s"] for r in done),
            "device": done[0]["device"], "variant": done[0]["variant"],
        }
    return out


def environment() -> dict:
    import keras

    env = {"python": platform.python_version(), "keras": keras.__version__, "backend": keras.backend.backend()}
    if env["backend"] == "jax":
        import jax

        env["jax"] = jax.__version__
        env["jax_devices"] = [f"{d.platform}:{getattr(d, 'device_kind', '?')}" for d in jax.devices()]
    env["tensorflow_imported"] = "tensorflow" in sys.modules
    return env


def write_report(work: Path, out: Path | None, rows: list[dict], info: dict) -> str:
    text = table(rows)
    io.write_text(work / "gpu-check.md", text + "\n")
    io.write_json(work / "gpu-check.json", {**info, "rows": rows, "summary": summary(rows)})
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("gpu-check.md", "gpu-check.json"):
            shutil.copyfile(work / name, out / name)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/gpu_check.py", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--idx", type=Path, required=True, help="directory of the four official IDX files (.gz or not)")
    ap.add_argument("--work", type=Path, required=True, help="scratch directory (data, models, metrics, logs)")
    ap.add_argument("--out", type=Path, default=None, help="also copy gpu-check.{md,json} here (e.g. $OUT)")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--models", nargs="+", default=None,
                    help="in this order (default: the Keras models of params.yaml train.models, the default "
                         "set's CNNs, cnn-ours first)")
    ap.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a params.yaml key (YAML value), e.g. models.cnn-ours.epochs=1; repeatable")
    ap.add_argument("--test-rows", type=int, default=None, help="first N official test images only (dry runs)")
    ap.add_argument("--budget-s", type=float, default=540.0,
                    help="no run starts after this many seconds, and one still going then is stopped (default 540)")
    args = ap.parse_args(argv)
    started = time.monotonic()
    stop_at = started + args.budget_s
    try:
        params = load_params(args.params)
        for key, value in parse_set(args.overrides):
            set_dotted(params, key, value)
        params["train"]["seeds"] = list(args.seeds)
        models = args.models or keras_models(params)
        params["train"]["models"] = list(models)
        build(TrainParams, params["train"], "train")
        work = args.work.resolve()
        for stale in ("models", "metrics", "logs", ".checkpoints"):   # every figure in the table is this call's
            shutil.rmtree(work / stale, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        t0 = time.monotonic()
        sizes = prepare_data(args.idx, work, params, args.test_rows)
        log(f"gpu-check: data from {args.idx} (SHA-256 checked): {sizes['train']} train / {sizes['val']} val "
            f"(split seed {params['split']['seed']}), {sizes['test']} official test images "
            f"[{time.monotonic() - t0:.1f} s]")
    except PipelineError as exc:
        print(f"error [gpu-check]: {exc}", file=sys.stderr)
        return exc.exit_code
    info = {"environment": environment(), "sizes": sizes, "models": models, "seeds": list(args.seeds),
            "overrides": args.overrides, "budget_s": args.budget_s}
    log(f"gpu-check: {json.dumps(info['environment'])}")
    log(f"gpu-check: {len(models)} model(s) x {len(args.seeds)} seed(s): {', '.join(models)}; "
        f"seeds {' '.join(map(str, args.seeds))}; budget {args.budget_s:.0f} s")

    os.chdir(work)   # the stages' relative paths (.checkpoints/, the workspace lock) land in the scratch directory
    params_path = str(work / "params.yaml")
    rows: list[dict] = []
    failed = False
    for model in models:
        for seed in args.seeds:
            log_path = work / "logs" / f"{model}-seed-{seed}.log"
            if time.monotonic() >= stop_at:
                rows.append(row_for(work, model, seed, "not started: budget"))
                log(f"gpu-check: {model} seed {seed}: not started (budget of {args.budget_s:.0f} s spent)")
                continue
            t0 = time.monotonic()
            rc = run_stage(["--params", params_path, "train", "--model", model, "--seed", str(seed),
                            "--data", "data/split", "--out", f"models/{model}/seed-{seed}"], log_path, stop_at)
            if rc == 0:
                rc = run_stage(["--params", params_path, "evaluate", "--model", model, "--seed", str(seed),
                                "--models-dir", "models", "--test", "data/processed/test.npz", "--out", "metrics"],
                               log_path, stop_at)
            status = "ok" if rc == 0 else ("stopped: budget" if rc == 130 else f"failed (exit {rc})")
            failed |= rc not in (0, 130)
            row = row_for(work, model, seed, status)
            rows.append(row)
            log(f"gpu-check: {model} seed {seed}: {status}; test accuracy {_num(row['test_accuracy'], '.4f')}, "
                f"training {_num(row['train_s'], '.1f')} s, {_num(row['images_per_s'], ',.0f')} images/s on "
                f"{row['device']} [{time.monotonic() - t0:.1f} s]")
            if rc != 0:
                log(f"gpu-check: last lines of {log_path}:\n{tail(log_path)}")
            write_report(work, args.out, rows, info)
            with contextlib.suppress(Exception):
                import keras

                keras.backend.clear_session()   # free the finished model's memory before the next one
    info["environment"]["tensorflow_imported"] = "tensorflow" in sys.modules   # at the end, after every run
    text = write_report(work, args.out, rows, info)
    log(f"\ngpu-check: done in {time.monotonic() - started:.1f} s (keras {info['environment']['keras']}, "
        f"backend {info['environment']['backend']}); table also in {work / 'gpu-check.md'}\n")
    print(text, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
