"""The data gate's content checks on REAL Fashion-MNIST: duplicates, leakage, degenerate images and drift from
the reference profile. The official data and random subsets pass; well-formed files with the wrong content fail
with a message that says what, where and by how much."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.data import content
from pipeline.data.fetch import to_kaggle_table
from pipeline.data.validate.gate import validate_tables
from pipeline.params import ValidateParams
from tests.conftest import REPO, run_cli, shipped_params, shipped_validate_params

TRAIN, TEST = 3000, 2000      # >= 150 rows per class, so every class's drift is judged


def params_for(train: int = TRAIN, test: int = TEST) -> ValidateParams:
    return dataclasses.replace(shipped_validate_params(), expected_rows={"train": train, "test": test},
                               class_share_tolerance=0.05)


@pytest.fixture(scope="module")
def real(fmnist):
    (x, y), (xt, yt) = fmnist["train"], fmnist["test"]
    return {"x": x[:TRAIN], "y": y[:TRAIN], "xt": xt[:TEST], "yt": yt[:TEST]}


def gate(x, y, xt, yt, params=None):
    tables = {"train": to_kaggle_table(x, y), "test": to_kaggle_table(xt, yt)}
    return validate_tables(tables, params or params_for(len(y), len(yt)))


def failed(report) -> dict[str, str]:
    """check name -> its message, for every failed (not warning) expectation of every split."""
    return {e["name"]: e["message"] for split in report["splits"].values() for e in split["expectations"]
            if not e["success"] and e["severity"] != "warning"}


# ------------------------------------------------------------------------------------------ pure parts
def test_duplicates_are_found_by_hash_and_confirmed_byte_for_byte(real, monkeypatch):
    x = real["x"].reshape(TRAIN, -1).copy()
    assert (content.duplicate_of(x) == -1).all()           # the official images have no exact repeats
    x[[100, 2500]] = x[7]
    dup = content.duplicate_of(x)
    assert dup[100] == 7 and dup[2500] == 7 and (dup >= 0).sum() == 2
    # Every row hashing alike must not make distinct images "duplicates": equality is checked on the bytes.
    monkeypatch.setattr(content, "row_hashes", lambda a: np.zeros(len(a), dtype=np.uint64))
    small = x[:300].copy()
    small[250] = small[20]
    dup = content.duplicate_of(small)
    assert {int(i): int(dup[i]) for i in np.flatnonzero(dup >= 0)} == {100: 7, 250: 20}
    assert content.found_in(small[[5, 250]], x[1000:1300]).tolist() == [-1, -1]
    assert content.found_in(x[[1005]], x[1000:1300]).tolist() == [5]


def test_found_in_names_the_training_row(real):
    x, xt = real["x"].reshape(TRAIN, -1), real["xt"].reshape(TEST, -1)
    query = np.concatenate([xt[:5], x[[11, 222]]])
    assert content.found_in(query, x).tolist() == [-1] * 5 + [11, 222]


def test_nearest_within_matches_a_brute_force_scan(fmnist):
    (x, _), (xt, _) = fmnist["train"], fmnist["test"]
    ref, query = x[:20000].reshape(20000, -1), xt[:2000].reshape(2000, -1)
    index, rms = content.nearest_within(query, ref, 0.07)
    a, b = query.astype(np.float64) / 255, ref.astype(np.float64) / 255
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    best = np.sqrt(np.maximum(d2.min(1), 0) / 784)
    expected = best <= 0.07
    assert expected.sum() >= 3, "the slice must contain near-duplicates for this test to mean anything"
    assert np.array_equal(index >= 0, expected)
    np.testing.assert_allclose(rms[expected], best[expected], atol=1e-4)
    np.testing.assert_array_equal(index[expected], d2.argmin(1)[expected])


def test_degenerate_images_are_named(real):
    x = real["x"].reshape(TRAIN, -1).copy()
    assert (content.degenerate_kind(x) == "").all()
    x[3], x[4], x[5] = 0, 77, np.maximum(x[5], 255 * (np.arange(784) % 3 != 0))
    kinds = content.degenerate_kind(x)
    assert kinds[3] == "blank" and kinds[4] == "constant" and kinds[5] == "saturated"
    assert (kinds != "").sum() == 3


def test_committed_reference_profile_is_what_the_profile_command_builds(tmp_path):
    out = tmp_path / "profile.json"
    proc = run_cli("profile", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == (REPO / "pipeline/data/fashion_mnist_profile.json").read_bytes()
    profile = json.loads(out.read_text())
    assert profile["images"] == 70000 and len(profile["classes"]) == 10
    assert out.stat().st_size < 100_000          # small enough to commit and review


# ------------------------------------------------------------------------------------------ the gate
def test_official_data_pass_with_content_measured(fmnist):
    (x, y), (xt, yt) = fmnist["train"], fmnist["test"]
    report = gate(x, y, xt, yt, shipped_validate_params())
    assert report["success"] and report["failures"] == [] and report["warnings"] == []
    test = report["splits"]["test"]["summary"]["content"]
    train = report["splits"]["train"]["summary"]["content"]
    assert train["duplicates"] == 0 and test["duplicates"] == 0 and test["test_in_train"] == 0
    assert train["degenerate_images"] == {} and test["degenerate_images"] == {}
    near = test["near_duplicates"]
    assert 0 < near["count"] < 100 and near["share"] == near["count"] / 10000 and near["max_rms"] == 0.05
    drift = test["drift"]["classes"]
    assert len(drift) == 10 and all(c["mean_image_rmse"] < 0.02 for c in drift)
    names = {e["name"] for e in report["splits"]["test"]["expectations"]}
    assert {"duplicates", "degenerate_images", "test_in_train", "near_duplicates", "drift_pixel_js",
            "drift_mean_image_rmse", "drift_intensity_psi"} <= names


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_subsets_of_2000_rows_pass(fmnist, seed):
    (x, y), (xt, yt) = fmnist["train"], fmnist["test"]
    rng = np.random.default_rng(seed)
    i, j = rng.choice(len(y), 2000, replace=False), rng.choice(len(yt), 2000, replace=False)
    params = dataclasses.replace(params_for(2000, 2000), class_share_tolerance=0.1)
    report = gate(x[i], y[i], xt[j], yt[j], params)
    assert report["success"], report["failures"]


def _flip_lr(x):
    return x[:, :, ::-1]


CONTENT_ERRORS = {
    # name: (how the test split is corrupted, the check that must fail, words the message must hold)
    "inverted": (lambda r: (255 - r["xt"], r["yt"]), "drift_mean_image_rmse", "inverted images"),
    "labels-permuted": (lambda r: (r["xt"], (r["yt"] + 1) % 10), "drift_mean_image_rmse", "labels permuted"),
    "mirrored": (lambda r: (_flip_lr(r["xt"]), r["yt"]), "drift_mean_image_rmse", "mirrored left-right"),
    "darker": (lambda r: ((r["xt"] * 0.6).astype(np.uint8), r["yt"]), "drift_pixel_js", "Jensen-Shannon"),
    "shifted-3px": (lambda r: (np.roll(r["xt"], 3, axis=2), r["yt"]), "drift_mean_image_rmse", "mean-image"),
    "test-copied-from-train": (lambda r: (r["x"][:TEST], r["y"][:TEST]), "test_in_train", "train row 0"),
    "blank-images": (lambda r: (np.where(np.arange(TEST)[:, None, None] < 30, 0, r["xt"]).astype(np.uint8),
                                r["yt"]), "degenerate_images", "30 blank"),
    "repeated-images": (lambda r: (np.concatenate([r["xt"][:1900], r["xt"][:100]]),
                                   np.concatenate([r["yt"][:1900], r["yt"][:100]])), "duplicates", "row 1900 = row 0"),
}


@pytest.mark.parametrize("case", sorted(CONTENT_ERRORS))
def test_wrong_content_is_rejected_with_a_specific_message(real, case):
    corrupt, check, words = CONTENT_ERRORS[case]
    xt, yt = corrupt(real)
    report = gate(real["x"], real["y"], xt, yt)
    assert not report["success"]
    msgs = failed(report)
    assert check in msgs, (case, list(msgs))
    assert msgs[check].startswith("test: ") and words in msgs[check], msgs[check]
    assert "train" not in {s for s, r in report["splits"].items() if not r["success"]}   # only the bad split


def test_another_dataset_in_the_same_layout_is_rejected(real):
    """scikit-learn's bundled handwritten digits (real 8x8 scans), scaled to 28x28 grey levels and exported in
    the 785-column layout: a well-formed file of the wrong dataset."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    imgs = np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((28, 28), Image.BILINEAR))
                     for im in digits.images])
    report = gate(real["x"], real["y"], imgs[:1797], digits.target[:1797], params_for(TRAIN, 1797))
    msgs = failed(report)
    assert not report["success"] and {"drift_pixel_js", "drift_mean_image_rmse"} <= set(msgs)
    assert "10 of 10 classes" in msgs["drift_mean_image_rmse"]


