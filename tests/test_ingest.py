"""ingest stage + the validate gate against a corpus of malformed/invalid CSVs made from REAL rows.

Each case starts from a workspace whose outputs were built from a clean real slice (ingest, then
validate, as the DAG runs them), corrupts the train CSV in one way, and runs the stages again:

- the run must fail (ingest: exit 2; the validate gate: exit 3),
- the message must name the file/line/column or the failed expectation,
- the previous good outputs a later stage would consume must be byte-identical afterwards.

Which stage catches what (by design): ingest rejects what cannot be typed as uint8 (non-integers,
out-of-range values, ragged/truncated rows, empty file, a header that is not a permutation of
label,pixel1..pixel784) and files that are not UTF-8 text, naming what they are (UTF-16/UTF-32 text
with the iconv command that converts it; gzip/zip/xlsx/Parquet/IDX/PNG/other binary files). Empty/NaN
cells become nulls and the gate rejects them; so do wrong column order, labels 10..255, missing
classes, class imbalance and wrong row counts.

Standard CSV variants are *accepted* and give byte-identical Parquet: CRLF line endings (RFC 4180),
CR-only line endings and a UTF-8 byte-order mark (Excel's "CSV UTF-8"), alone or combined.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.data.fetch import to_kaggle_table, write_kaggle_csv
from pipeline.data import ingest as ingest_mod
from pipeline.data.ingest import read_kaggle_csv
from pipeline.errors import PipelineError
from pipeline.schema import CSV_COLUMNS

from tests.conftest import DEBIAN_IDX_DIR, REPO, call_cli, run_cli, write_csv_slice

TRAIN_ROWS, TEST_ROWS = 1000, 300
TRAIN_CSV = "data/raw/fashion-mnist_train.csv"
INGEST = ("ingest", "--params", "params.yaml", "--raw", "data/raw", "--out", "data/interim")
VALIDATE = ("validate", "--params", "params.yaml", "--interim", "data/interim",
            "--report", "data/validation/report.json", "--docs", "data/validation/docs")


def write_params(ws: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["validate"]["expected_rows"] = {"train": TRAIN_ROWS, "test": TEST_ROWS}
    params["validate"]["class_share_tolerance"] = 0.05  # a 1,000-row slice is not exactly 10% per class
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_in_process(ws: Path, *args: str) -> tuple[int, str]:
    """`python -m pipeline <args>` in this process (conftest.call_cli: same code path, no new interpreter)."""
    proc = call_cli(*args, cwd=ws)
    return proc.returncode, proc.stderr


def snapshot(ws: Path) -> dict[str, str]:
    """sha256 of every output file a later stage could consume."""
    files = sorted((ws / "data/interim").glob("*")) + [ws / "data/validation/report.json"]
    files += sorted(p for p in (ws / "data/validation/docs").rglob("*") if p.is_file())
    return {str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


@pytest.fixture(scope="module")
def good_workspace(tmp_path_factory, fmnist) -> Path:
    """Outputs of ingest + validate on a clean real slice (1,000 train / 300 test rows)."""
    ws = tmp_path_factory.mktemp("good")
    write_params(ws)
    write_csv_slice(fmnist, ws / "data/raw", TRAIN_ROWS, TEST_ROWS)
    proc = run_cli(*INGEST, cwd=ws)
    assert proc.returncode == 0, proc.stderr
    code, err = run_in_process(ws, *VALIDATE)
    assert code == 0, err
    return ws


@pytest.fixture
def workspace(good_workspace, tmp_path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(good_workspace, ws)
    return ws


# --------------------------------------------------------------------------- corruptions of real rows
# Each takes the CSV's lines (lines[0] is the header, lines[r + 1] is data row r = CSV line r + 2; the
# file ends with a newline, so lines[-1] == "") and returns the new file content as bytes.
Lines = list[str]


def set_cell(row: int, column: str, value: str) -> Callable[[Lines], bytes]:
    def corrupt(lines: Lines) -> bytes:
        cells = lines[row + 1].split(",")
        cells[CSV_COLUMNS.index(column)] = value
        lines[row + 1] = ",".join(cells)
        return "\n".join(lines).encode()
    return corrupt


def drop_column(column: str) -> Callable[[Lines], bytes]:
    def corrupt(lines: Lines) -> bytes:
        i = CSV_COLUMNS.index(column)
        out = []
        for line in lines[:-1]:
            cells = line.split(",")
            out.append(",".join(cells[:i] + cells[i + 1:]))
        return ("\n".join(out) + "\n").encode()
    return corrupt


def swap_columns(a: str, b: str) -> Callable[[Lines], bytes]:
    """Swap two columns, header and values together: the data are right, the order is not."""
    def corrupt(lines: Lines) -> bytes:
        i, j = CSV_COLUMNS.index(a), CSV_COLUMNS.index(b)
        out = []
        for line in lines[:-1]:
            cells = line.split(",")
            cells[i], cells[j] = cells[j], cells[i]
            out.append(",".join(cells))
        return ("\n".join(out) + "\n").encode()
    return corrupt


def keep_rows(select: Callable[[np.ndarray], np.ndarray]) -> Callable[[Lines], bytes]:
    """Keep the data rows for which select(labels) is True."""
    def corrupt(lines: Lines) -> bytes:
        rows = lines[1:-1]
        labels = np.array([int(r.split(",", 1)[0]) for r in rows])
        keep = select(labels)
        return ("\n".join([lines[0]] + [r for r, k in zip(rows, keep) if k]) + "\n").encode()
    return corrupt


def drop_most_of_class(cls: int, fraction: float) -> Callable[[np.ndarray], np.ndarray]:
    """Remove `fraction` of one class's rows (5,000 of 6,000 on the full set = 5/6)."""
    def select(labels: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(labels == cls)
        keep = np.ones(len(labels), dtype=bool)
        keep[idx[: int(round(len(idx) * fraction))]] = False
        return keep
    return select


def replace_header(fn: Callable[[list[str]], list[str]]) -> Callable[[Lines], bytes]:
    def corrupt(lines: Lines) -> bytes:
        lines[0] = ",".join(fn(lines[0].split(",")))
        return "\n".join(lines).encode()
    return corrupt


def rename(names: list[str], old: str, new: str) -> list[str]:
    return [new if n == old else n for n in names]


def append_cell(row: int, value: str) -> Callable[[Lines], bytes]:
    def corrupt(lines: Lines) -> bytes:
        lines[row + 1] += "," + value
        return "\n".join(lines).encode()
    return corrupt


def drop_last_cell(row: int) -> Callable[[Lines], bytes]:
    def corrupt(lines: Lines) -> bytes:
        lines[row + 1] = lines[row + 1].rsplit(",", 1)[0]
        return "\n".join(lines).encode()
    return corrupt


def truncate_last_line(lines: Lines) -> bytes:
    """A download cut off in the middle of the last row (no final newline)."""
    text = "\n".join(lines[:-1])
    return text[: len(text) - len(lines[-2]) // 2].encode()


def as_written(lines: Lines) -> bytes:
    """The file unchanged (LF line endings, no BOM)."""
    return "\n".join(lines).encode()


def crlf(corrupt: Callable[[Lines], bytes] = as_written) -> Callable[[Lines], bytes]:
    """`corrupt`'s output with CRLF line endings (RFC 4180; what Windows tools write)."""
    return lambda lines: corrupt(lines).replace(b"\n", b"\r\n")


def cr_only(corrupt: Callable[[Lines], bytes] = as_written) -> Callable[[Lines], bytes]:
    """`corrupt`'s output with CR-only line endings (classic Mac OS)."""
    return lambda lines: corrupt(lines).replace(b"\n", b"\r")


def bom(corrupt: Callable[[Lines], bytes] = as_written) -> Callable[[Lines], bytes]:
    """`corrupt`'s output after a UTF-8 byte-order mark (what Excel's "CSV UTF-8" writes)."""
    return lambda lines: b"\xef\xbb\xbf" + corrupt(lines)


def encoded(codec: str, prefix: bytes = b"") -> Callable[[Lines], bytes]:
    """The file re-encoded with a Python codec, e.g. 'utf-16' (with BOM) or 'utf-16-be' (none)."""
    return lambda lines: prefix + "\n".join(lines).encode(codec)


def gzipped(lines: Lines) -> bytes:
    return gzip.compress("\n".join(lines).encode(), mtime=0)


def zipped(lines: Lines) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fashion-mnist_train.csv", "\n".join(lines))
    return buf.getvalue()


def xlsx_like(lines: Lines) -> bytes:
    """A zip laid out like an .xlsx workbook (the parts ingest looks for; the rows as a sheet part)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        zf.writestr("xl/workbook.xml", '<?xml version="1.0"?><workbook/>')
        zf.writestr("xl/worksheets/sheet1.csv", "\n".join(lines))
    return buf.getvalue()


def as_parquet(lines: Lines) -> bytes:
    """The same real rows written as Parquet (what someone might hand over instead of the CSV)."""
    buf = io.BytesIO()
    pq.write_table(pacsv.read_csv(io.BytesIO("\n".join(lines).encode())), buf)
    return buf.getvalue()


def as_png(lines: Lines) -> bytes:
    """The first real image of the slice as a PNG."""
    from PIL import Image

    pixels = np.array(lines[1].split(",")[1:], dtype=np.uint8).reshape(28, 28)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def idx_file(gzipped: bool) -> Callable[[Lines], bytes]:
    """The official IDX labels file (Debian's .gz as it is, or decompressed) instead of the CSV."""
    def corrupt(lines: Lines) -> bytes:
        raw = (DEBIAN_IDX_DIR / "train-labels-idx1-ubyte.gz").read_bytes()
        return raw if gzipped else gzip.decompress(raw)
    return corrupt


def random_bytes(lines: Lines) -> bytes:
    """Arbitrary bytes (seeded), NULs included."""
    return b"\x00" + np.random.default_rng(16).bytes(20_000)


def nul_in_first_row(lines: Lines) -> bytes:
    """A NUL byte inside the first data row (e.g. a download padded with zeros)."""
    lines[1] = lines[1][:100] + "\x00" + lines[1][100:]
    return "\n".join(lines).encode()


def empty(lines: Lines) -> bytes:
    return b""


def header_only(lines: Lines) -> bytes:
    return (lines[0] + "\n").encode()


LAST = TRAIN_ROWS + 1  # CSV line of the last data row

# (id, corruption, stage that must reject it, substrings the error must contain)
INGEST_CASES = [
    ("pixel-256", set_cell(6, "pixel12", "256"),
     [f"{TRAIN_CSV}: line 8, column 'pixel12' (#13): value 256 is outside 0-255"]),
    ("pixel-minus-1", set_cell(123, "pixel784", "-1"),
     [f"{TRAIN_CSV}: line 125, column 'pixel784' (#785): value -1 is outside 0-255"]),
    ("label-minus-1", set_cell(9, "label", "-1"),
     [f"{TRAIN_CSV}: line 11, column 'label' (#1): value -1 is outside 0-255", "labels in 0..9"]),
    ("text-cell", set_cell(42, "pixel400", "white"),
     [f"{TRAIN_CSV}: line 44, column 'pixel400' (#401): 'white' is not an integer"]),
    ("float-pixel", set_cell(3, "pixel5", "12.5"),
     [f"{TRAIN_CSV}: line 5, column 'pixel5' (#6): '12.5' is not an integer"]),
    ("missing-column", drop_column("pixel784"),
     [f"{TRAIN_CSV}: line 1: header has 784 columns, expected 785", "missing: pixel784"]),
    ("wrong-header", replace_header(lambda h: rename(h, "label", "class")),
     [f"{TRAIN_CSV}: line 1:", "missing: label", "unexpected: class"]),
    ("duplicated-header", replace_header(lambda h: rename(h, "pixel2", "pixel1")),
     ["missing: pixel2", "duplicated: pixel1"]),
    ("ragged-row-long", append_cell(40, "0"),
     [f"{TRAIN_CSV}: line 42: row has 786 fields, expected 785 (too long or ragged row)"]),
    ("ragged-row-short", drop_last_cell(500),
     [f"{TRAIN_CSV}: line 502: row has 784 fields, expected 785 (truncated or ragged row)"]),
    ("truncated-last-line", truncate_last_line,
     [f"{TRAIN_CSV}: line {LAST}: row has", "expected 785 (truncated", "does not end with a newline"]),
    ("empty-file", empty, [f"{TRAIN_CSV}: file is empty"]),
    ("header-only", header_only, [f"{TRAIN_CSV}: the file has a header but no data rows"]),
    # Standard variants with one bad cell: line and column are still right (no stray \r, no BOM offset).
    ("crlf-pixel-256-last-column", crlf(set_cell(6, "pixel784", "256")),
     [f"{TRAIN_CSV}: line 8, column 'pixel784' (#785): value 256 is outside 0-255"]),
    ("bom-label-256-first-row", bom(set_cell(0, "label", "256")),
     [f"{TRAIN_CSV}: line 2, column 'label' (#1): value 256 is outside 0-255"]),
    ("bom-crlf-text-cell", bom(crlf(set_cell(42, "pixel400", "white"))),
     [f"{TRAIN_CSV}: line 44, column 'pixel400' (#401): 'white' is not an integer"]),
    ("bom-crlf-ragged-row", bom(crlf(append_cell(40, "0"))),
     [f"{TRAIN_CSV}: line 42: row has 786 fields, expected 785 (too long or ragged row)"]),
    ("cr-only-pixel-256", cr_only(set_cell(6, "pixel12", "256")),
     [f"{TRAIN_CSV}: line 8, column 'pixel12' (#13): value 256 is outside 0-255"]),
    # Not UTF-8 text: the encoding is named, with the command that converts it.
    ("utf-16-le-bom", encoded("utf-16-le", b"\xff\xfe"),
     [f"{TRAIN_CSV}: is encoded as UTF-16 (little-endian, with a byte-order mark), not UTF-8",
      "iconv -f UTF-16 -t UTF-8 fashion-mnist_train.csv > fashion-mnist_train.utf8.csv", "CSV UTF-8"]),
    ("utf-16-be-bom", encoded("utf-16-be", b"\xfe\xff"),
     [f"{TRAIN_CSV}: is encoded as UTF-16 (big-endian, with a byte-order mark), not UTF-8",
      "iconv -f UTF-16 -t UTF-8"]),
    ("utf-16-le-no-bom", encoded("utf-16-le"),
     [f"{TRAIN_CSV}: is encoded as UTF-16 (little-endian, without a byte-order mark), not UTF-8",
      "iconv -f UTF-16LE -t UTF-8"]),
    ("utf-16-be-no-bom", encoded("utf-16-be"),
     [f"{TRAIN_CSV}: is encoded as UTF-16 (big-endian, without a byte-order mark), not UTF-8",
      "iconv -f UTF-16BE -t UTF-8"]),
    ("utf-32-le-bom", encoded("utf-32"),
     [f"{TRAIN_CSV}: is encoded as UTF-32 (little-endian, with a byte-order mark), not UTF-8",
      "iconv -f UTF-32 -t UTF-8"]),
    # Binary files: called what they are.
    ("gzip-csv", gzipped, [f"{TRAIN_CSV}: is a gzip-compressed CSV, not a plain-text CSV", "gunzip -c"]),
    ("zip-archive", zipped,
     [f"{TRAIN_CSV}: is a zip archive (1 member(s): fashion-mnist_train.csv), not a CSV", "unzip"]),
    ("xlsx-workbook", xlsx_like,
     [f"{TRAIN_CSV}: is an Excel .xlsx workbook (a zip archive), not a CSV", 'save it as "CSV UTF-8']),
    ("parquet-file", as_parquet, [f"{TRAIN_CSV}: is a Parquet file, not a CSV", "write_csv"]),
    ("png-image", as_png, [f"{TRAIN_CSV}: is a PNG image, not a CSV"]),
    ("idx-file", idx_file(gzipped=False),
     [f"{TRAIN_CSV}: is an IDX file (the official Fashion-MNIST binary format), not a CSV",
      "point params.yaml fetch.source at the directory holding the four official IDX files"]),
    ("idx-gz-file", idx_file(gzipped=True),
     [f"{TRAIN_CSV}: is a gzip-compressed IDX file", "fetch.source at the directory"]),
    ("random-bytes", random_bytes,
     [f"{TRAIN_CSV}: is a binary file (it contains NUL bytes in its first 8,192 bytes), not a text CSV"]),
    ("nul-byte-in-csv", nul_in_first_row, [f"{TRAIN_CSV}: is a binary file (it contains NUL bytes"]),
]

# Standard CSV variants: accepted, with the same Parquet bytes as the LF file.
VARIANTS = [
    pytest.param(crlf(), id="crlf"),
    pytest.param(bom(), id="bom"),
    pytest.param(bom(crlf()), id="bom-crlf"),
    pytest.param(cr_only(), id="cr-only"),
]

VALIDATE_CASES = [
    ("nan-empty-cell", set_cell(17, "pixel200", ""),
     ["train: 1 null cell(s) in 1 row(s): row 17, column pixel200", "pixel200 (1 null)"]),
    ("nan-spelled", set_cell(900, "pixel784", "NaN"),
     ["train: 1 null cell(s) in 1 row(s): row 900, column pixel784"]),
    ("label-10", set_cell(5, "label", "10"), ["train: 1 label value(s) outside 0..9: row 5 -> 10"]),
    ("swapped-column-order", swap_columns("pixel1", "pixel2"),
     ["train: columns out of order: position 2 is pixel2, expected pixel1 (2 positions differ)"]),
    ("dropped-class", keep_rows(lambda y: y != 8),
     ["train: 1 class(es) have no rows: 'Bag' (8)", "rows, expected 1000"]),
    ("5-of-6-of-one-class-removed", keep_rows(drop_most_of_class(8, 5 / 6)),
     ["train: 1 class share(s) outside 0.05..0.15: class 'Bag' (8) share", "rows, expected 1000"]),
    ("wrong-row-count", keep_rows(lambda y: np.arange(len(y)) < TRAIN_ROWS - 10),
     [f"train: {TRAIN_ROWS - 10} rows, expected {TRAIN_ROWS}"]),
]


def corrupt_train_csv(ws: Path, corruption: Callable[[Lines], bytes]) -> None:
    path = ws / TRAIN_CSV
    path.write_bytes(corruption(path.read_text().split("\n")))


@pytest.mark.parametrize("corruption,expected", [pytest.param(c, e, id=i) for i, c, e in INGEST_CASES])
def test_ingest_rejects_and_keeps_previous_outputs(workspace, corruption, expected):
    before = snapshot(workspace)
    corrupt_train_csv(workspace, corruption)
    proc = call_cli(*INGEST, cwd=workspace)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("error [ingest]:") == 1 and "Traceback" not in proc.stderr
    assert "how to fix:" in proc.stderr
    for text in expected:
        assert text in proc.stderr
    assert snapshot(workspace) == before
    assert visible(workspace / "data/interim") == ["test.parquet", "train.parquet"]
    assert visible(workspace / "data/validation") == ["docs", "report.json"]


def test_the_ingest_command_exits_2_with_one_message_and_keeps_previous_outputs(workspace):
    """The error matrix above runs in this process; this case runs the real `python -m pipeline ingest`."""
    before = snapshot(workspace)
    corrupt_train_csv(workspace, set_cell(6, "pixel12", "256"))
    proc = run_cli(*INGEST, cwd=workspace)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("error [ingest]:") == 1 and "Traceback" not in proc.stderr
    assert "line 8, column 'pixel12' (#13): value 256 is outside 0-255" in proc.stderr, proc.stderr
    assert "how to fix:" in proc.stderr
    assert snapshot(workspace) == before


def test_random_bytes_case_is_not_mistaken_for_a_known_format():
    """The seeded bytes of the random-bytes case start with no magic number and no UTF-16/32 pattern."""
    from pipeline.data.ingest import MAGIC, text_encoding

    head = random_bytes([])[:8192]
    assert text_encoding(head) is None
    assert not any(head.startswith(m) for m, _, _ in MAGIC)


# ------------------------------------------------------------------------- accepted CSV variants
@pytest.mark.parametrize("variant", VARIANTS)
def test_ingest_accepts_standard_csv_variants_with_identical_parquet(workspace, fmnist, variant):
    """CRLF / BOM / BOM+CRLF / CR-only copies of the real slice (both splits): exit 0, no warning, and the
    Parquet files are byte-identical to the ones ingest wrote from the LF files."""
    before = snapshot(workspace)
    lf_parquet = {k: v for k, v in before.items() if k.startswith("data/interim/")}
    assert sorted(lf_parquet) == ["data/interim/test.parquet", "data/interim/train.parquet"]
    for name in ("fashion-mnist_train.csv", "fashion-mnist_test.csv"):
        path = workspace / "data/raw" / name
        path.write_bytes(variant(path.read_text().split("\n")))
    proc = call_cli(*INGEST, cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr and "error" not in proc.stderr
    after = snapshot(workspace)
    assert {k: after[k] for k in lf_parquet} == lf_parquet
    x, y = fmnist["train"]
    assert read_kaggle_csv(workspace / TRAIN_CSV).equals(to_kaggle_table(x[:TRAIN_ROWS], y[:TRAIN_ROWS]))


def test_full_test_set_with_bom_and_crlf_gives_the_same_parquet_bytes(tmp_path, fmnist):
    """10,000 rows span several 4 MiB read blocks, whose boundaries differ between the LF and CRLF files;
    the table and the Parquet bytes must not."""
    xt, yt = fmnist["test"]
    lf = tmp_path / "lf.csv"
    write_kaggle_csv(to_kaggle_table(xt, yt), lf)
    variant = tmp_path / "bom-crlf.csv"
    variant.write_bytes(b"\xef\xbb\xbf" + lf.read_bytes().replace(b"\n", b"\r\n"))
    tables = {p: read_kaggle_csv(p) for p in (lf, variant)}
    assert tables[lf].equals(to_kaggle_table(xt, yt)) and tables[variant].equals(tables[lf])
    for path, table in tables.items():
        ingest_mod.write_parquet(table, path.with_suffix(".parquet"))
    assert lf.with_suffix(".parquet").read_bytes() == variant.with_suffix(".parquet").read_bytes()


def test_fetch_passes_crlf_bom_csvs_through_and_ingest_accepts_them(workspace, good_workspace, fmnist):
    """A fetch.source directory of BOM+CRLF Kaggle CSVs: fetch copies them byte for byte (also the first
    max_rows lines, CRLF kept), and ingest turns them into the same Parquet as the LF files."""
    source = workspace / "windows-export"
    source.mkdir()
    for name in ("fashion-mnist_train.csv", "fashion-mnist_test.csv"):
        lines = (good_workspace / "data/raw" / name).read_text().split("\n")
        (source / name).write_bytes(bom(crlf())(lines))
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["fetch"]["source"] = str(source)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    lf_parquet = {k: v for k, v in snapshot(good_workspace).items() if k.startswith("data/interim/")}

    proc = run_cli("fetch", "--params", "params.yaml", "--out", "data/raw", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    for name in ("fashion-mnist_train.csv", "fashion-mnist_test.csv"):
        assert (workspace / "data/raw" / name).read_bytes() == (source / name).read_bytes()
    proc = run_cli(*INGEST, cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    after = snapshot(workspace)
    assert {k: after[k] for k in lf_parquet} == lf_parquet

    params["fetch"]["max_rows"] = 30
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run_cli("fetch", "--params", "params.yaml", "--out", "data/raw", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    head = (source / "fashion-mnist_train.csv").read_bytes().splitlines(keepends=True)[:31]
    assert (workspace / TRAIN_CSV).read_bytes() == b"".join(head) and head[-1].endswith(b"\r\n")
    x, y = fmnist["train"]
    assert read_kaggle_csv(workspace / TRAIN_CSV).equals(to_kaggle_table(x[:30], y[:30]))


@pytest.mark.parametrize("codec,prefix", [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b""), ("utf-32-le", b"")])
def test_utf16_hint_command_converts_to_an_accepted_csv(tmp_path, fmnist, codec, prefix):
    """The iconv command in the UTF-16/32 hint, run as printed, yields a CSV that ingests to the same table."""
    paths = write_csv_slice(fmnist, tmp_path, 50, 1)
    path = paths["train"]
    path.write_bytes(prefix + path.read_text().encode(codec))
    with pytest.raises(PipelineError) as info:
        read_kaggle_csv(path)
    command = re.search(r"`(iconv [^`]+)`", info.value.hint).group(1)
    if shutil.which("iconv") is None:
        pytest.skip("iconv is not installed")
    subprocess.run(command, shell=True, cwd=tmp_path, check=True)
    x, y = fmnist["train"]
    assert read_kaggle_csv(tmp_path / "fashion-mnist_train.utf8.csv").equals(to_kaggle_table(x[:50], y[:50]))


@pytest.mark.parametrize("corruption,expected", [pytest.param(c, e, id=i) for i, c, e in VALIDATE_CASES])
def test_validate_gate_rejects_and_keeps_previous_report(workspace, corruption, expected):
    before = snapshot(workspace)
    corrupt_train_csv(workspace, corruption)
    proc = run_cli(*INGEST, cwd=workspace)
    assert proc.returncode == 0, proc.stderr  # readable as uint8/null: judging it is the gate's job
    code, err = run_in_process(workspace, *VALIDATE)
    assert code == 3, err
    assert "error [validate]: data validation failed" in err
    for text in expected:
        assert text in err
    assert "the previous good data/validation/report.json was left untouched" in err
    after = snapshot(workspace)
    guarded = [k for k in before if k.startswith("data/validation/")]
    assert {k: after[k] for k in guarded} == {k: before[k] for k in guarded}
    assert visible(workspace / "data/validation") == ["docs", "docs.failed", "report.failed.json", "report.json"]
    # The test split was untouched: its Parquet is the same bytes as before.
    assert after["data/interim/test.parquet"] == before["data/interim/test.parquet"]


# ----------------------------------------------------------------------------------- the happy path
def test_ingest_types_every_column_uint8_and_round_trips(workspace, fmnist):
    table = pq.read_table(workspace / "data/interim/train.parquet")
    assert table.column_names == list(CSV_COLUMNS)
    assert {f.type for f in table.schema} == {pa.uint8()}
    x, y = fmnist["train"]
    np.testing.assert_array_equal(table.column("label").to_numpy(), y[:TRAIN_ROWS])
    pixels = np.column_stack([table.column(i).to_numpy() for i in range(1, 785)])
    np.testing.assert_array_equal(pixels.reshape(-1, 28, 28), x[:TRAIN_ROWS])


def test_full_official_test_set_ingests_exactly(tmp_path, fmnist):
    xt, yt = fmnist["test"]
    path = tmp_path / "test.csv"
    write_kaggle_csv(to_kaggle_table(xt, yt), path)
    table = read_kaggle_csv(path)
    assert table.num_rows == 10000
    assert table.equals(to_kaggle_table(xt, yt))


def test_mixed_line_endings_after_the_header_parse_to_the_same_values(tmp_path, fmnist):
    """pyarrow accepts CR LF on data lines; the values must still be exact (no stray '\\r' cells)."""
    paths = write_csv_slice(fmnist, tmp_path, 50, 1)
    lines = paths["train"].read_text().split("\n")
    lines[10] += "\r"
    paths["train"].write_text("\n".join(lines))
    x, y = fmnist["train"]
    assert read_kaggle_csv(paths["train"]).equals(to_kaggle_table(x[:50], y[:50]))


def test_missing_csv_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="file not found"):
        read_kaggle_csv(tmp_path / "nope.csv")
    proc = run_cli(*INGEST, cwd=tmp_path)
    assert proc.returncode == 2
    assert "data/raw/fashion-mnist_train.csv: file not found" in proc.stderr
    assert "dvc repro fetch" in proc.stderr
