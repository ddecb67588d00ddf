"""The gate's report: per-split results -> the JSON report (a DVC metric), its HTML summary page and the
near-duplicates figure. Values are made JSON-safe here (NaN -> null), so the metric file is valid JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline import io
from pipeline.schema import IMAGE_SIDE


def json_safe(value: Any) -> Any:
    """GX/numpy values -> JSON-safe Python values (NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        if math.isnan(f) or math.isinf(f):
            return None
        return int(f) if f.is_integer() and abs(f) < 2**53 else f
    if value is None or isinstance(value, (str, int)):
        return value
    return str(value)


@dataclass
class SplitResult:
    split: str
    rows: int
    columns: int
    success: bool
    expectations: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    images: Any = field(default=None, repr=False)   # (N, 784) pixels for the examples grid; not in the report

    def to_dict(self) -> dict[str, Any]:
        return {"success": self.success, "rows": self.rows, "columns": self.columns,
                "expectations_total": len(self.expectations),
                "expectations_failed": sum(not e["success"] for e in self.expectations),
                "summary": self.summary, "failures": self.failures, "warnings": self.warnings,
                "expectations": self.expectations}


EXAMPLES_GRID = "near_duplicates.png"


def near_duplicates_of(report: Any, split: str = "test") -> dict | None:
    """The near-duplicate measurement of `split` in a gate report (report.json), or None where there is none
    (a report from before the content checks, a skipped check, or a file that is not such a report)."""
    node = report
    for key in ("splits", split, "summary", "content", "near_duplicates"):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def write_examples_grid(test: SplitResult, train: SplitResult, path: Path, max_pairs: int) -> Path | None:
    """A PNG of the closest test/train pairs (test image left, its training neighbour right, RMS difference
    below), exact copies first. Drawn with Pillow: importing matplotlib would dominate the gate's run time."""
    from PIL import Image, ImageDraw

    if test.images is None or train.images is None:
        return None
    near = [e for e in test.expectations if e["name"] in ("test_in_train", "near_duplicates")]
    pairs = []
    for e in near:
        for ex in e.get("examples") or []:
            pairs.append((ex["row"], ex["train_row"], ex.get("rms", 0.0)))
    if not pairs:   # nothing over a limit: show the closest pairs anyway, so the figure is always there
        closest = test.summary.get("content", {}).get("near_duplicates", {}).get("closest_pairs", [])
        pairs = [(p["row"], p["train_row"], p["rms"]) for p in closest]
    pairs = sorted(dict.fromkeys(pairs), key=lambda p: p[2])[:max(max_pairs, 8)]
    scale, pad, label = 3, 6, 14
    cell = 28 * scale
    width = 2 * cell + 3 * pad
    canvas = Image.new("L", (max(width * max(len(pairs), 1), 200), cell + 2 * pad + label + 16), 255)
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 2), "test | nearest training image (RMS pixel difference)" if pairs else
              "no test image lies within the near-duplicate distance of a training image", fill=0)
    for i, (t_row, tr_row, rms) in enumerate(pairs):
        x0 = i * width + pad
        for j, img in enumerate((test.images[t_row], train.images[tr_row])):
            tile = Image.fromarray(img.reshape(IMAGE_SIDE, IMAGE_SIDE)).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (x0 + j * (cell + pad), 16 + pad))
        draw.text((x0, 16 + pad + cell + 2), f"t{t_row}/tr{tr_row} {rms:.3f}", fill=0)
    with io.atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path


def render_summary_html(report: dict[str, Any]) -> str:
    """A small self-contained HTML page of the report (GX's Data Docs load their CSS/JS from CDNs,
    so offline they render unstyled; this page needs nothing from the network)."""
    from html import escape

    verdict = "PASSED" if report["success"] else "FAILED"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Fashion-MNIST validation</title><style>",
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
        ".ok{color:#1a7f37}.bad{color:#cf222e;font-weight:bold}code{font-size:90%}",
        "</style></head><body>",
        f"<h1>Fashion-MNIST validation: <span class='{'ok' if report['success'] else 'bad'}'>{verdict}</span></h1>",
        f"<p>Great Expectations {escape(str(report['great_expectations']))}. Full GX Data Docs: "
        "<a href='index.html'>index.html</a>. Rows are 0-based positions in the Parquet file.</p>",
    ]
    if report["failures"]:
        parts.append("<ul>" + "".join(f"<li class='bad'>{escape(m)}</li>" for m in report["failures"]) + "</ul>")
    if report.get("warnings"):
        parts.append("<ul>" + "".join(f"<li>warning: {escape(m)}</li>" for m in report["warnings"]) + "</ul>")
    near = near_duplicates_of(report)
    if near:
        parts.append(f"<h2>Train/test near-duplicates</h2><p>{near['count']} test images "
                     f"({100 * near['share']:.2f}%) have a training image within RMS pixel difference "
                     f"{near['max_rms']:g} ({escape(near['method'])}).</p>"
                     f"<img src='{EXAMPLES_GRID}' alt='closest test/train pairs' style='max-width:100%'>")
    for split, res in report["splits"].items():
        passed = res["expectations_total"] - res["expectations_failed"]
        parts.append(f"<h2>{escape(split)}: {res['rows']} rows x {res['columns']} columns, "
                     f"{passed}/{res['expectations_total']} passed</h2>")
        parts.append("<table><tr><th>check</th><th>expectation</th><th>frame</th><th>result</th>"
                     "<th>observed</th><th>examples</th></tr>")
        for e in res["expectations"]:
            cls, word = ("ok", "pass") if e["success"] else ("bad", "FAIL")
            parts.append(
                f"<tr><td>{escape(e['name'])}<br><small>{escape(e.get('description') or '')}</small></td>"
                f"<td><code>{escape(e['expectation'])}</code><br><small>{escape(json.dumps(e['kwargs']))}</small></td>"
                f"<td>{escape(e['frame'])}</td><td class='{cls}'>{word}</td>"
                f"<td><code>{escape(json.dumps(e['observed']))}</code></td>"
                f"<td><code>{escape(json.dumps(e['examples']))}</code></td></tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def make_report(results: Mapping[str, SplitResult]) -> dict[str, Any]:
    import great_expectations as gx

    failures = [msg for r in results.values() for msg in r.failures]
    return {
        "success": all(r.success for r in results.values()),
        "failed_expectations": sum(not e["success"] and e["severity"] != "warning"
                                   for r in results.values() for e in r.expectations),
        "great_expectations": gx.__version__,
        "failures": failures,
        "warnings": [msg for r in results.values() for msg in r.warnings],
        "splits": {split: r.to_dict() for split, r in results.items()},
    }
