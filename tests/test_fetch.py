"""fetch stage on the REAL Fashion-MNIST files (Debian's dataset-fashion-mnist package).

IDX parsing, SHA-256 verification of the decompressed bytes, exact CSV materialisation, the three
source kinds (IDX directory, CSV directory, URL) and the clear errors for an offline URL or a
missing directory. CLI tests run `python -m pipeline fetch` in a subprocess, as dvc.yaml does.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import yaml

from pipeline.data.fetch import (
    IDX_NAMES, IDX_SHA256, load_idx_dir, parse_idx, to_kaggle_table, verified_idx, write_kaggle_csv,
)
from pipeline.errors import PipelineError
from pipeline.schema import CSV_COLUMNS, CSV_NAMES

from tests.conftest import DEBIAN_IDX_DIR, REPO, run_cli, write_csv_slice

HEADER = "label," + ",".join(f"pixel{i}" for i in range(1, 785))


def write_params(dest: Path, **fetch) -> Path:
    """The repo's params.yaml with `fetch` keys overridden, written to dest/params.yaml."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["fetch"].update(fetch)
    path = dest / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def fetch_cli(tmp_path: Path, **fetch):
    write_params(tmp_path, **fetch)
    return run_cli("fetch", "--params", "params.yaml", "--out", "data/raw", cwd=tmp_path, timeout=300)


