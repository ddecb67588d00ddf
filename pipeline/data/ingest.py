"""ingest stage: Kaggle-layout CSV -> typed Parquet (label and pixel* as uint8), with pyarrow's CSV reader.

The fast path is one pyarrow read with every column typed uint8. If pyarrow rejects the file, a
slower diagnostic pass pinpoints the first bad line and column so the error says exactly what to fix.
Column *order* is left to the validate stage (its ordered-columns expectation reports it); a header
that is not a permutation of `label,pixel1..pixel784` is rejected here.
Cells that are empty or spell NaN become nulls, which the validate gate rejects with their positions.

Standard CSV variants are accepted and give the same table (and the same Parquet bytes) as a plain
LF file: CRLF line endings (RFC 4180; Windows tools), old-Mac CR-only line endings and a UTF-8
byte-order mark (Excel's "CSV UTF-8"); pyarrow handles all three itself. A file that is not UTF-8
text is named for what it is before parsing (`not_a_utf8_csv`): UTF-16/UTF-32 text (with the iconv
command that converts it), a compressed file or archive, a spreadsheet, a Parquet/IDX/image file, or
any other binary file.
"""

from __future__ import annotations

import csv
import gzip
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.schema import CSV_COLUMNS, CSV_NAMES, header_diff

BOM = b"\xef\xbb\xbf"
# pyarrow's default null spellings that may appear in exported CSVs; they become nulls for validate.
NULL_VALUES = ["", "NaN", "nan", "NA", "N/A", "null", "NULL", "None"]
SNIFF_BYTES = 8192  # how much of the file's start is inspected for its encoding / file type
HEADER_LIMIT = 1 << 20  # far above a real header's length; a "line" longer than this is not a header

WHERE_TO_FIX = "fix the file in your fetch.source directory, then re-run fetch and ingest (dvc repro)"
NEEDS = "ingest needs a plain-text UTF-8 CSV with the header `label,pixel1,...,pixel784`"
IDX_HINT = ("point params.yaml fetch.source at the directory holding the four official IDX files "
            "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
            "t10k-labels-idx1-ubyte[.gz]): fetch converts them to these CSVs")
SPREADSHEET_HINT = ('open it in Excel or LibreOffice and save it as "CSV UTF-8 (Comma delimited)" (.csv); '
                    + WHERE_TO_FIX)