def test_near_duplicates_over_the_limit_warn_but_pass(real):
    """A test split made of training images with a little noise: not identical (no exact leakage), but near."""
    noise = np.random.default_rng(0).integers(-3, 4, size=real["x"][:TEST].shape)
    xt = np.clip(real["x"][:TEST].astype(int) + noise, 0, 255).astype(np.uint8)
    report = gate(real["x"], real["y"], xt, real["y"][:TEST])
    assert report["success"], report["failures"]
    assert len(report["warnings"]) == 1 and "within RMS pixel difference 0.05" in report["warnings"][0]
    assert report["warnings"][0].endswith("[warning]")
    near = next(e for e in report["splits"]["test"]["expectations"] if e["name"] == "near_duplicates")
    assert near["severity"] == "warning" and not near["success"]
    # the same data fail once near-duplicates are configured as a failure
    params = dataclasses.replace(params_for(), near_duplicates={"max_rms": 0.05, "max_share": 0.01,
                                                                "on_exceed": "fail"})
    assert "near_duplicates" in failed(gate(real["x"], real["y"], xt, real["y"][:TEST], params))


def test_cli_rejects_inverted_images_with_exit_3_and_keeps_the_last_good_report(real, tmp_path):
    import shutil

    import yaml

    interim = tmp_path / "data/interim"
    interim.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["validate"]["expected_rows"] = {"train": TRAIN, "test": TEST}
    params["validate"]["class_share_tolerance"] = 0.05
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    pq.write_table(to_kaggle_table(real["x"], real["y"]), interim / "train.parquet")
    pq.write_table(to_kaggle_table(real["xt"], real["yt"]), interim / "test.parquet")
    args = ("validate", "--interim", "data/interim", "--report", "data/validation/report.json",
            "--docs", "data/validation/docs")
    good = run_cli(*args, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "data/validation/docs/near_duplicates.png").read_bytes()[:4] == b"\x89PNG"
    before = {p: p.read_bytes() for p in (tmp_path / "data/validation").rglob("*") if p.is_file()}

    pq.write_table(to_kaggle_table(255 - real["xt"], real["yt"]), interim / "test.parquet")
    bad = run_cli(*args, cwd=tmp_path)
    assert bad.returncode == 3, bad.stderr
    assert "test: mean-image RMS difference above 0.08 in 10 of 10 classes" in bad.stderr
    assert "inverted images (255 - value)" in bad.stderr and "Traceback" not in bad.stderr
    after = {p: p.read_bytes() for p in (tmp_path / "data/validation").rglob("*") if p.is_file()
             and ".failed" not in str(p.relative_to(tmp_path))}
    assert after == before
    failed_report = json.loads((tmp_path / "data/validation/report.failed.json").read_text())
    assert not failed_report["success"] and failed_report["splits"]["train"]["success"]
    shutil.rmtree(tmp_path / "data")
