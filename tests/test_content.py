"""The data gate's content checks on REAL Fashion-MNIST: duplicates, leakage, degenerate images and drift from
the reference profile. The official data and random subsets pass; well-formed files with the wrong content fail
with a message that says what, where and by how much."""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.data import content
from pipeline.data.fetch import to_kaggle_table
from pipeline.data.validate.gate import load_reference, validate_table, validate_tables
from pipeline.params import ValidateParams
from pipeline.schema import CLASS_NAMES
from tests.conftest import REPO, call_cli, run_cli, shipped_params, shipped_validate_params

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
    for split in (train, test):      # no diagnosis: the unchanged reference explains the official data
        assert split["drift"]["diagnosis"]["cause"] == "none" and split["drift"]["diagnosis"]["message"] == ""
        assert all(c["looks_like"] == "" for c in split["drift"]["classes"])
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
    assert [s["summary"]["content"]["drift"]["diagnosis"]["cause"] for s in report["splits"].values()] == ["none"] * 2


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


@functools.cache
def digits_28() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits (real 8x8 scans, 1797 of them), scaled to 28x28 grey levels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    imgs = np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((28, 28), Image.BILINEAR))
                     for im in digits.images])
    return imgs, digits.target


def test_another_dataset_in_the_same_layout_is_rejected(real):
    """The digits exported in the 785-column layout: a well-formed file of the wrong dataset."""
    imgs, labels = digits_28()
    report = gate(real["x"], real["y"], imgs, labels, params_for(TRAIN, len(labels)))
    msgs = failed(report)
    assert not report["success"] and {"drift_pixel_js", "drift_mean_image_rmse"} <= set(msgs)
    assert "10 of 10 classes" in msgs["drift_mean_image_rmse"]
    assert "; the data look like: another data set: " in msgs["drift_mean_image_rmse"]


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
    good = call_cli(*args, cwd=tmp_path)   # in process: test_validate runs the real command
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "data/validation/docs/near_duplicates.png").read_bytes()[:4] == b"\x89PNG"
    before = {p: p.read_bytes() for p in (tmp_path / "data/validation").rglob("*") if p.is_file()}

    pq.write_table(to_kaggle_table(255 - real["xt"], real["yt"]), interim / "test.parquet")
    bad = call_cli(*args, cwd=tmp_path)
    assert bad.returncode == 3, bad.stderr
    assert "test: mean-image RMS difference above 0.08 in 10 of 10 classes" in bad.stderr
    assert "inverted images (255 - value)" in bad.stderr and "Traceback" not in bad.stderr
    after = {p: p.read_bytes() for p in (tmp_path / "data/validation").rglob("*") if p.is_file()
             and ".failed" not in str(p.relative_to(tmp_path))}
    assert after == before
    failed_report = json.loads((tmp_path / "data/validation/report.failed.json").read_text())
    assert not failed_report["success"] and failed_report["splits"]["train"]["success"]
    shutil.rmtree(tmp_path / "data")


# ------------------------------------------------------------------------------------ the drift diagnosis
# A drifted split is diagnosed on all its classes at once (content.diagnose); a cause is named only where its model
# fits clearly, else "cause unknown". Every case below corrupts the real test slice in one known way; what the
# message must say is derived from that corruption.
PERMUTATION = np.random.default_rng(5).permutation(10)      # images of class c get label PERMUTATION[c]


def _permuted_words() -> str:
    moved = sorted((int(label), c) for c, label in enumerate(PERMUTATION) if label != c)
    return ", ".join(f"'{CLASS_NAMES[c]}' ({c}) images carry label '{CLASS_NAMES[label]}' ({label})"
                     for label, c in moved[:3])


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Images moved dy px down and dx px right, the uncovered border black."""
    padded = np.pad(x, ((0, 0), (max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))))
    return padded[:, max(-dy, 0):max(-dy, 0) + x.shape[1], max(-dx, 0):max(-dx, 0) + x.shape[2]]


def _noisy(x: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
    return np.clip(np.round(x + np.random.default_rng(seed).normal(0, std, x.shape)), 0, 255).astype(np.uint8)


def _random_warp(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each image rotated by up to 25 degrees, scaled by up to 20% and moved by up to 2 px, at random (bilinear)."""
    from scipy.ndimage import affine_transform

    rng, centre, out = np.random.default_rng(seed), np.array([13.5, 13.5]), []
    for image in x:
        angle, scale = np.deg2rad(rng.uniform(-25, 25)), 1 + rng.uniform(-0.2, 0.2)
        matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
        out.append(affine_transform(image.astype(float), matrix, centre - matrix @ centre + rng.uniform(-2, 2, 2),
                                    order=1))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _rotated(x: np.ndarray, degrees: float) -> np.ndarray:
    """Images rotated by `degrees` about their centre (bilinear)."""
    from scipy.ndimage import rotate

    return np.clip(np.round(rotate(x.astype(float), degrees, axes=(1, 2), reshape=False, order=1)), 0, 255
                   ).astype(np.uint8)