# Magic bytes at offset 0 -> (what the file is, how to fix it). gzip and zip are looked into further.
MAGIC: list[tuple[bytes, str, str]] = [
    (b"PAR1", "a Parquet file",
     f"{NEEDS} (ingest writes the Parquet itself); put the Kaggle-layout CSV in fetch.source, or export "
     "this table: `python -c \"import pyarrow.parquet as pq, pyarrow.csv as c; "
     "c.write_csv(pq.read_table('IN.parquet'), 'OUT.csv')\"`"),
    (b"ARROW1", "an Arrow IPC (Feather) file", f"{NEEDS}; export the table to CSV"),
    (b"\x93NUMPY", "a NumPy .npy array", f"{NEEDS}; export the array to CSV"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file", f"{NEEDS}; export the data to CSV"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Excel .xls workbook (OLE2)", SPREADSHEET_HINT),
    (b"BZh", "a bzip2-compressed file", f"decompress it first (`bunzip2 -k FILE`); {WHERE_TO_FIX}"),
    (b"\xfd7zXZ\x00", "an xz-compressed file", f"decompress it first (`unxz -k FILE`); {WHERE_TO_FIX}"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file", f"decompress it first (`unzstd FILE`); {WHERE_TO_FIX}"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", f"extract it first (`7z x FILE`); {WHERE_TO_FIX}"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image", f"{NEEDS}; {WHERE_TO_FIX}"),
    (b"\xff\xd8\xff", "a JPEG image", f"{NEEDS}; {WHERE_TO_FIX}"),
    (b"%PDF-", "a PDF document", f"{NEEDS}; {WHERE_TO_FIX}"),
]


def _is_idx(head: bytes) -> bool:
    """The IDX magic: two zero bytes, element type 0x08 (unsigned byte), 1-3 dimensions."""
    return len(head) >= 4 and head[:3] == b"\x00\x00\x08" and 1 <= head[3] <= 3


def text_encoding(head: bytes) -> tuple[str, str] | None:
    """(description, iconv encoding name) if `head` is UTF-16/UTF-32 text, else None.

    With a byte-order mark the encoding is certain; without one, ASCII text (a CSV header) in UTF-16
    or UTF-32 shows as a regular pattern of NUL bytes, which decides the width and byte order.
    """
    boms = [(b"\xff\xfe\x00\x00", "UTF-32", "little"), (b"\x00\x00\xfe\xff", "UTF-32", "big"),
            (b"\xff\xfe", "UTF-16", "little"), (b"\xfe\xff", "UTF-16", "big")]
    for bom, name, order in boms:
        if head.startswith(bom):
            # iconv's plain UTF-16/UTF-32 read the byte-order mark and drop it from the output.
            return f"{name} ({order}-endian, with a byte-order mark)", name
    for width, name in ((4, "UTF-32"), (2, "UTF-16")):
        units = [head[i:i + width] for i in range(0, min(len(head), 64) // width * width, width)]
        if len(units) < 2:
            continue
        zeros = b"\x00" * (width - 1)
        if all(u[0] and u[1:] == zeros for u in units):
            return f"{name} (little-endian, without a byte-order mark)", f"{name}LE"
        if all(u[-1] and u[:-1] == zeros for u in units):
            return f"{name} (big-endian, without a byte-order mark)", f"{name}BE"
    return None


def _gzip_error(path: Path) -> PipelineError:
    """Name a gzip file by what is inside it: a CSV, an IDX file, or something else."""
    try:
        with gzip.open(path, "rb") as fh:
            inner = fh.read(SNIFF_BYTES)
    except (OSError, EOFError):
        inner = b""
    unpack = (f"decompress it first (`gunzip -c {path.name} > {path.stem}.plain.csv`, "
              f"then use that file as {path.name}); ")
    if _is_idx(inner):
        return PipelineError(f"{path}: is a gzip-compressed IDX file (the official Fashion-MNIST binary format), "
                             "not a CSV", hint=IDX_HINT)
    if inner and b"\x00" not in inner and inner.removeprefix(BOM)[:5].lower() in (b"label", b'"labe'):
        return PipelineError(f"{path}: is a gzip-compressed CSV, not a plain-text CSV", hint=unpack + WHERE_TO_FIX)
    return PipelineError(f"{path}: is a gzip-compressed file, not a plain-text CSV", hint=unpack + WHERE_TO_FIX)


def _zip_error(path: Path) -> PipelineError:
    """Name a zip file: an .xlsx workbook, an .ods spreadsheet, or an archive (listing what it holds)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            mimetype = zf.read("mimetype")[:100] if "mimetype" in names else b""
    except (zipfile.BadZipFile, OSError, KeyError):
        return PipelineError(f"{path}: is a zip archive (unreadable: damaged or truncated), not a CSV",
                             hint=f"re-download it, unzip it and use the CSV inside; {WHERE_TO_FIX}")
    if any(n.startswith("xl/") for n in names):
        return PipelineError(f"{path}: is an Excel .xlsx workbook (a zip archive), not a CSV", hint=SPREADSHEET_HINT)
    if b"opendocument.spreadsheet" in mimetype:
        return PipelineError(f"{path}: is an OpenDocument .ods spreadsheet (a zip archive), not a CSV",
                             hint=SPREADSHEET_HINT)
    listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return PipelineError(f"{path}: is a zip archive ({len(names)} member(s): {listed or 'empty'}), not a CSV",
                         hint=f"unzip it first (`unzip {path.name}`) and use the CSV inside as {path.name}; "
                              + WHERE_TO_FIX)


def _binary_kind(path: Path, head: bytes) -> PipelineError | None:
    """The error for a file whose magic number says what binary format it is, else None."""
    if head.startswith(b"\x1f\x8b"):
        return _gzip_error(path)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return _zip_error(path)
    if _is_idx(head):
        return PipelineError(f"{path}: is an IDX file (the official Fashion-MNIST binary format), not a CSV",
                             hint=IDX_HINT)
    for magic, what, hint in MAGIC:
        if head.startswith(magic) and (magic != b"BZh" or head[4:10] == b"1AY&SY"):
            return PipelineError(f"{path}: is {what}, not a CSV", hint=hint)
    return None


def not_a_utf8_csv(path: Path, head: bytes) -> PipelineError | None:
    """The error for a file that is not UTF-8 text (judged from its first bytes), or None if it may be a CSV."""
    encoding = text_encoding(head)
    if encoding is None or "without a byte-order mark" in encoding[0]:
        # A byte-order mark settles the encoding; otherwise a magic number names the format first.
        problem = _binary_kind(path, head)
        if problem is not None:
            return problem
    if encoding is not None:
        description, iconv_name = encoding
        return PipelineError(
            f"{path}: is encoded as {description}, not UTF-8",
            hint=f"convert it to UTF-8, e.g. `iconv -f {iconv_name} -t UTF-8 {path.name} > {path.stem}.utf8.csv` "
                 f"(then use that file as {path.name}), or re-export it from Excel as "
                 f'"CSV UTF-8 (Comma delimited)"; {WHERE_TO_FIX}',
        )
    if b"\x00" in head:
        return PipelineError(
            f"{path}: is a binary file (it contains NUL bytes in its first {len(head):,} bytes), not a text CSV",
            hint=f"{NEEDS}; {WHERE_TO_FIX}, or point fetch.source at the official IDX files",
        )
    return None


def check_header(path: Path) -> list[str]:
    """Return the header's column names after checking the encoding / file type and the names.

    A UTF-8 byte-order mark and CRLF (or CR) line endings are accepted: pyarrow and `diagnose` read them.
    """
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
        fh.seek(0)
        first = fh.readline(HEADER_LIMIT)
    if not head:
        raise PipelineError(f"{path}: file is empty",
                            hint="re-export the CSV; expected a header `label,pixel1,...,pixel784` and rows")
    problem = not_a_utf8_csv(path, head)
    if problem is not None:
        raise problem
    if first.startswith(BOM):
        first = first[len(BOM):]
    first = first.split(b"\n", 1)[0].split(b"\r", 1)[0]
    names = first.decode("utf-8", errors="replace").split(",")
    names = [n.strip().strip('"') for n in names]
    diff = header_diff(names)
    if not diff.is_permutation:
        parts = [f"header has {len(names)} columns, expected {len(CSV_COLUMNS)} (label,pixel1..pixel784)"]
        if diff.missing:
            parts.append(f"missing: {', '.join(diff.missing[:5])}{' ...' if len(diff.missing) > 5 else ''}")
        if diff.unexpected:
            parts.append(f"unexpected: {', '.join(diff.unexpected[:5])}{' ...' if len(diff.unexpected) > 5 else ''}")
        if diff.duplicated:
            parts.append(f"duplicated: {', '.join(diff.duplicated[:5])}")
        raise PipelineError(f"{path}: line 1: " + "; ".join(parts),
                            hint="use the Kaggle Fashion-MNIST layout: header `label,pixel1,...,pixel784`")
    return names


def diagnose(path: Path, names: list[str]) -> PipelineError:
    """Scan the CSV row by row and describe the first malformed line (slow path, only after a failure)."""
    width = len(names)
    nulls = set(NULL_VALUES)
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for row in reader:
            line = reader.line_num
            if len(row) != width:
                kind = "truncated" if len(row) < width else "too long"
                return PipelineError(
                    f"{path}: line {line}: row has {len(row)} fields, expected {width} ({kind} or ragged row)",
                    hint="every row needs a label and 784 pixel values; re-export or remove the broken line",
                )
            for col, cell in zip(names, row):
                if cell in nulls:
                    continue
                text = cell.strip()
                if text.endswith("\r"):
                    text = text[:-1]
                if not text.lstrip("+-").isdigit():
                    return PipelineError(
                        f"{path}: line {line}, column '{col}' (#{names.index(col) + 1}): {cell!r} is not an integer",
                        hint="pixels and labels must be integers (pixels 0-255, labels 0-9)",
                    )
                value = int(text)
                if not 0 <= value <= 255:
                    return PipelineError(
                        f"{path}: line {line}, column '{col}' (#{names.index(col) + 1}): "
                        f"value {value} is outside 0-255",
                        hint="pixel values must be integers in 0..255 (uint8); labels in 0..9",
                    )
    return PipelineError(f"{path}: pyarrow could not parse the file, but no malformed line was found",
                         hint="check the file's encoding (plain UTF-8) and delimiter (comma)")


def read_kaggle_csv(path: str | Path) -> pa.Table:
    """Parse a Kaggle-layout Fashion-MNIST CSV into a uint8 Arrow table (columns in the file's order)."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: file not found", hint="run the fetch stage first (dvc repro fetch)")
    names = check_header(path)
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(size - 2, 0))
        tail = fh.read()
    if size and not tail.endswith((b"\n", b"\r")):
        # A valid CSV may lack the final newline, but a cut-off download usually looks like this.
        print(f"ingest: warning: {path} does not end with a newline (truncated download?)", file=sys.stderr)
    # 4 MiB blocks: larger ones read no faster and need more peak memory.
    convert = pacsv.ConvertOptions(
        column_types={name: pa.uint8() for name in names},
        null_values=NULL_VALUES,
        strings_can_be_null=False,
    )
    try:
        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=4 << 20), convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise diagnose(path, names) from None
    if table.num_rows == 0:
        raise PipelineError(f"{path}: the file has a header but no data rows", hint="re-export the CSV with its rows")
    return table


def write_parquet(table: pa.Table, target: Path) -> None:
    with io.atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def ingest(csv_paths: dict[str, Path], out_dir: Path) -> dict[str, Path]:
    """Parse every split first, then write: either all outputs are replaced or none is."""
    tables = {split: read_kaggle_csv(path) for split, path in csv_paths.items()}
    written = {}
    for split, table in tables.items():
        target = out_dir / f"{split}.parquet"
        write_parquet(table, target)
        written[split] = target
        print(f"ingest: {csv_paths[split]} -> {target} ({table.num_rows} rows x {table.num_columns} columns)",
              file=sys.stderr)
    return written


# ------------------------------------------------------------------------------------------ CLI shell
def add_cli(parser) -> None:
    parser.add_argument("--raw", type=Path, required=True, help="directory with the Kaggle CSVs")
    parser.add_argument("--out", type=Path, required=True, help="output directory for Parquet")


def cli(args) -> None:
    ingest({split: args.raw / name for split, name in CSV_NAMES.items()}, args.out)
