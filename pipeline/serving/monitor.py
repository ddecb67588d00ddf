"""monitor: compare what the service saw in a time window with what the models were trained and tested on.

    python -m pipeline monitor [--window-hours H | --since ISO --until ISO]

Reads the served-request log (monitoring/requests, pipeline.serving.request_log) and compares, per PREDICTED class:
- the images, with the data gate's own drift statistics (pipeline.data.content.drift: pixel-histogram JS
  distance, mean-image RMSE, intensity PSI) against the gate's reference profile (params.yaml
  validate.drift.reference); only classes with at least `monitor.min_class_requests` requests are judged;
- the class shares of the predictions with the training prior (data/split/class_counts.json, train split), by
  their PSI (the gate's psi);
- the mean confidence of the most-served model with its mean confidence (top probability) on the official test
  set: its evaluate stage's predictions metrics/<model>/seed-<seed>.predictions.npz (for a registry version only
  when the version's model files are those of models/<model>/seed-<seed>, else no baseline).
`assess` is the pure core; the shell writes monitoring/report.{json,md,png} (atomic). Exit 3 (the gate's code)
when a limit in params.yaml `monitor` is crossed, naming what drifted; fewer than `min_requests` requests: a
report without a verdict, exit 0. docs/production.md, "Monitoring what the service sees".
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import io
from pipeline.data.content import drift, load_profile, psi
from pipeline.errors import PipelineError, ValidationFailed
from pipeline.params import ValidateParams, load_params, section
from pipeline.runs import output_paths, run_dir, seed_of
from pipeline.schema import CLASS_NAMES
from pipeline.serving import releases
from pipeline.serving.request_log import LOG_DIR, read_window

REPORT_DIR = "monitoring"
OK, ALERT, NO_VERDICT = "ok", "alert", "no_verdict"
DRIFT_STATISTICS = {   # the gate's statistic -> its MonitorParams limit and what it measures
    "pixel_js": ("max_pixel_js", "Jensen-Shannon distance of the pixel-value histogram"),
    "mean_image_rmse": ("max_mean_image_rmse", "RMS difference of the mean image"),
    "intensity_psi": ("max_intensity_psi", "PSI of the per-image mean intensity"),
}


@dataclass(frozen=True)
class MonitorParams:
    """params.yaml `monitor` (every key required: params.yaml is the one home of these values)."""
    window_hours: float          # the default window: the last H hours
    min_requests: int            # fewer requests in the window: a report, no verdict
    min_class_requests: int      # a predicted class with fewer requests is not judged for drift
    max_pixel_js: float
    max_mean_image_rmse: float
    max_intensity_psi: float
    max_class_share_psi: float   # PSI of the predicted-class shares vs the training shares (the gate's psi)
    max_confidence_drop: float   # test-set mean confidence - served mean confidence
    cron: str                    # schedule of the `fmnist-monitor/scheduled` deployment (flows/deployments.py)

    def __post_init__(self):
        if self.window_hours <= 0:
            raise PipelineError(f"params.yaml: monitor.window_hours must be > 0, got {self.window_hours}")
        for key in ("min_requests", "min_class_requests"):
            if getattr(self, key) < 1:
                raise PipelineError(f"params.yaml: monitor.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("max_pixel_js", "max_mean_image_rmse", "max_intensity_psi", "max_class_share_psi",
                    "max_confidence_drop"):
            if getattr(self, key) <= 0:
                raise PipelineError(f"params.yaml: monitor.{key} must be > 0, got {getattr(self, key)}")
        if len(self.cron.split()) != 5:
            raise PipelineError(f"params.yaml: monitor.cron must be a 5-field cron expression, got {self.cron!r}")


# ------------------------------------------------------------------------------ core (pure)
def _alert(check: str, value: float, limit: float, message: str, cls: int | None = None) -> dict[str, Any]:
    return {"check": check, "class": cls, "name": None if cls is None else CLASS_NAMES[cls],
            "value": float(value), "limit": float(limit), "message": message}


def _psi_term(observed: float, expected: float) -> float:
    """One class's part of psi(): how much its share moved."""
    return psi(np.array([observed]), np.array([expected]))


def hourly(window: dict[str, np.ndarray], profile: dict[str, Any], params: MonitorParams) -> list[dict[str, Any]]:
    """Per clock hour: requests, mean confidence and the largest pixel JS distance over the classes with at
    least min_class_requests requests in that hour (None where none has)."""
    hours = window["time"].astype("datetime64[h]")
    out = []
    for hour in np.unique(hours):
        sel = hours == hour
        rows = drift(window["images"][sel], window["predicted"][sel], profile, params.min_class_requests)
        judged = [r["pixel_js"] for r in rows if r["pixel_js"] is not None]
        out.append({"hour": str(hour) + ":00Z", "requests": int(sel.sum()),
                    "mean_confidence": float(window["confidence"][sel].mean()),
                    "max_pixel_js": max(judged) if judged else None})
    return out