CAUSE_CASES = {
    # name: (how the test split is corrupted, the cause diagnosed, words the message must hold)
    "inverted": (lambda r: (255 - r["xt"], r["yt"]), "inverted", "inverted images (255 - value)"),
    "mirrored": (lambda r: (r["xt"][:, :, ::-1], r["yt"]), "mirrored", "images mirrored left-right"),
    "upside-down": (lambda r: (r["xt"][:, ::-1, :], r["yt"]), "upside_down", "images upside down"),
    "rotated-180": (lambda r: (r["xt"][:, ::-1, ::-1], r["yt"]), "rotated_180", "images rotated 180 degrees"),
    "rotated-90-cw": (lambda r: (np.rot90(r["xt"], -1, axes=(1, 2)), r["yt"]), "rotated_90_cw",
                      "images rotated 90 degrees clockwise"),
    "rotated-90-ccw": (lambda r: (np.rot90(r["xt"], 1, axes=(1, 2)), r["yt"]), "rotated_90_ccw",
                       "images rotated 90 degrees counter-clockwise"),
    "transposed": (lambda r: (r["xt"].transpose(0, 2, 1), r["yt"]), "transposed", "images transposed"),
    "shifted-with-wrap": (lambda r: (np.roll(r["xt"], 3, axis=2), r["yt"]), "shifted",
                          "images shifted 3 px right (wrapping around)"),
    "shifted": (lambda r: (_shift(r["xt"], -2, 2), r["yt"]), "shifted", "images shifted 2 px up and 2 px right"),
    "halved": (lambda r: ((r["xt"] * 0.5).astype(np.uint8), r["yt"]), "rescaled",
               f"intensity rescaled: pixel values look multiplied by {0.5:.2f}"),
    "brightened": (lambda r: (np.clip(r["xt"] * 1.3, 0, 255).astype(np.uint8), r["yt"]), "rescaled",
                   f"intensity rescaled: pixel values look multiplied by {1.3:.2f}"),
    "noise": (lambda r: (_noisy(r["xt"], 20), r["yt"]), "noise",
              "noise added: the class mean images are unchanged but the pixel values look spread by gaussian noise"),
    "labels-permuted": (lambda r: (r["xt"], PERMUTATION[r["yt"]]), "labels_permuted",
                        "labels permuted: " + _permuted_words()),
    "labels-shuffled": (lambda r: (r["xt"], np.random.default_rng(0).permutation(r["yt"])), "labels_unrelated",
                        "labels unrelated to the images"),
    "another-data-set": (lambda r: digits_28(), "another_dataset", "another data set: "),
}
UNKNOWN_CASES = {   # no single known corruption: the diagnosis must not guess
    "inverted-and-mirrored": lambda r: (255 - r["xt"][:, :, ::-1], r["yt"]),
    "halved-plus-noise": lambda r: (_noisy(r["xt"] * 0.5, 20), r["yt"]),
    "random-warp": lambda r: (_random_warp(r["xt"]), r["yt"]),
    "mirrored-and-labels-permuted": lambda r: (r["xt"][:, :, ::-1], PERMUTATION[r["yt"]]),
}


@pytest.fixture(scope="module")
def profile():
    return load_reference(shipped_validate_params())


def diagnose(xt, yt, profile) -> dict:
    return content.diagnose(xt, yt, profile, int(shipped_validate_params().drift["min_class_rows"]))


def judge_test_split(xt, yt) -> tuple[str, dict]:
    """The test split alone through the gate: (its first drift failure message, the report's diagnosis)."""
    result = validate_table(to_kaggle_table(xt, yt), "test", params_for(TRAIN, len(yt)))
    drift = [m for m in result.failures if "against the reference profile" in m]
    assert drift, result.failures
    return drift[0], result.summary["content"]["drift"]["diagnosis"]


def named_causes(message: str) -> list[str]:
    return [cause for cause, words in content.CAUSES.items() if words in message]


