"""publish stage on a fabricated workspace that follows the train/evaluate artifact contract.

Every registered model gets a REAL tiny scikit-learn model (GaussianNB fitted on a different slice of the
real training images, saved with skops) and a train.json / history.csv as the train stage writes them; the
evaluate stage's own code then scores it on real test images. Only the training numbers in train.json and
the Keras-style per-epoch histories are made up.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.naive_bayes import GaussianNB

from pipeline import metrics
from pipeline.training import evaluate as ev
from pipeline import io, publish
from pipeline.data.split import class_counts
from pipeline.errors import PipelineError
from pipeline.models import registry
from tests.conftest import REPO, run_cli, shipped_hyperparams, shipped_params

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def configured_models() -> list[str]:
    return shipped_params()["train"]["models"]


def _history(name: str, family: str, epochs: int, seed: int) -> list[dict]:
    if family != "keras":
        return [{"epoch": 1, "loss": 1.2, "accuracy": 0.7, "val_loss": 1.4, "val_accuracy": 0.65,
                 "epoch_time_s": 0.05}]
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(1, epochs + 1):
        acc = 0.75 + 0.2 * (1 - np.exp(-e / 3)) + rng.normal(0, 0.003)
        rows.append({"epoch": e, "loss": 0.7 * np.exp(-e / 4), "accuracy": acc, "val_loss": 0.5 + 0.01 * e,
                     "val_accuracy": acc - 0.03 - 0.004 * e, "epoch_time_s": 7.5 + rng.normal(0, 0.2)})
    return rows


def build_workspace(root: Path, small_split, names: list[str], seeds: tuple[int, ...] = (42,)) -> dict[str, Path]:
    import skops.io as sio

    from pipeline.runs import run_dir

    (x, y), (xv, yv), (xt, yt) = small_split["train"], small_split["val"], small_split["test"]
    models_dir, metrics_dir = root / "models", root / "metrics"
    xs = registry.preprocess("sklearn", x)
    for (i, name), (k, seed) in ((m, s) for m in enumerate(names) for s in enumerate(seeds)):
        spec = registry.get(name)
        rows = 200 + (i * 397 + k * 53) % 400          # a different real training slice per model and seed
        model = GaussianNB(var_smoothing=10.0 ** (-9 + (i % 7))).fit(xs[:rows], y[:rows])
        mdir = run_dir(models_dir, name, seed)
        mdir.mkdir(parents=True)
        sio.dump(model, mdir / registry.SKOPS_FILE)
        history = _history(name, spec.family, 12 if spec.family == "keras" else 1, i)
        with open(mdir / "history.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
        meta = {"model": name, "family": spec.family, "source": spec.source, "train_time_s": 10.0 + i,
                "epochs": len(history), "device": "CPU", "backend": "tensorflow" if spec.family == "keras" else
                "sklearn", "seed": seed, "params_count": 1000 * (i + 1), "val_accuracy": history[-1]["val_accuracy"],
                "val_loss": history[-1]["val_loss"], "train_accuracy": history[-1]["accuracy"],
                "train_loss": history[-1]["loss"], "hyperparams": shipped_hyperparams(name),
                "stand_in_for": spec.stand_in_for, "resumed_from_epoch": None}
        (mdir / "train.json").write_text(json.dumps(meta))
        metrics, probs = ev.evaluate_model(name, mdir, xt, yt, batch_size=128, latency_calls=2, warmup_calls=1)
        ev.write_outputs(metrics_dir, name, seed, metrics, yt, probs)
    io.save_arrays(root / "test.npz", x=xt, y=yt)
    io.write_json(root / "class_counts.json", {"seed": 42, "sizes": {"train": len(y), "val": len(yv), "test": len(yt)},
                                               "class_counts": {"train": class_counts(y), "val": class_counts(yv),
                                                                "test": class_counts(yt)}})
    return {"models": models_dir, "metrics": metrics_dir, "test": root / "test.npz",
            "counts": root / "class_counts.json", "out": root / "reports", "summary": root / "accuracy.json"}


@pytest.fixture(scope="module")
def workspace(small_split, tmp_path_factory):
    names = registry.names()  # every registered model, including those params.yaml leaves opt-in
    root = tmp_path_factory.mktemp("publish")
    paths = build_workspace(root, small_split, names)
    summary = run_publish(paths, names)
    return {"root": root, "paths": paths, "names": names, "summary": summary}


def run_publish(paths, names, seeds=(42,)):
    return publish.publish(names, metrics_dir=paths["metrics"], models_dir=paths["models"], out_dir=paths["out"],
                           test_path=paths["test"], class_counts_path=paths["counts"], seeds=seeds, mcnemar_top=4,
                           alpha=0.05, dpi=60, sample_images=8, summary_path=paths["summary"])


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_configured_models_are_all_registered():
    names = configured_models()
    assert set(names) <= set(registry.names())
    assert len(names) == len(set(names))


def test_every_configured_model_is_in_every_format(workspace):
    names, out = workspace["names"], workspace["paths"]["out"]
    with open(out / "comparison.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["model"] for r in rows) == sorted(names)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(names) + 1))
    accuracies = [float(r["test_accuracy_pct"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    md = (out / "comparison.md").read_text()
    page = (out / "comparison.html").read_text()
    for name in names:
        assert f"| {name}" in md, name
        assert f"<td>{name}" in page, name


def test_published_measured_and_gap(workspace):
    metrics_dir = workspace["paths"]["metrics"]
    for rec in workspace["summary"]["records"]:
        spec = registry.get(rec["model"])
        measured = 100 * io.read_json(metrics_dir / rec["model"] / "seed-42.json")["test"]["accuracy"]
        assert rec["test_accuracy_pct"] == pytest.approx(measured)
        assert rec["ci95_low_pct"] <= measured <= rec["ci95_high_pct"]
        if "accuracy" in spec.published:
            assert rec["published_accuracy_pct"] == spec.published["accuracy"]
            assert rec["published_accuracy_kind"] == spec.published["accuracy_kind"]
            assert rec["gap_pp"] == pytest.approx(measured - spec.published["accuracy"])
        else:
            assert rec["published_accuracy_pct"] is None and rec["gap_pp"] is None
        assert rec["params_published"] == spec.published.get("params")
        assert rec["train_time_s"] is not None and rec["train_device"] == "CPU"


def test_stand_in_is_labelled(workspace):
    md = (workspace["paths"]["out"] / "comparison.md").read_text()
    stand_ins = [rec for rec in workspace["summary"]["records"] if registry.get(rec["model"]).stand_in_for]
    assert stand_ins, "the workspace must hold a stand-in model for this test to check anything"
    for rec in stand_ins:
        spec = registry.get(rec["model"])
        assert rec["stand_in_for"] == spec.stand_in_for
        assert f"{rec['model']} (stand-in for {spec.stand_in_for})" in md
    for rec in workspace["summary"]["records"]:
        if rec not in stand_ins:
            assert not rec.get("stand_in_for") and f"{rec['model']} (stand-in for" not in md


def test_paper_tables_and_note(workspace):
    names, summary = workspace["names"], workspace["summary"]
    md = (workspace["paths"]["out"] / "comparison.md").read_text()
    sources = {registry.get(n).source for n in names}
    assert {registry.PAPER_A, registry.PAPER_B} <= sources, "the workspace holds every registered model"
    assert "paper_a" in summary["tables"]
    assert "TF1 train loss" in md and "TF2 test %" in md
    assert {"paper_b_classes", "paper_b_dropout"} <= set(summary["tables"])
    assert "published train − val (pp)" in md
    assert "mcnemar" in summary["tables"] and len(summary["mcnemar"]) == 6  # 4 models -> 6 pairs
    note = " ".join(summary["note"])
    best = summary["records"][0]
    assert f"{best['test_accuracy_pct']:.2f}%" in note          # built from measured numbers
    assert "near-duplicates" in note and "validation accuracy" in note


def test_all_figures_written_and_embedded(workspace):
    names, out = workspace["names"], workspace["paths"]["out"]
    best = workspace["summary"]["records"][0]["model"]
    figures = {p.name for p in (out / "figures").iterdir()}
    expected = {"accuracy_comparison.png", "class_distribution.png", f"samples_{best}.png", f"confusion_{best}.png"}
    keras = [n for n in names if registry.get(n).family == "keras"]
    expected |= {f"curves_{n}.png" for n in keras} | ({"epoch_time.png"} if keras else set())
    expected |= {f"confusion_{n}.png" for n in names if registry.get(n).source in (registry.PAPER_A, registry.PAPER_B)}
    assert figures == expected
    for name in figures:
        data = (out / "figures" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000, name
    page = (out / "comparison.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(figures)
    assert not re.search(r"(src|href)=['\"]https?:", page)        # self-contained
    md = (out / "comparison.md").read_text()
    assert all(f"(figures/{name})" in md for name in figures)


def test_publish_is_deterministic(workspace, tmp_path):
    paths = dict(workspace["paths"], out=tmp_path / "again")
    run_publish(paths, workspace["names"])
    assert snapshot(tmp_path / "again") == snapshot(workspace["paths"]["out"])


def _copy(workspace, tmp_path) -> dict[str, Path]:
    root = tmp_path / "ws"
    shutil.copytree(workspace["root"], root)
    return {k: root / v.relative_to(workspace["root"]) for k, v in workspace["paths"].items()}


def test_missing_metrics_fails_naming_the_model_and_keeps_reports(workspace, tmp_path):
    paths = _copy(workspace, tmp_path)
    before = snapshot(paths["out"])
    victim = workspace["names"][-1]
    (paths["metrics"] / victim / "seed-42.json").unlink()
    with pytest.raises(PipelineError, match=re.escape(victim)):
        run_publish(paths, workspace["names"])
    assert snapshot(paths["out"]) == before


def test_failure_mid_render_leaves_previous_reports_byte_identical(workspace, tmp_path, monkeypatch):
    from pipeline.publish import plots

    paths = _copy(workspace, tmp_path)
    before = snapshot(paths["out"])
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("disk full while drawing")

    monkeypatch.setattr(plots, "confusion_heatmap", broken)   # fails after several figures were written
    with pytest.raises(RuntimeError, match="disk full"):
        run_publish(paths, workspace["names"])
    assert calls
    assert snapshot(paths["out"]) == before
    assert not [p for p in paths["out"].parent.iterdir() if p.name.startswith(".reports")]  # no temp left


def _cli_params(root: Path, names: list[str]) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["models"] = names
    params["train"]["seeds"] = [42]
    params["publish"].update({"mcnemar_top": 3, "dpi": 50, "sample_images": 4})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_cli_publish_and_missing_model_error(workspace, tmp_path):
    paths = _copy(workspace, tmp_path)
    root = paths["models"].parent
    shutil.rmtree(paths["out"])
    names = workspace["names"][:3] + ["gradient-boosting"] if "gradient-boosting" in workspace["names"] else \
        workspace["names"][:4]
    _cli_params(root, names)
    args = ("publish", "--metrics", "metrics", "--models-dir", "models", "--test", "test.npz",
            "--class-counts", "class_counts.json", "--out", "reports", "--summary", "accuracy.json")
    proc = run_cli(*args, cwd=root, check=True)
    assert "publish:" in proc.stderr
    assert sorted(json.loads((root / "accuracy.json").read_text())) == sorted(names)
    with open(root / "reports" / "comparison.csv", newline="") as fh:
        assert sorted(r["model"] for r in csv.DictReader(fh)) == sorted(names)
    before = snapshot(root / "reports")
    (root / "metrics" / names[1] / "seed-42.json").unlink()
    proc = run_cli(*args, cwd=root)
    assert proc.returncode == 2 and names[1] in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(root / "reports") == before


def test_note_spans_collapse_a_single_value():
    from pipeline.publish.narrative import _span

    assert _span([90.35]) == "90.35"
    assert _span([90.35, 91.72, 90.81]) == "90.35–91.72"


def test_models_left_out_of_train_models_still_show_their_published_claims():
    table = publish.table_not_trained(["cnn-dropout-1", "svc"])
    by_name = {row[0]: row for row in table.rows}
    assert set(by_name) == set(registry.names()) - {"cnn-dropout-1", "svc"}
    assert by_name["paper-b-cnn-dropout"][2] == "92.56" and by_name["cnn-simple"][4] == "110,968"
    assert "train.models" in table.caption
    assert publish.table_not_trained(registry.names()) is None


def test_hyperparameters_table_shows_what_training_recorded(workspace):
    md = (workspace["paths"]["out"] / "comparison.md").read_text()
    assert "Hyperparameters used in this run" in md
    svc_row = next(line for line in md.splitlines() if line.startswith("| svc "))
    assert "C=10" in svc_row and "kernel=rbf" in svc_row
    # A value changed in params.yaml (recorded in train.json) is what the table shows, not a registry default.
    results = publish.load_results(["svc"], workspace["paths"]["metrics"], workspace["paths"]["models"], [42])
    results[0].train_meta["hyperparams"] = {**results[0].train_meta["hyperparams"], "C": 2.5}
    table = publish.table_hyperparameters(results)
    assert "C=2.5" in table.rows[0][1] and "C=10" not in table.rows[0][1]


def test_model_descriptions_carry_no_hyperparameter_values():
    # params.yaml is the only home of hyperparameter values; a description quoting one ("dropout 0.5",
    # "C=10", "dense 128") would go stale the day a user changes params.yaml.
    def numbers(value):
        if isinstance(value, (list, tuple)):
            return [n for v in value for n in numbers(v)]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value not in (0, 1):
            return [value]
        return []

    for name in registry.names():
        description = registry.get(name).description
        for key, value in shipped_hyperparams(name).items():
            for number in numbers(value):
                for text in {str(number), format(number, "g")}:
                    assert not re.search(rf"(?<![\w.]){re.escape(text)}(?![\w.])", description), (name, key, text)


# ------------------------------------------------------------------ seeds: mean +- std, verdicts, accuracy.json
def test_accuracy_summary_is_the_flat_per_model_metrics_file(workspace):
    summary = json.loads(workspace["paths"]["summary"].read_text())
    records = {r["model"]: r for r in workspace["summary"]["records"]}
    assert sorted(summary) == sorted(workspace["names"])
    for name, entry in summary.items():
        assert set(entry) == {"test_acc", "ci95_low", "ci95_high", "seed_std", "gap_pp"}
        assert entry["test_acc"] == pytest.approx(records[name]["test_accuracy_pct"], abs=1e-4)
        assert entry["ci95_low"] <= entry["test_acc"] <= entry["ci95_high"]
        assert entry["seed_std"] is None                      # one seed: no spread to report


@pytest.fixture(scope="module")
def seeded(small_split, tmp_path_factory):
    names, seeds = ["gaussian-nb", "sgd", "cnn-dropout-1"], (3, 5, 8)
    root = tmp_path_factory.mktemp("publish-seeds")
    paths = build_workspace(root, small_split, names, seeds)
    return {"paths": paths, "names": names, "seeds": seeds, "summary": run_publish(paths, names, seeds=seeds)}


def test_several_seeds_report_mean_and_std_over_the_runs(seeded):
    paths, seeds = seeded["paths"], seeded["seeds"]
    summary = json.loads(paths["summary"].read_text())
    for rec in seeded["summary"]["records"]:
        accs = [100 * io.read_json(paths["metrics"] / rec["model"] / f"seed-{s}.json")["test"]["accuracy"]
                for s in seeds]
        assert len(set(accs)) > 1, "the fixture must give each seed a different model"
        assert rec["seeds"] == "3 5 8"
        assert rec["test_accuracy_pct"] == pytest.approx(np.mean(accs))
        assert rec["test_accuracy_std_pp"] == pytest.approx(np.std(accs, ddof=1))
        assert summary[rec["model"]]["seed_std"] == pytest.approx(np.std(accs, ddof=1), abs=1e-4)
        # the verdict interval contains the Wilson CI and is wider by the seed spread
        assert rec["verdict_low_pct"] < rec["ci95_low_pct"] <= rec["test_accuracy_pct"] <= rec["ci95_high_pct"] \
            < rec["verdict_high_pct"]
    md = (paths["out"] / "comparison.md").read_text()
    assert "(3 seeds)" in md and "claim holds?" in md
    hp_row = next(line for line in md.splitlines() if line.startswith("| sgd ") and "max_iter=" in line)
    assert hp_row.rstrip(" |").endswith("3, 5, 8")


def test_seed_spread_enters_the_claim_verdict(seeded):
    results = publish.load_results(seeded["names"], seeded["paths"]["metrics"], seeded["paths"]["models"],
                                   list(seeded["seeds"]))
    r = results[0]
    low, high = r.ci95
    sd = r.accuracy_std
    just_outside_ci = high + 0.5 * sd          # outside the Wilson CI, inside CI (+) 2 sd in quadrature
    assert r.claim_holds(just_outside_ci) is True
    assert r.claim_holds(r.verdict_interval[1] + 0.01) is False
    single = publish.ModelResult(r.name, r.spec, r.runs[:1], r.y_true)   # one seed: the Wilson CI decides
    test = r.runs[0].metrics["test"]
    assert single.verdict_interval == (100 * test["accuracy_ci95_low"], 100 * test["accuracy_ci95_high"])
    assert single.claim_holds(100 * test["accuracy_ci95_high"] + 0.01) is False
    assert r.claim_holds(None) is None


def test_the_interval_at_the_mean_over_seeds_is_the_evaluate_stages_wilson_interval(seeded):
    # One home for the Wilson interval (pipeline.training.evaluate, scipy): publish's mean-over-seeds interval is it,
    # at the mean correct count rounded to whole images.
    from pipeline.publish.results import load_results

    paths = seeded["paths"]
    (r,) = load_results(["gaussian-nb"], paths["metrics"], paths["models"], seeds=seeded["seeds"])
    n = int(r.metrics["test"]["n"])
    low, high = metrics.wilson_interval(int(round(r.accuracy / 100 * n)), n)
    assert r.ci95 == (100 * low, 100 * high)


def test_a_missing_seed_run_is_named(seeded):
    paths = seeded["paths"]
    with pytest.raises(PipelineError, match=r"gaussian-nb-13 .*seed-13\.json missing"):
        publish.load_results(["gaussian-nb"], paths["metrics"], paths["models"], [3, 13])


def test_near_duplicate_caveat_is_the_measured_figure_with_the_literature_beside_it():
    measured = publish.near_duplicate_sentence({"count": 49, "share": 0.0049, "max_rms": 0.05})
    assert "0.49% of the test images (49)" in measured and "RMS pixel difference 0.05" in measured
    assert "5.98%" in measured and "literature" in measured
    unmeasured = publish.near_duplicate_sentence(None)
    assert "not measured" in unmeasured and "0.49" not in unmeasured
