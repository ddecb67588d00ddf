"""The validate gate on REAL Fashion-MNIST slices: it passes clean data and names every corruption."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.data.fetch import to_kaggle_table, write_kaggle_csv
from pipeline.data.ingest import read_kaggle_csv
from pipeline.data.validate.gate import validate_table, validate_tables
from pipeline.data.validate.stage import validate, validate_dir
from pipeline.errors import PipelineError, ValidationFailed
from pipeline.params import ValidateParams
from pipeline.schema import CSV_COLUMNS

from tests.conftest import REPO, call_cli, run_cli, shipped_params, shipped_validate_params

TRAIN_ROWS, TEST_ROWS = 2000, 1000


def params_for(train: int = TRAIN_ROWS, test: int = TEST_ROWS, tol: float = 0.05) -> ValidateParams:
    return dataclasses.replace(shipped_validate_params(), expected_rows={"train": train, "test": test},
                               class_share_tolerance=tol, max_examples=5)


@pytest.fixture(scope="module")
def tables(fmnist) -> dict[str, pa.Table]:
    (x, y), (xt, yt) = fmnist["train"], fmnist["test"]
    return {"train": to_kaggle_table(x[:TRAIN_ROWS], y[:TRAIN_ROWS]),
            "test": to_kaggle_table(xt[:TEST_ROWS], yt[:TEST_ROWS])}


def failed_checks(result) -> set[str]:
    return {e["name"] for e in result.expectations if not e["success"]}


def test_real_slices_pass(tables):
    report = validate_tables(tables, params_for())
    assert report["success"] is True and report["failures"] == [] and report["failed_expectations"] == 0
    train = report["splits"]["train"]
    assert train["rows"] == TRAIN_ROWS and train["columns"] == 785
    assert train["expectations_total"] >= 10
    names = {e["name"] for e in train["expectations"]}
    assert {"column_order", "row_count", "row_nulls", "label_range", "class_present", "class_share"} <= names
    assert train["summary"]["null_cells"] == 0 and train["summary"]["pixel_max"] <= 255
    json.dumps(report, allow_nan=False)  # a valid JSON metric file: no NaN


def test_empty_and_nan_cells_read_from_csv_are_caught(fmnist, tmp_path):
    x, y = fmnist["train"]
    path = tmp_path / "train.csv"
    write_kaggle_csv(to_kaggle_table(x[:TRAIN_ROWS], y[:TRAIN_ROWS]), path)
    lines = path.read_text().split("\n")
    row17 = lines[1 + 17].split(",")
    row17[200] = ""  # column #201 = pixel200, left empty
    lines[1 + 17] = ",".join(row17)
    row900 = lines[1 + 900].split(",")
    row900[784] = "NaN"  # pixel784 spelled NaN
    lines[1 + 900] = ",".join(row900)
    path.write_text("\n".join(lines))
    table = read_kaggle_csv(path)
    assert table.column("pixel200").null_count == 1

    result = validate_table(table, "train", params_for())
    assert not result.success
    assert {"row_nulls", "column_nulls"} <= failed_checks(result)
    message = "\n".join(result.failures)
    assert "train: 2 null cell(s) in 2 row(s): row 17, column pixel200; row 900, column pixel784" in message
    assert "pixel200 (1 null)" in message
    row_nulls = next(e for e in result.expectations if e["name"] == "row_nulls")
    assert row_nulls["examples"] == [{"row": 17, "columns": ["pixel200"]}, {"row": 900, "columns": ["pixel784"]}]


def test_single_null_among_full_dataset(fmnist):
    """One null among 47M cells of the full 60k train set fails the gate and is located."""
    x, y = fmnist["train"]
    table = to_kaggle_table(x, y)
    col = table.column("pixel500").to_numpy().astype(object)
    col[54321] = None
    table = table.set_column(500, "pixel500", pa.array(col, type=pa.uint8()))
    result = validate_table(table, "train", shipped_validate_params())
    assert failed_checks(result) == {"row_nulls", "column_nulls"}
    assert "train: 1 null cell(s) in 1 row(s): row 54321, column pixel500" in result.failures


def test_label_out_of_range(fmnist):
    xt, yt = fmnist["test"]
    y = yt[:TEST_ROWS].copy()
    y[5] = 10
    result = validate_table(to_kaggle_table(xt[:TEST_ROWS], y), "test", params_for())
    assert "label_range" in failed_checks(result)
    assert "test: 1 label value(s) outside 0..9: row 5 -> 10" in result.failures


def test_missing_column(tables):
    result = validate_table(tables["train"].drop_columns(["pixel784"]), "train", params_for())
    assert failed_checks(result) == {"column_order"}
    assert result.failures == ["train: missing column(s): pixel784; 784 columns, expected 785"]


def test_swapped_column_order(tables):
    names = list(CSV_COLUMNS)
    names[1], names[2] = names[2], names[1]
    result = validate_table(tables["train"].select(names), "train", params_for())
    assert failed_checks(result) == {"column_order"}
    assert result.failures == [
        "train: columns out of order: position 2 is pixel2, expected pixel1 (2 positions differ)"]


def test_dropped_class(fmnist):
    x, y = fmnist["train"]
    x, y = x[:TRAIN_ROWS], y[:TRAIN_ROWS]
    keep = y != 8
    result = validate_table(to_kaggle_table(x[keep], y[keep]), "train", params_for(train=int(keep.sum())))
    assert failed_checks(result) == {"class_present", "class_share"}
    assert "train: 1 class(es) have no rows: 'Bag' (8)" in result.failures


def test_5000_rows_of_one_class_removed_full_data(fmnist):
    x, y = fmnist["train"]
    drop = np.flatnonzero(y == 8)[:5000]
    keep = np.ones(len(y), dtype=bool)
    keep[drop] = False
    table = to_kaggle_table(x[keep], y[keep])
    # Expected rows adjusted so the class share is the only thing wrong.
    params = dataclasses.replace(shipped_validate_params(), expected_rows={"train": 55000, "test": 10000})
    result = validate_table(table, "train", params)
    assert failed_checks(result) == {"class_share"}
    assert result.failures == ["train: 1 class share(s) outside 0.08..0.12: class 'Bag' (8) share 0.018 (1000 rows)"]
    # With the default params the row count fails as well.
    result = validate_table(table, "train", shipped_validate_params())
    assert failed_checks(result) == {"class_share", "row_count"}
    assert "train: 55000 rows, expected 60000" in result.failures


def test_wrong_row_count(tables):
    result = validate_table(tables["test"].slice(0, TEST_ROWS - 1), "test", params_for())
    assert failed_checks(result) == {"row_count"}
    assert result.failures == [f"test: {TEST_ROWS - 1} rows, expected {TEST_ROWS}"]


def test_wider_types_out_of_range_and_non_integer(tables):
    """A Parquet written by other tools (int64/float columns) is checked for range and integrality."""
    df = tables["test"].to_pandas().astype("int64")
    df.loc[7, "pixel3"] = 300
    df["pixel9"] = df["pixel9"].astype("float64")
    df.loc[11, "pixel9"] = 2.5
    df.loc[12, "pixel9"] = np.inf
    result = validate_table(df, "test", params_for())
    assert {"pixel_max", "column_max", "row_integers", "column_integers"} <= failed_checks(result)
    message = "\n".join(result.failures)
    assert "row 7: pixel3=300" in message
    assert "row 11: pixel9=2.5" in message and "row 12: pixel9=inf" in message
    assert "pixel9 (double)" in message


def test_bad_params_are_config_errors(tables):
    with pytest.raises(PipelineError, match="expected_rows has no entry for test"):
        validate_tables(tables, dataclasses.replace(params_for(), expected_rows={"train": TRAIN_ROWS}))


# ------------------------------------------------------------------------------------------ I/O + CLI
def write_interim(tables: dict[str, pa.Table], interim: Path) -> None:
    interim.mkdir(parents=True, exist_ok=True)
    for split, table in tables.items():
        pq.write_table(table, interim / f"{split}.parquet")


def write_params(path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["validate"].update(expected_rows={"train": TRAIN_ROWS, "test": TEST_ROWS}, class_share_tolerance=0.05)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_cli_failure_keeps_previous_good_outputs(tables, tmp_path):
    write_interim(tables, tmp_path / "data/interim")
    write_params(tmp_path / "params.yaml")
    args = ("validate", "--params", "params.yaml", "--interim", "data/interim",
            "--report", "data/validation/report.json", "--docs", "data/validation/docs")
    good = call_cli(*args, cwd=tmp_path)   # in process; the failing run below is the real command
    assert good.returncode == 0, good.stderr
    report_path = tmp_path / "data/validation/report.json"
    docs = tmp_path / "data/validation/docs"
    assert json.loads(report_path.read_text())["success"] is True
    assert (docs / "index.html").is_file() and (docs / "summary.html").is_file()
    assert list(docs.glob("validations/train/*/*/*/*.html"))  # GX rendered the validation results
    good_report = report_path.read_bytes()
    good_docs = {p.relative_to(docs): p.read_bytes() for p in docs.rglob("*") if p.is_file()}

    bad = dict(tables)
    labels = tables["test"].column("label").to_numpy().copy()
    labels[5] = 10
    bad["test"] = tables["test"].set_column(0, "label", pa.array(labels))
    write_interim(bad, tmp_path / "data/interim")
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "error [validate]: data validation failed" in proc.stderr
    assert "test: 1 label value(s) outside 0..9: row 5 -> 10" in proc.stderr
    assert report_path.read_bytes() == good_report
    assert {p.relative_to(docs): p.read_bytes() for p in docs.rglob("*") if p.is_file()} == good_docs
    failed = tmp_path / "data/validation/report.failed.json"
    failed_report = json.loads(failed.read_text())
    assert failed_report["success"] is False and failed_report["splits"]["train"]["success"] is True
    assert (tmp_path / "data/validation/docs.failed/summary.html").is_file()

    # A passing run (in-process this time) removes the stale failure outputs.
    write_interim(tables, tmp_path / "data/interim")
    report = validate(tmp_path / "data/interim", report_path, docs, params_for())
    assert report["success"] and not failed.exists() and not (tmp_path / "data/validation/docs.failed").exists()
    assert validate_dir(tmp_path / "data/interim", params_for())["success"] is True


def test_validate_raises_validation_failed(tables, tmp_path):
    bad = {"train": tables["train"].slice(0, 10), "test": tables["test"]}
    write_interim(bad, tmp_path / "interim")
    with pytest.raises(ValidationFailed) as info:
        validate(tmp_path / "interim", tmp_path / "report.json", tmp_path / "docs", params_for())
    assert info.value.exit_code == 3
    assert "train: 10 rows, expected 2000" in str(info.value)
    assert not (tmp_path / "report.json").exists() and (tmp_path / "report.failed.json").exists()