@pytest.mark.parametrize("case", sorted(CAUSE_CASES))
def test_drift_message_names_the_one_cause_the_data_support(real, case):
    corrupt, cause, words = CAUSE_CASES[case]
    message, diagnosis = judge_test_split(*corrupt(real))
    assert diagnosis["cause"] == cause, diagnosis
    assert f"; the data look like: {content.CAUSES[cause]}" in message and words in message, message
    assert named_causes(message) == [cause] and content.UNKNOWN not in message, message
    if cause == "noise":
        assert abs(diagnosis["statistics"]["noise_std"] - 20) <= 2


@pytest.mark.parametrize("case, says", [("halved", "intensity rescaled: pixel values look multiplied by 0.50"),
                                        ("labels-shuffled", "labels unrelated to the images")],
                         ids=["halved", "labels-shuffled"])
def test_halved_intensity_and_shuffled_labels_are_not_called_a_permutation(real, case, says):
    xt, yt = CAUSE_CASES[case][0](real)
    drift = [m for m in failed(gate(real["x"], real["y"], xt, yt)).values() if "against the reference profile" in m]
    assert drift and all(says in m and "permuted" not in m for m in drift), drift


@pytest.mark.parametrize("case", sorted(UNKNOWN_CASES))
def test_drift_no_known_corruption_explains_is_cause_unknown(real, case):
    message, diagnosis = judge_test_split(*UNKNOWN_CASES[case](real))
    assert diagnosis["cause"] == "unknown" and message.endswith("; " + content.UNKNOWN), message
    assert named_causes(message) == [], message


CONFUSABLE = [   # (case a, case b, the statistic whose model fits tell them apart)
    ("labels-permuted", "labels-shuffled", "mean_image_misfit"),
    ("halved", "inverted", "pixel_histogram_js"),
    ("noise", "halved", "pixel_histogram_js"),
    ("shifted", "mirrored", "mean_image_misfit"),
    ("shifted-with-wrap", "rotated-180", "mean_image_misfit"),
    ("mirrored", "transposed", "mean_image_misfit"),
    ("mirrored", "rotated-180", "mean_image_misfit"),
    ("upside-down", "rotated-180", "mean_image_misfit"),
    ("transposed", "rotated-90-cw", "mean_image_misfit"),
    ("rotated-90-cw", "rotated-90-ccw", "mean_image_misfit"),
]


@pytest.mark.parametrize("a, b, statistic", CONFUSABLE, ids=[f"{a}-vs-{b}" for a, b, _ in CONFUSABLE])
def test_confusable_causes_are_told_apart(real, profile, a, b, statistic):
    """On each case's data its own model fits, and clearly better than the other case's model."""
    ratio = content.CLEAR_RATIO if statistic == "mean_image_misfit" else content.HIST_CLEAR_RATIO
    for this, other in ((a, b), (b, a)):
        corrupt, cause, _ = CAUSE_CASES[this]
        diagnosis = diagnose(*corrupt(real), profile)
        fits = diagnosis["statistics"][statistic]
        assert diagnosis["cause"] == cause, (this, diagnosis["cause"])
        assert fits[cause] <= ratio * fits[CAUSE_CASES[other][1]], (this, fits)
        if statistic == "mean_image_misfit":
            assert fits[cause] <= 1, (this, fits)


def test_another_data_set_is_told_apart_from_an_unknown_cause(real, profile):
    """Digits, and Fashion-MNIST halved plus noise, both match no model of the pixel values and both move the
    per-image amount of ink; only the digits' class mean images are shaped like no Fashion-MNIST class. Rotated
    Fashion-MNIST keeps its ink. Only the digits are called another data set."""
    def foreign_share(d):
        return float(np.mean(np.array(d["statistics"]["shape_similarity"]) < content.FOREIGN_CORRELATION))

    digits = diagnose(*digits_28(), profile)
    mix = diagnose(*UNKNOWN_CASES["halved-plus-noise"](real), profile)
    rotated = diagnose(_rotated(real["xt"], 20), real["yt"], profile)
    for d in (digits, mix):
        assert d["statistics"]["pixel_values"] == "no model fits"
    assert digits["cause"] == "another_dataset" and foreign_share(digits) > content.FOREIGN_CLASS_SHARE
    assert digits["statistics"]["intensity_ks"] >= content.FOREIGN_INK_KS
    assert mix["cause"] == "unknown" and foreign_share(mix) == 0
    assert mix["statistics"]["intensity_ks"] >= content.FOREIGN_INK_KS
    assert rotated["cause"] == "unknown" and rotated["statistics"]["intensity_ks"] < content.FOREIGN_INK_KS