def read_csv_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A Kaggle CSV -> (images N x 28 x 28, labels), parsed independently of the pipeline's reader."""
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={name: pa.int64() for name in CSV_COLUMNS}))
    assert table.column_names == list(CSV_COLUMNS)
    data = np.column_stack([table.column(i).to_numpy() for i in range(table.num_columns)])
    return data[:, 1:].reshape(-1, 28, 28), data[:, 0]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_idx_dir(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for p in DEBIAN_IDX_DIR.glob("*-ubyte.gz"):
        shutil.copy(p, dest / p.name)
    return dest


# ------------------------------------------------------------------------------------------- IDX parsing
def test_real_idx_files_parse_to_the_official_shapes_and_balance(fmnist):
    (x, y), (xt, yt) = fmnist["train"], fmnist["test"]
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert x.dtype == y.dtype == np.uint8
    assert set(np.bincount(y, minlength=10)) == {6000}
    assert set(np.bincount(yt, minlength=10)) == {1000}
    assert 0 < x.mean() < 255 and x.max() == 255  # real images, not zeros


def test_parse_idx_rejects_malformed_headers_and_payloads():
    raw = gzip.decompress((DEBIAN_IDX_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
    labels = parse_idx(raw, "t10k-labels")
    assert labels.shape == (10000,) and labels.max() == 9
    with pytest.raises(PipelineError, match="bad magic number"):
        parse_idx(b"\x01" + raw[1:], "x")
    with pytest.raises(PipelineError, match=r"element type 0x0d is not unsigned byte"):
        parse_idx(raw[:2] + b"\x0d" + raw[3:], "x")
    with pytest.raises(PipelineError, match=r"IDX payload has 9999 bytes, header declares 10000"):
        parse_idx(raw[:-1], "x")


def test_sha256_is_of_the_decompressed_bytes():
    for stems in IDX_NAMES.values():
        for stem in stems:
            raw = gzip.decompress((DEBIAN_IDX_DIR / f"{stem}.gz").read_bytes())
            assert hashlib.sha256(raw).hexdigest() == IDX_SHA256[stem]


def test_uncompressed_idx_files_are_accepted(tmp_path, fmnist):
    for stems in IDX_NAMES.values():
        for stem in stems:
            (tmp_path / stem).write_bytes(gzip.decompress((DEBIAN_IDX_DIR / f"{stem}.gz").read_bytes()))
    arrays = load_idx_dir(tmp_path)
    np.testing.assert_array_equal(arrays["test"][0], fmnist["test"][0])
    np.testing.assert_array_equal(arrays["train"][1], fmnist["train"][1])


def test_sha256_rejects_a_corrupted_copy(tmp_path):
    src = copy_idx_dir(tmp_path / "src")
    raw = bytearray(gzip.decompress((src / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # one label changed: still a well-formed IDX file
    parse_idx(bytes(raw))
    (src / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(PipelineError, match="SHA-256 of decompressed t10k-labels-idx1-ubyte"):
        load_idx_dir(src)
    with pytest.raises(PipelineError, match="re-download"):
        verified_idx(bytes(raw), "t10k-labels-idx1-ubyte", "here")


def test_cli_corrupted_source_fails_and_keeps_previous_csvs(tmp_path):
    src = copy_idx_dir(tmp_path / "src")
    good = fetch_cli(tmp_path, source=str(src), max_rows=50)
    assert good.returncode == 0, good.stderr
    before = {name: sha(tmp_path / "data/raw" / name) for name in CSV_NAMES.values()}

    # A truncated download: the gzip stream ends early.
    target = src / "t10k-labels-idx1-ubyte.gz"
    gz = target.read_bytes()
    target.write_bytes(gz[: len(gz) // 2])
    proc = fetch_cli(tmp_path, source=str(src), max_rows=50)
    assert proc.returncode == 2
    assert "error [fetch]:" in proc.stderr and "t10k-labels-idx1-ubyte.gz: cannot decompress" in proc.stderr
    assert "Traceback" not in proc.stderr

    # Complete but wrong content: the SHA-256 check rejects it.
    raw = bytearray(gzip.decompress(gz))
    raw[5000] = (raw[5000] + 1) % 10
    target.write_bytes(gzip.compress(bytes(raw)))
    proc = fetch_cli(tmp_path, source=str(src), max_rows=50)
    assert proc.returncode == 2
    assert "SHA-256 of decompressed t10k-labels-idx1-ubyte is" in proc.stderr
    assert "how to fix:" in proc.stderr
    assert {name: sha(tmp_path / "data/raw" / name) for name in CSV_NAMES.values()} == before
    assert sorted(p.name for p in (tmp_path / "data/raw").iterdir()) == sorted(CSV_NAMES.values())


# ------------------------------------------------------------------------------------ CSV materialisation
def test_csv_materialisation_matches_the_idx_arrays_exactly(tmp_path, fmnist):
    """Full official test set (10,000 rows) through the pipeline's CSV writer, parsed back independently."""
    xt, yt = fmnist["test"]
    path = tmp_path / "test.csv"
    write_kaggle_csv(to_kaggle_table(xt, yt), path)
    raw = path.read_bytes()
    assert raw.startswith((HEADER + "\n").encode()) and raw.endswith(b"\n")
    assert b"\r" not in raw and b'"' not in raw and raw.count(b"\n") == 10001
    images, labels = read_csv_arrays(path)
    np.testing.assert_array_equal(images, xt)
    np.testing.assert_array_equal(labels, yt)


def test_cli_fetch_from_idx_directory(tmp_path, fmnist):
    proc = fetch_cli(tmp_path, source=str(DEBIAN_IDX_DIR), max_rows=1500)
    assert proc.returncode == 0, proc.stderr
    for split in ("train", "test"):
        path = tmp_path / "data/raw" / CSV_NAMES[split]
        assert path.read_text().split("\n", 1)[0] == HEADER
        images, labels = read_csv_arrays(path)
        x, y = fmnist[split]
        np.testing.assert_array_equal(images, x[:1500])
        np.testing.assert_array_equal(labels, y[:1500])
    assert sorted(p.name for p in (tmp_path / "data/raw").iterdir()) == sorted(CSV_NAMES.values())


def test_cli_fetch_from_csv_directory(tmp_path, fmnist):
    src = tmp_path / "mycsvs"
    paths = write_csv_slice(fmnist, src, train_rows=400, test_rows=120)
    proc = fetch_cli(tmp_path, source=str(src), max_rows=None)
    assert proc.returncode == 0, proc.stderr
    for split, path in paths.items():
        assert (tmp_path / "data/raw" / CSV_NAMES[split]).read_bytes() == path.read_bytes()

    proc = fetch_cli(tmp_path, source=str(src), max_rows=30)
    assert proc.returncode == 0, proc.stderr
    for split, path in paths.items():
        head = b"".join(path.read_bytes().splitlines(keepends=True)[:31])
        assert (tmp_path / "data/raw" / CSV_NAMES[split]).read_bytes() == head


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def local_mirror(tmp_path):
    """A local HTTP mirror of the official IDX files (this machine is offline; 127.0.0.1 is not)."""
    root = copy_idx_dir(tmp_path / "mirror")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


def test_cli_fetch_from_url_downloads_and_verifies(tmp_path, fmnist, local_mirror):
    url, _ = local_mirror
    proc = fetch_cli(tmp_path, source=url, max_rows=200, timeout_s=30)
    assert proc.returncode == 0, proc.stderr
    assert "downloading the official IDX files" in proc.stderr
    images, labels = read_csv_arrays(tmp_path / "data/raw" / CSV_NAMES["test"])
    np.testing.assert_array_equal(images, fmnist["test"][0][:200])
    np.testing.assert_array_equal(labels, fmnist["test"][1][:200])
    downloads = tmp_path / "data/download"
    assert sorted(p.name for p in downloads.iterdir()) == sorted(f"{s}.gz" for v in IDX_NAMES.values() for s in v)


def test_cli_url_source_offline_fails_clearly(tmp_path):
    proc = fetch_cli(tmp_path, source="http://127.0.0.1:9/", timeout_s=2)
    assert proc.returncode == 2
    assert "error [fetch]: cannot download http://127.0.0.1:9/train-images-idx3-ubyte.gz" in proc.stderr
    assert "offline" in proc.stderr and "/usr/share/datasets/fashion-mnist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data/raw").exists() or not any((tmp_path / "data/raw").iterdir())
    # Nothing half-downloaded is left under the names a later run would trust.
    downloads = tmp_path / "data/download"
    assert not downloads.exists() or not [p for p in downloads.iterdir() if not p.name.startswith(".")]


def test_cli_missing_directory_fails_clearly(tmp_path):
    proc = fetch_cli(tmp_path, source=str(tmp_path / "no-such-dir"))
    assert proc.returncode == 2
    assert f"fetch.source '{tmp_path / 'no-such-dir'}' is not a directory or an http(s) URL" in proc.stderr
    assert "apt-get install dataset-fashion-mnist" in proc.stderr

    (tmp_path / "empty").mkdir()
    proc = fetch_cli(tmp_path, source=str(tmp_path / "empty"))
    assert proc.returncode == 2
    assert f"{tmp_path / 'empty'}: missing train-images-idx3-ubyte.gz" in proc.stderr
    assert not (tmp_path / "data/raw").exists() or not any((tmp_path / "data/raw").iterdir())


def test_corrupt_download_is_not_trusted_on_the_next_run(tmp_path, local_mirror):
    url, root = local_mirror
    good = (root / "t10k-labels-idx1-ubyte.gz").read_bytes()
    raw = bytearray(gzip.decompress(good))
    raw[100] = (raw[100] + 1) % 10
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    proc = fetch_cli(tmp_path, source=url, max_rows=20, timeout_s=30)
    assert proc.returncode == 2 and "SHA-256 of decompressed t10k-labels-idx1-ubyte" in proc.stderr
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(good)  # the mirror is fixed
    proc = fetch_cli(tmp_path, source=url, max_rows=20, timeout_s=30)
    assert proc.returncode == 0, proc.stderr