def assess(window: dict[str, np.ndarray], profile: dict[str, Any], prior: np.ndarray,
           baseline: dict[str, Any] | None, params: MonitorParams) -> dict[str, Any]:
    """The verdict on one window of served requests (read_window's arrays).

    prior: each class's share of the training data; baseline: {"model", "version" (-1: none),
    "mean_confidence", "source"} of the most-served model, or None (no confidence check).
    """
    n = len(window["predicted"])
    predicted = window["predicted"].astype(np.int64)
    counts = np.bincount(predicted, minlength=len(CLASS_NAMES))
    shares = counts / n if n else np.zeros(len(CLASS_NAMES))
    classes = drift(window["images"], predicted, profile, params.min_class_requests) if n else [
        {"class": c, "name": name, "rows": 0, "pixel_js": None, "mean_image_rmse": None, "intensity_psi": None}
        for c, name in enumerate(CLASS_NAMES)]
    for row in classes:
        row.pop("looks_like", None)     # the gate's diagnosis of a labelled split: not computed here
        row.update({"share": float(shares[row["class"]]), "training_share": float(prior[row["class"]])})
    confidence: dict[str, Any] = {"mean": float(window["confidence"].mean()) if n else None, "baseline": baseline}
    if baseline is not None:
        same = (window["model"] == baseline["model"]) & (window["version"] == baseline["version"])
        confidence.update({"requests": int(same.sum()),
                           "served_mean": float(window["confidence"][same].mean()) if same.any() else None})
    report = {"requests": n, "classes": classes, "confidence": confidence, "alerts": [],
              "limits": asdict(params), "hourly": hourly(window, profile, params) if n else []}
    if n < params.min_requests:
        report["verdict"] = NO_VERDICT
        report["why"] = f"{n} requests in the window, fewer than monitor.min_requests = {params.min_requests}"
        return report
    alerts = report["alerts"]
    for row in classes:
        for stat, (key, what) in DRIFT_STATISTICS.items():
            value, limit = row[stat], getattr(params, key)
            if value is not None and value > limit:
                alerts.append(_alert(stat, value, limit, f"predicted class {row['class']} '{row['name']}': {stat} "
                                     f"({what}) {value:.3f} > limit {limit:g} ({row['rows']} requests)", row["class"]))
    share_psi = psi(shares, prior)
    report["class_share_psi"] = share_psi
    if share_psi > params.max_class_share_psi:
        moved = sorted(classes, key=lambda r: -_psi_term(r["share"], r["training_share"]))[:3]
        alerts.append(_alert("class_share_psi", share_psi, params.max_class_share_psi,
                             f"class_share_psi (PSI of the predicted-class shares vs the training shares) "
                             f"{share_psi:.3f} > limit {params.max_class_share_psi:g}; moved most: " + ", ".join(
                                 f"class {r['class']} '{r['name']}' {r['share']:.3f} "
                                 f"(training {r['training_share']:.3f})"
                                 for r in moved), moved[0]["class"]))
    served = confidence.get("served_mean")
    if baseline is not None and served is not None:
        drop = baseline["mean_confidence"] - served
        confidence["drop"] = drop
        if drop > params.max_confidence_drop:
            alerts.append(_alert("confidence_drop", drop, params.max_confidence_drop,
                                 f"confidence_drop: mean confidence of {baseline['model']} {served:.3f} vs "
                                 f"{baseline['mean_confidence']:.3f} "
                                 f"on the official test set (drop {drop:.3f} > limit {params.max_confidence_drop:g})"))
    report["verdict"] = ALERT if alerts else OK
    judged = sum(r["pixel_js"] is not None for r in classes)
    report["why"] = (f"{len(alerts)} limit(s) crossed" if alerts else "no limit crossed") + \
        f"; {judged} of {len(classes)} predicted classes had >= {params.min_class_requests} requests for drift"
    return report


def alert_summary(report: dict[str, Any]) -> str:
    """One line per crossed limit (pure): what drifted, where, value vs limit."""
    return "\n".join(f"- {a['message']}" for a in report["alerts"])


def report_markdown(report: dict[str, Any]) -> str:
    """The report for a person (pure)."""
    win, conf = report["window"], report["confidence"]
    verdict = {OK: "OK", ALERT: "ALERT", NO_VERDICT: "NO VERDICT"}[report["verdict"]]
    out = [f"# Monitoring: {verdict}", "", f"Window {win['since']} to {win['until']}: {report['requests']} requests; "
           f"{report['why']}.", ""]
    if report["alerts"]:
        out += ["## What drifted", "", alert_summary(report), ""]
    out += ["| class | name | requests | share | training share | pixel JS | mean-image RMSE | intensity PSI |",
            "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "" if v is None else f"{v:.3f}"   # noqa: E731
    for r in report["classes"]:
        out.append(f"| {r['class']} | {r['name']} | {r['rows']} | {r['share']:.3f} | {r['training_share']:.3f} | "
                   f"{fmt(r['pixel_js'])} | {fmt(r['mean_image_rmse'])} | {fmt(r['intensity_psi'])} |")
    base = conf.get("baseline")
    out += ["", f"Mean confidence: {fmt(conf['mean'])} over all requests."]
    if base:
        out.append(f"Baseline: {base['model']}'s mean confidence {base['mean_confidence']:.3f} on the official test "
                   f"set ({base['source']}); served mean {fmt(conf.get('served_mean'))} over its {conf['requests']} "
                   "requests.")
    else:
        out.append(f"No confidence baseline: {conf.get('why_no_baseline', 'no requests')}.")
    out += ["", f"Training shares: {report.get('prior_source', '')}. Reference profile: {report.get('profile', '')}.",
            "", "![requests, confidence and drift per hour](report.png)"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ I/O shell
def training_prior(class_counts: Path, profile: dict[str, Any]) -> tuple[np.ndarray, str]:
    """Each class's share of the training split (the split stage's class_counts.json), else the reference
    profile's shares (the official dataset's), and which one it is."""
    if class_counts.is_file():
        counts = io.read_json(class_counts).get("class_counts", {}).get("train")
        if isinstance(counts, dict) and set(counts) == set(CLASS_NAMES) and sum(counts.values()):
            c = np.array([counts[name] for name in CLASS_NAMES], dtype=float)
            return c / c.sum(), f"{class_counts} (train split)"
    shares = np.array([profile["classes"][name]["share"] for name in CLASS_NAMES], dtype=float)
    return shares / shares.sum(), f"the reference profile's shares ({class_counts} not found)"


def confidence_baseline(root: Path, raw: dict[str, Any], window: dict[str, np.ndarray],
                        metrics_dir: Path, models_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """(baseline, why none) for the most-served (model, version) of the window: its mean top probability on the
    official test set from its evaluate stage's predictions (see the module docstring)."""
    from pipeline.serving.promote import model_digest   # promote pulls in the ONNX export: only here

    if not len(window["model"]):
        return None, "no requests"
    pairs, counts = np.unique(np.array([f"{m}\0{v}" for m, v in zip(window["model"], window["version"])]),
                              return_counts=True)
    model, version = pairs[np.argmax(counts)].split("\0")
    version = int(version)
    if version >= 0:
        try:
            served = releases.get(root, version)
        except PipelineError as exc:
            return None, f"the served registry version v{version} is unreadable here ({exc.what})"
        seed = served.seed
        if served.meta.get("model_sha256") != _digest_or_none(model_digest, run_dir(models_dir, model, seed)):
            return None, (f"registry v{version} ({model}, seed {seed}) is not the model in "
                          f"{run_dir(models_dir, model, seed)}, whose test predictions are the only ones kept")
    else:
        seed = seed_of(raw, None)
    path = output_paths(metrics_dir, model, seed)["predictions"]
    if not path.is_file():
        return None, f"{path} not found (evaluate {model}, seed {seed}, first)"
    probs = io.load_arrays(path)["probs"]
    return {"model": model, "version": version, "seed": seed, "mean_confidence": float(probs.max(axis=1).mean()),
            "source": f"{path}, {len(probs)} images"}, ""


def _digest_or_none(digest, model_dir: Path) -> str | None:
    try:
        return digest(model_dir)
    except PipelineError:
        return None


def plot_report(report: dict[str, Any], target: Path) -> None:
    """Requests, mean confidence and the largest pixel JS distance per hour (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [datetime.fromisoformat(h["hour"].replace("Z", "+00:00")) for h in report["hourly"]]
    fig, axes = plt.subplots(3, 1, figsize=(7, 6), sharex=True)
    axes[0].bar(hours, [h["requests"] for h in report["hourly"]], width=1 / 24 * 0.8)
    axes[0].set_ylabel("requests")
    axes[1].plot(hours, [h["mean_confidence"] for h in report["hourly"]], "o-", label="served")
    base = report["confidence"].get("baseline")
    if base:
        axes[1].axhline(base["mean_confidence"], color="grey", ls="--", label="test set")
        axes[1].axhline(base["mean_confidence"] - report["limits"]["max_confidence_drop"], color="red", ls=":",
                        label="limit")
    axes[1].set_ylabel("mean confidence")
    axes[1].legend(fontsize=7)
    js = [np.nan if h["max_pixel_js"] is None else h["max_pixel_js"] for h in report["hourly"]]
    axes[2].plot(hours, js, "o-")
    axes[2].axhline(report["limits"]["max_pixel_js"], color="red", ls=":")
    axes[2].set_ylabel("max pixel JS")
    axes[0].set_title(f"Served requests {report['window']['since']} - {report['window']['until']}", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    with io.atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def run_monitor(root: Path, raw: dict[str, Any], since: datetime, until: datetime, *, log_dir: Path,
                out_dir: Path, metrics_dir: Path, models_dir: Path, class_counts: Path) -> dict[str, Any]:
    """Read the window, assess it, write report.json/.md/.png into out_dir; return the report."""
    params = section(MonitorParams, "monitor", raw)
    reference = Path(section(ValidateParams, "validate", raw).drift["reference"])
    reference = reference if reference.is_absolute() else root / reference
    profile = load_profile(reference)
    if not Path(log_dir).is_dir():
        raise PipelineError(f"{log_dir}: no served-request log here",
                            hint="start the service in this workspace (python -m pipeline serve) so it logs its "
                                 "requests, or pass --log-dir")
    window = read_window(log_dir, since, until)
    prior, prior_source = training_prior(class_counts, profile)
    baseline, why = confidence_baseline(root, raw, window, metrics_dir, models_dir)
    report = assess(window, profile, prior, baseline, params)
    report["window"] = {"since": since.isoformat(timespec="seconds"), "until": until.isoformat(timespec="seconds")}
    report.update({"log": str(log_dir), "profile": str(reference), "prior_source": prior_source})
    if baseline is None:
        report["confidence"]["why_no_baseline"] = why
    io.write_json(out_dir / "report.json", report)
    io.write_text(out_dir / "report.md", report_markdown(report))
    plot_report(report, out_dir / "report.png")
    return report


def window_bounds(window_hours: float | None, since: str | None, until: str | None,
                  now: datetime | None = None) -> tuple[datetime, datetime]:
    """[since, until) from --since/--until (ISO 8601; naive = UTC) or the last window_hours before now."""
    def parse(text: str, flag: str) -> datetime:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise PipelineError(f"{flag} {text!r} is not an ISO 8601 time",
                                hint="e.g. 2026-12-06T00:00:00Z or 2026-12-06T00:00") from None
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    now = now or datetime.now(timezone.utc)
    end = parse(until, "--until") if until else now
    start = parse(since, "--since") if since else end - timedelta(hours=float(window_hours))
    if start >= end:
        raise PipelineError(f"the window is empty: since {start.isoformat()} is not before until {end.isoformat()}")
    return start, end


# ------------------------------------------------------------------------------ CLI
def add_cli(parser) -> None:
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--window-hours", type=float, default=None,
                       help="the H hours before --until (default: params.yaml monitor.window_hours)")
    start.add_argument("--since", help="window start, ISO 8601 (naive = UTC)")
    parser.add_argument("--until", help="window end, ISO 8601 (default: now)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    # Path defaults kept on purpose (as promote's): the paths dvc.yaml gives the stages that write them, and the
    # service's log directory (pipeline.serving.request_log.LOG_DIR).
    parser.add_argument("--log-dir", type=Path, default=Path(LOG_DIR), help="the served-request log")
    parser.add_argument("--out", type=Path, default=Path(REPORT_DIR), help="where report.json/.md/.png go")
    parser.add_argument("--metrics", type=Path, default=Path("metrics"), help="the evaluate stage's outputs")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="trained runs")
    parser.add_argument("--class-counts", type=Path, default=Path("data/split/class_counts.json"),
                        help="the split stage's class counts (training prior)")


def cli(args) -> None:
    raw = load_params(args.params)
    hours = args.window_hours or section(MonitorParams, "monitor", raw).window_hours
    since, until = window_bounds(hours, args.since, args.until)
    report = run_monitor(Path("."), raw, since, until, log_dir=args.log_dir, out_dir=args.out,
                         metrics_dir=args.metrics, models_dir=args.models_dir, class_counts=args.class_counts)
    if args.json:
        print(json.dumps(report, indent=2))
    print(f"monitor: {report['verdict'].upper()}: {report['requests']} requests, {report['why']}; "
          f"report {args.out}/report.md", file=sys.stderr)
    if report["verdict"] == ALERT:
        raise ValidationFailed("served inputs drifted:\n" + alert_summary(report),
                               hint=f"see {args.out}/report.md; limits in params.yaml `monitor`")
